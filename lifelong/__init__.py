"""lifelong: distributed continual-learning sweeps tracked in MLflow.

The Python API beside the ``lifelong`` command line:

- :func:`run` runs an experiment file (or a parsed
  :class:`~lifelong.platform.spec.Experiment`) and returns its
  :class:`~lifelong.platform.runner.Results` (per-trial accuracy matrices,
  final metrics, MLflow run ids, ``to_pandas()``); ``in_process=True`` runs the
  trials in this process without Ray, for debugging a strategy under ``pdb``.
- :func:`compare` reads trials back from MLflow and returns the ranked
  comparison ``lifelong compare`` prints, as a :class:`pandas.DataFrame`.
- ``__version__``: the installed version.

Importing this package is cheap: the heavy modules load on first use.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from pathlib import Path as _Path
from typing import TYPE_CHECKING, Any

# In a source checkout (``pip install -e .``) the sub-packages are the repository's
# top-level folders, mapped in by setuptools; ``lifelong.platform`` among them is a
# namespace package (no __init__.py: see DESIGN.md), which Python finds only through
# this package's __path__. An installed wheel has them inside this folder instead.
_ROOT = _Path(__file__).resolve().parent.parent
if (_ROOT / "platform" / "spec.py").is_file() and str(_ROOT) not in __path__:
    __path__.append(str(_ROOT))

if TYPE_CHECKING:
    import pandas as pd

    from lifelong.platform.runner import Results

try:
    __version__ = _metadata.version("lifelong")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__", "compare", "run"]


def run(
    experiment: str | _Path | Any,
    *,
    overrides: list[str] | dict[str, Any] | None = None,
    in_process: bool = False,
    raise_errors: bool = False,
    tracking_uri: str | None = None,
    experiment_name: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    storage: str | None = None,
    **dotted: Any,
) -> Results:
    """Run an experiment as ``lifelong run`` does and return its results.

    Args:
        experiment: an experiment file's path, or an :class:`Experiment`.
        overrides: ``["training.lr=0.1"]`` or ``{"training.lr": 0.1}``; keyword
            arguments add more, ``__`` standing for the dot: ``training__lr=0.1``.
        in_process: train the trials one after another here, without Ray.
        raise_errors: in process, let a trial's exception propagate (for ``pdb``).
        tracking_uri: MLflow tracking URI (default as ``lifelong run``).
        experiment_name: MLflow experiment name (default: the file's).
        address: a Ray cluster to join (default: start a local instance).
        num_cpus: CPUs of the local Ray instance.
        storage: where trials keep checkpoints.
        **dotted: more overrides, ``__`` for the dot (``training__lr=0.1``).

    Raises:
        lifelong.platform.spec.SpecError: the file or an override is invalid.
    """
    import json
    from pathlib import Path

    from lifelong.platform.runner import execute
    from lifelong.platform.spec import Experiment, load_experiment

    pairs = list(overrides) if isinstance(overrides, list) else []
    given = dict(overrides) if isinstance(overrides, dict) else {}
    given |= {k.replace("__", "."): v for k, v in dotted.items()}
    pairs += [f"{k}={json.dumps(v)}" for k, v in given.items()]
    if isinstance(experiment, Experiment):
        if pairs:
            raise TypeError("overrides apply to an experiment file; edit the Experiment instead")
        parsed = experiment
    else:
        parsed = load_experiment(Path(experiment), pairs)
    return execute(
        parsed,
        address=address,
        tracking_uri=tracking_uri,
        experiment_name=experiment_name,
        num_cpus=num_cpus,
        storage=storage,
        in_process=in_process,
        raise_errors=raise_errors,
    )


def compare(
    *names: str,
    tracking_uri: str | None = None,
    metric: str = "acc/avg",
    alpha: float = 0.05,
    phase: str | None = None,
) -> pd.DataFrame:
    """The ranked comparison of ``lifelong compare NAME...`` as a DataFrame.

    One row per configuration (rank order): ``rank``, ``strategy``, ``n_finished``,
    ``seeds``, ``config_digest``, then ``<metric>:mean``, ``<metric>:std``,
    ``<metric>:best`` and ``<metric>:p_vs_best`` per summary metric. The
    frame's ``attrs`` hold ``differing_keys`` and ``notes`` (repeats, settings).
    ``phase``: ``"test"`` or ``"tune"`` to keep only that phase of a tuned sweep.

    Raises:
        lifelong.platform.compare.CompareError: a name matches nothing.
    """
    from lifelong.platform.compare import comparison_frame

    return comparison_frame(
        list(names), tracking_uri=tracking_uri, metric=metric, alpha=alpha, phase=phase
    )
