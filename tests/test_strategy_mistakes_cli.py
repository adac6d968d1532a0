"""The strategy mistakes that used to go unnoticed, through ``lifelong run``.

A misspelled ``state_dict``, ``load_state_dict`` or ``metrics`` and a
``loss_terms`` without its batch argument stop the command with exit 2 before
Ray starts, naming the plugin file and line. A state that
``torch.load(weights_only=True)`` could not read fails its trial at the first
checkpoint, naming the strategy, key and type; a loss term that is not a 0-dim
tensor fails its trial naming the strategy and the term. The other trials of the
sweep finish.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_plugin_errors import STREAM, _restore_registry, line_of, run_bad, write

from conftest import run_sweep_with_failures

__all__ = ["_restore_registry"]  # the autouse fixture, shared with test_plugin_errors

MISSPELLED = '''
"""A strategy with one mistake: {what}."""

from lifelong.strategies import Strategy, register_strategy


@register_strategy("mistake")
class Mistake(Strategy):
    """Would have lost its state on resume."""

    def {method}:
        """The mistake."""
        return {{}}
'''


@pytest.mark.parametrize(
    ("method", "said"),
    [
        ("state_dicts(self)", "did you mean 'state_dict'?"),
        ("load_state(self, state)", "did you mean 'load_state_dict'?"),
        ("metric(self)", "did you mean 'metrics'?"),
        ("loss_terms(self, ctx)", "takes 2 positional"),
    ],
    ids=["state_dicts", "load_state", "metric", "loss_terms-signature"],
)
def test_a_misspelled_method_or_wrong_signature_exits_2_before_ray(
    in_tmp: Path, method: str, said: str
) -> None:
    plugin = write(in_tmp, "mistake.py", MISSPELLED.format(what=method, method=method))
    msg = run_bad(in_tmp, f"plugins: [{plugin.name}]\nstrategies: [mistake]\n" + STREAM)
    name = method.split("(")[0]
    assert f"exp.yaml:1: plugins[0]: {plugin}:{line_of(plugin, 'class Mistake')}: " in msg
    assert f"Mistake.{name} (defined at {plugin}:{line_of(plugin, 'def ')})" in msg
    assert said in msg


RUNTIME = '''
"""Strategies whose mistakes show only while a trial runs."""

import numpy as np

from lifelong.strategies import Strategy, register_strategy


@register_strategy("numpy_state")
class NumpyState(Strategy):
    """Keeps a numpy array in its state."""

    def state_dict(self):
        """Not loadable with weights_only=True."""
        return {"fisher": {"w": np.zeros(3)}}

    def load_state_dict(self, state):
        """Never reached."""


@register_strategy("vector_term")
class VectorTerm(Strategy):
    """Returns a per-class vector as a loss term."""

    def loss_terms(self, ctx, batch):
        """Not 0-dim."""
        return {"vec": batch.logits.mean(0)}


@register_strategy("float_term")
class FloatTerm(Strategy):
    """Returns a Python float as a loss term."""

    def loss_terms(self, ctx, batch):
        """Not a tensor."""
        return {"half": 0.5}
'''


def test_unloadable_state_and_bad_loss_terms_fail_their_trials_with_named_errors(
    ray_instance: str, in_tmp: Path
) -> None:
    plugin = write(in_tmp, "runtime_mistakes.py", RUNTIME)
    spec = yaml.safe_load(STREAM)
    spec |= {
        "name": "mistakes",
        "plugins": [plugin.name],
        "training": {"epochs": 1, "batch_size": 64},
        "strategies": ["naive", "numpy_state", "vector_term", "float_term"],
    }
    _, runs = run_sweep_with_failures(in_tmp, spec)
    assert runs["naive"].info.status == "FINISHED"
    errors = {}
    for name in ("numpy_state", "vector_term", "float_term"):
        assert runs[name].info.status == "FAILED", name
        errors[name] = runs[name].data.tags["lifelong.error"]
    state = errors["numpy_state"]
    assert state.startswith("TypeError: "), state
    assert "'numpy_state'" in state and "['fisher']['w']" in state and "numpy.ndarray" in state
    assert "Check the documentation of torch.load" not in state
    for name, term, what in (("vector_term", "vec", "(4,)"), ("float_term", "half", "0.5")):
        text = errors[name]
        assert text.startswith("TypeError: "), text
        assert f"strategy '{name}'" in text and f"term '{term}'" in text, text
        assert what in text and "0-dim" in text, text
