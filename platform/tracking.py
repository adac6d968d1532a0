"""Driver-side MLflow tracking: one parent run per sweep, one child run per trial.

Only the driver writes to MLflow, so a trial's metrics are logged exactly once
per (metric, step), also when the trial was retried and reported a step again.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from mlflow.entities import Metric, Param

from lifelong.platform import metrics, provenance
from lifelong.platform.expand import resolved_sections, scenario_key
from lifelong.platform.mlflow_io import ResilientClient
from lifelong.platform.partial_metrics import partial_summary
from lifelong.platform.plots import accuracy_matrix_csv, accuracy_matrix_heatmap
from lifelong.platform.spec import Experiment, TrialSpec
from lifelong.platform.stream_dataset import StreamDataset
from lifelong.scenarios.stream import LazyExperiences, Stream

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
NO_STORE_HINT = "run `lifelong run` in this directory first, or pass --tracking-uri"
_MAX_PARAM = 6000  # MLflow's limit on a param value's length


def resolve_tracking_uri(uri: str | None) -> str:
    """``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else the SQLite store in the cwd.

    A relative SQLite path is made absolute: MLflow caches one store per URI for the
    life of the process, and a relative one would keep pointing into the directory
    where it was first opened.
    """
    return absolute_sqlite(uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)


def missing_store(uri: str) -> Path | None:
    """The file of a SQLite tracking store that does not exist yet (None: it exists or is no file).

    ``compare``, which only reads, checks it first: opening the
    URI would create an empty store, and hide a mistyped directory or URI.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or ":memory:" in uri:
        return None
    path = Path(uri[len(prefix) :].partition("?")[0])
    return None if path.exists() else path


def absolute_sqlite(uri: str) -> str:
    """``sqlite:///rel/path.db`` as ``sqlite:////abs/rel/path.db``; other URIs unchanged."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.startswith(prefix + "/") or ":memory:" in uri:
        return uri
    path, sep, query = uri[len(prefix) :].partition("?")
    return prefix + str(Path(path).resolve()) + sep + query


@dataclass
class TrialOutcome:
    """What the driver knows about one trial: its status, R and final metrics."""

    trial: TrialSpec
    run_id: str
    status: str = "RUNNING"
    R: np.ndarray | None = None
    untrained: np.ndarray | None = None
    final: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    logged_steps: set[int] = field(default_factory=set)
    logged_keys: set[str] = field(default_factory=set)
    restarts: int = 0
    node_id: str | None = None


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Flatten nested config into MLflow params: ``{"training.lr": "0.01", ...}``."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return {prefix: text[:_MAX_PARAM]}


class SweepTracker:
    """Logs a sweep to MLflow through :class:`MlflowClient` (explicit run IDs, thread-safe).

    Args:
        experiment: the validated experiment being run.
        tracking_uri: MLflow tracking URI (see :func:`resolve_tracking_uri`).
        experiment_name: MLflow experiment name; default ``experiment.name``.
        phase: ``tune`` or ``test`` in a tuned sweep (tag ``lifelong.phase``).
        split: the stream's ``scenario.split`` param (a validation stream, or the
            test stream left after ``first_k``); ``None`` for the plain stream.
    """

    def __init__(
        self,
        experiment: Experiment,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        *,
        phase: str | None = None,
        split: str | None = None,
    ) -> None:
        self.experiment = experiment
        self.phase = phase
        self.split = split
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.client = ResilientClient(self.tracking_uri, sweep=experiment_name or experiment.name)
        self.experiment_name = experiment_name or experiment.name
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        # The second and a short random suffix: two sweeps started at once differ.
        self.sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        self.outcomes: dict[str, TrialOutcome] = {}
        # plugin files changed since the sweep started (--resume --allow-changed-plugins)
        self.plugin_changes: dict[str, tuple[str, str]] = {}
        self._provenance: tuple[dict[str, str], dict[str, str]] | None = None
        # {trial id: its FAILED run} of the trials run again (lifelong run --retry-failed)
        self.retry_of: dict[str, str] = {}
        # the stream(s) the trials learn: each child run logs its stream as a dataset input
        self.streams: Stream | dict[str, Stream] | None = None
        self._datasets: dict[str, dict[str, str]] = {}
        # lifelong run --log-model: each finished trial's final weights become artifacts
        self.log_model = False

    # ------------------------------------------------------------------ sweep
    def start(self) -> str:
        """Create (or reuse) the MLflow experiment and open the sweep's parent run."""
        exp = self.client.get_experiment_by_name(self.experiment_name)
        self.experiment_id = (
            exp.experiment_id
            if exp is not None
            else self.client.create_experiment(self.experiment_name)
        )
        spec = self.experiment.spec
        tags = {
            "sweep": self.sweep_id,
            "lifelong.role": "sweep",
            "scenario": _scenario_tag(spec.scenario.model_dump(mode="json")),
        }
        if self.phase:
            tags["lifelong.phase"] = self.phase
        prefix = "tune" if self.phase == "tune" else "sweep"
        run = self.client.create_run(
            self.experiment_id, run_name=f"{prefix}-{self.sweep_id}", tags=tags
        )
        self.parent_run_id = run.info.run_id
        params = self._common_params()
        params["strategies"] = json.dumps(self.experiment.labels())
        params["seeds"] = json.dumps(spec.seeds)
        if spec.num_samples > 1:
            params["num_samples"] = str(spec.num_samples)
        self._log_params(self.parent_run_id, params)
        config = spec.model_dump(mode="json") | resolved_sections(self.experiment)
        config["strategies"] = self.experiment.raw.get("strategies", config["strategies"])
        self._log_text(
            self.parent_run_id, yaml.safe_dump(config, sort_keys=False), "experiment.yaml"
        )
        return self.parent_run_id

    def reopen(self, parent_run_id: str) -> str:
        """Continue the sweep whose parent run is ``parent_run_id`` (``lifelong run --resume``).

        Reads the trials' child runs back from MLflow: a finished run keeps its
        status and final metrics (and R, rebuilt from its ``acc/exp_<j>`` history);
        for every run the steps already logged are remembered, so a resumed trial
        that reports them again logs nothing twice.
        """
        parent = self.client.get_run(parent_run_id)
        self.experiment_id = parent.info.experiment_id
        self.parent_run_id = parent_run_id
        self.sweep_id = parent.data.tags.get("sweep", self.sweep_id)
        self.client.update_run(parent_run_id, status="RUNNING")
        trials = {t.trial_id: t for t in self.experiment.trials()}
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
            max_results=50000,
        )
        for run in runs:
            trial = trials.get(run.info.run_name or "")
            if trial is None or "lifelong.retried_by" in run.data.tags:  # its retry counts
                continue
            outcome = TrialOutcome(trial, run.info.run_id, status=run.info.status)
            outcome.node_id = run.data.tags.get("node_id")
            outcome.error = run.data.tags.get("lifelong.error")
            history = self.client.get_metric_history(run.info.run_id, "acc/avg")
            outcome.logged_steps = {m.step for m in history}
            outcome.logged_keys = set(run.data.metrics)
            outcome.restarts = int(run.data.tags.get("lifelong.restarts", 0))
            if run.info.status == "FINISHED":
                outcome.final = dict(run.data.metrics)
                outcome.R = self._logged_matrix(run.info.run_id, run.data.metrics)
            self.outcomes[trial.trial_id] = outcome
        return parent_run_id

    def _logged_matrix(self, run_id: str, latest: dict[str, float]) -> np.ndarray:
        """R as logged: ``R[i, j]`` = ``acc/exp_<j>`` at step ``i``."""
        cols = sorted(int(k.split("_")[-1]) for k in latest if k.startswith("acc/exp_"))
        R = np.full((len(cols), len(cols)), np.nan)
        for j in cols:
            for m in self.client.get_metric_history(run_id, f"acc/exp_{j}"):
                if 0 <= m.step < len(cols):
                    R[m.step, j] = m.value
        return R

    def finish(self, status: str = "FINISHED") -> None:
        """Log the sweep's summary to the parent run, then close it with ``status``.

        ``status`` is FINISHED, FAILED or KILLED; the summary (tables and figures,
        see :func:`lifelong.platform.summary.log_sweep_summary`) counts finished trials.
        """
        if self.parent_run_id is not None:
            from lifelong.platform.summary import log_sweep_summary

            log_sweep_summary(self.client, self.parent_run_id, list(self.outcomes.values()))
            self.client.set_terminated(self.parent_run_id, status=status)

    def abort(self, reason: str) -> None:
        """Mark every unfinished trial run and the parent run KILLED."""
        for o in self.outcomes.values():
            if o.status == "RUNNING":
                o.status = "KILLED"
                o.error = reason
                self.client.set_tag(o.run_id, "lifelong.error", reason)
                self.client.set_terminated(o.run_id, status="KILLED")
        self.finish("KILLED")

    # ----------------------------------------------------------------- trials
    def trial_started(self, trial: TrialSpec) -> TrialOutcome:
        """Open the child run of ``trial`` (once; a retried trial keeps its run)."""
        if trial.trial_id in self.outcomes:
            outcome = self.outcomes[trial.trial_id]
            if outcome.status != "FINISHED":  # a finished run read back by reopen() stays so
                outcome.status = "RUNNING"
                self.client.update_run(outcome.run_id, status="RUNNING")
                if outcome.error is not None:  # why it stopped before: no longer true
                    outcome.error = None
                    self.client.delete_tag(outcome.run_id, "lifelong.error")
                if self.plugin_changes:
                    self._log_provenance(outcome.run_id)
                    self.client.set_tag(
                        outcome.run_id,
                        provenance.TAG_CHANGED,
                        provenance.describe_changes(self.plugin_changes)[:5000],
                    )
            return outcome
        assert self.parent_run_id is not None and self.experiment_id is not None
        scenario = trial.scenario or self.experiment.spec.scenario.model_dump(mode="json")
        tags = {
            "mlflow.parentRunId": self.parent_run_id,
            "sweep": self.sweep_id,
            "strategy": trial.label,
            "seed": str(trial.seed),
            "scenario": _scenario_tag(scenario),
            "lifelong.role": "trial",
            "lifelong.strategy_base": trial.base_label or trial.label,
        }
        if self.phase:
            tags["lifelong.phase"] = self.phase
        if trial.varied:
            tags["lifelong.varied"] = json.dumps(dict(trial.varied), default=str)[:_MAX_PARAM]
        tags |= self._provenance_of()[0]
        if trial.trial_id in self.retry_of:
            tags["lifelong.retry_of"] = self.retry_of[trial.trial_id]
        run = self.client.create_run(self.experiment_id, run_name=trial.trial_id, tags=tags)
        if trial.trial_id in self.retry_of:
            self.client.set_tag(
                self.retry_of[trial.trial_id], "lifelong.retried_by", run.info.run_id
            )
        for name, text in self._provenance_of()[1].items():
            self._log_text(run.info.run_id, text, name)
        if (dataset := self._dataset_of(scenario)) is not None:
            self.client.log_input(run.info.run_id, dataset, context="training")
        params = self._common_params(trial)
        if self.split:
            params["scenario.split"] = self.split
        params["seed"] = str(trial.seed)
        params["strategy"] = trial.label
        params["strategies"] = json.dumps([s.name for s in trial.strategies])
        for s in trial.strategies:
            params.update(flatten(f"strategy.{s.name}", s.params))
        self._log_params(run.info.run_id, params)
        outcome = TrialOutcome(trial, run.info.run_id)
        self.outcomes[trial.trial_id] = outcome
        return outcome

    def _stream_of(self, scenario: dict[str, Any]) -> Stream | None:
        """The stream a trial with this resolved ``scenario`` learns (None: none was given)."""
        if isinstance(self.streams, dict):
            return self.streams[scenario_key(scenario)]
        return self.streams

    def _dataset_of(self, scenario: dict[str, Any]) -> dict[str, str] | None:
        """The trial's stream as an MLflow dataset entity's fields (None: no stream known)."""
        if self.streams is None:
            return None
        key = scenario_key(scenario) if isinstance(self.streams, dict) else ""
        if key not in self._datasets:
            stream = self._stream_of(scenario)
            entity = StreamDataset(stream, scenario)._to_mlflow_entity()
            self._datasets[key] = {
                "name": entity.name,
                "digest": entity.digest,
                "source_type": entity.source_type,
                "source": entity.source,
                "profile": entity.profile or "",
            }
        return self._datasets[key]

    def trial_result(
        self,
        trial_id: str,
        step: int,
        values: Mapping[str, float] | np.ndarray,
        losses: dict[str, float],
        extra: dict[str, float] | None = None,
        node_id: str | None = None,
        *,
        anytime: Sequence[Sequence[float]] = (),
        system: Mapping[str, float] | None = None,
    ) -> None:
        """Log the metrics of experience ``step``; a step already logged is skipped.

        ``system``: the trial machine's system metrics since the last step
        (:mod:`lifelong.cluster.system_metrics`), logged as ``system/<name>``.

        ``anytime``: ``(samples seen, accuracy)`` points taken while the experience
        trained (``training.anytime_every``), logged as ``anytime/acc`` with the
        samples seen as the MLflow step.

        ``values``: the step's metrics (``cluster.trial.step_values``), or the
        accuracy matrix (rows ``0..step`` filled) to compute them from.
        ``node_id``: the Ray node that ran the step, kept as the run's ``node_id`` tag.

        ``extra`` holds strategies' diagnostics (``<strategy>/<key>``), logged as given.
        """
        outcome = self.outcomes[trial_id]
        if node_id and node_id != outcome.node_id:
            outcome.node_id = node_id
            self.client.set_tag(outcome.run_id, "node_id", node_id)
        if step in outcome.logged_steps:
            return
        values = (
            metrics.step_metrics(values, step) if isinstance(values, np.ndarray) else dict(values)
        )
        values.update({f"loss/{k}": v for k, v in losses.items()})
        values.update(extra or {})
        values.update({f"system/{k}": v for k, v in (system or {}).items()})
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in values.items()]
        batch += [Metric("anytime/acc", float(acc), now, int(seen)) for seen, acc in anytime]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(outcome.run_id, metrics=batch[i : i + 1000])
        outcome.logged_steps.add(step)

    def trial_finished(
        self,
        trial_id: str,
        R: np.ndarray,
        untrained: np.ndarray,
        fresh: np.ndarray | None = None,
        partial: str | None = None,
    ) -> None:
        """Log final metrics (``fwt`` included) and the matrix artifacts; end FINISHED.

        ``fresh``: per-experience accuracies of freshly initialised models (the
        plasticity reference), when the trial measured them. ``partial``: how the
        matrix was evaluated when not in full (``training.eval_every`` /
        ``eval_on``); the metrics then follow :mod:`lifelong.platform.partial_metrics`
        and the run is tagged ``lifelong.partial_R``.
        """
        outcome = self.outcomes[trial_id]
        outcome.R, outcome.untrained = R, untrained
        if partial:
            outcome.final = partial_summary(R, untrained)
            self.client.set_tag(outcome.run_id, "lifelong.partial_R", partial)
        else:
            outcome.final = metrics.summary(R, untrained)
        if fresh is not None and np.isfinite(fresh).all():
            outcome.final["plasticity/fresh_avg"] = float(np.mean(fresh))
        last = R.shape[0] - 1
        now = int(time.time() * 1000)
        extra = {
            k: v for k, v in outcome.final.items() if k not in ("acc/avg", "bwt", "forgetting/avg")
        }
        if not extra.keys() & outcome.logged_keys:  # a driver killed after this batch: once
            self.client.log_batch(
                outcome.run_id, metrics=[Metric(k, float(v), now, last) for k, v in extra.items()]
            )
        with tempfile.TemporaryDirectory() as d:
            npz = Path(d) / "accuracy_matrix.npz"  # the whole matrix, compressed, nan kept
            np.savez_compressed(npz, R=R, untrained=untrained)
            self.client.log_artifact(outcome.run_id, str(npz))
            csv = accuracy_matrix_csv(R, Path(d) / "accuracy_matrix.csv", untrained=untrained)
            png = accuracy_matrix_heatmap(
                R,
                Path(d) / "accuracy_matrix.png",
                untrained=untrained,
                title=f"{outcome.trial.label}, seed {outcome.trial.seed}",
            )
            self.client.log_artifact(outcome.run_id, str(csv))
            self.client.log_artifact(outcome.run_id, str(png))
        outcome.status = "FINISHED"
        self.client.set_terminated(outcome.run_id, status="FINISHED")

    def log_final_model(self, trial_id: str, weights: Mapping[str, Any]) -> None:
        """Log the trial's final weights as ``model/state_dict.pt`` and ``model/model.json``.

        ``state_dict.pt`` loads with ``torch.load(..., weights_only=True)`` into the
        model that ``model.json``'s ``model`` and ``scenario`` sections build
        (:func:`lifelong.platform.models.build_model`); the run is tagged
        ``lifelong.model``.
        """
        import torch

        outcome = self.outcomes[trial_id]
        trial = outcome.trial
        about = {
            "model": trial.model or self.experiment.spec.model.model_dump(mode="json"),
            "scenario": trial.scenario or self.experiment.spec.scenario.model_dump(mode="json"),
            "strategy": trial.label,
            "seed": trial.seed,
            "load": "torch.load('state_dict.pt', weights_only=True)",
        }
        if (stream := self._stream_of(about["scenario"])) is not None:  # for build_model
            about |= {"input_shape": list(stream.input_shape), "n_classes": stream.n_classes}
            if not isinstance(stream.experiences, LazyExperiences):  # not read again for it
                about["task_classes"] = [list(c) for c in stream.task_classes]
        with tempfile.TemporaryDirectory() as d:
            torch.save(dict(weights), Path(d) / "state_dict.pt")
            (Path(d) / "model.json").write_text(json.dumps(about, indent=2, default=str))
            for name in ("state_dict.pt", "model.json"):
                self.client.log_artifact(outcome.run_id, str(Path(d) / name), "model")
        self.client.set_tag(outcome.run_id, "lifelong.model", "model/state_dict.pt")

    def trial_stopped(self, trial_id: str, reason: str) -> None:
        """End the run KILLED: a scheduler or the time budget stopped the trial early.

        Its metrics up to the last reported experience stay; the tag
        ``lifelong.early_stopped`` holds ``reason``. The outcome's status is
        ``STOPPED`` (counted apart from failures).
        """
        outcome = self.outcomes[trial_id]
        outcome.status = "STOPPED"
        outcome.error = reason
        self.client.set_tag(outcome.run_id, "lifelong.early_stopped", reason[:5000])
        self.client.set_terminated(outcome.run_id, status="KILLED")

    def trial_restarted(self, trial_id: str, reason: str) -> int:
        """Record that the trial failed and Tune restarts it (``max_failures``).

        The run counts them in the tag ``lifelong.restarts`` and keeps each reason
        as ``lifelong.restart_<n>``; returns the count.
        """
        outcome = self.outcomes[trial_id]
        outcome.restarts += 1
        n = outcome.restarts
        self.client.set_tag(outcome.run_id, f"lifelong.restart_{n}", reason[:5000])
        self.client.set_tag(outcome.run_id, "lifelong.restarts", str(n))
        return n

    def trial_failed(self, trial_id: str, reason: str, traceback: str | None = None) -> None:
        """End the trial's run FAILED with ``reason`` as a tag and a text artifact.

        ``traceback``: the full one, kept as the run's ``traceback.txt`` artifact.
        """
        outcome = self.outcomes[trial_id]
        outcome.status = "FAILED"
        outcome.error = reason
        self.client.set_tag(outcome.run_id, "lifelong.error", reason[:5000])
        self._log_text(outcome.run_id, reason, "error.txt")
        if traceback:
            self._log_text(outcome.run_id, traceback, "traceback.txt")
        self.client.set_terminated(outcome.run_id, status="FAILED")

    def tag_trial(self, trial_id: str, key: str, value: str) -> None:
        """Set tag ``key`` on the trial's child run."""
        self.client.set_tag(self.outcomes[trial_id].run_id, key, value[:5000])

    # ---------------------------------------------------------------- helpers
    def _provenance_of(self) -> tuple[dict[str, str], dict[str, str]]:
        """The plugins' tags and sources (:mod:`lifelong.platform.provenance`), read once."""
        if self._provenance is None:
            refs = self.experiment.plugins
            self._provenance = (provenance.tags(refs), provenance.sources(refs))
        return self._provenance

    def _log_provenance(self, run_id: str) -> None:
        """Set the plugins' tags and upload their sources to ``run_id`` (again)."""
        tags, sources = self._provenance_of()
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)
        for name, text in sources.items():
            self._log_text(run_id, text, name)

    def _common_params(self, trial: TrialSpec | None = None) -> dict[str, str]:
        """The sections as params: the trial's own (search values filled in), else the sweep's.

        A sweep's parent run shows each searched field as its space (JSON).
        """
        spec = self.experiment.spec
        sections = resolved_sections(self.experiment)
        if trial is not None:
            sections = {
                "scenario": trial.scenario or sections["scenario"],
                "model": trial.model or sections["model"],
                "training": trial.training or sections["training"],
            }
        params: dict[str, str] = {}
        for name, data in sections.items():
            params.update(flatten(name, data))
        params.update(flatten("resources", spec.resources.model_dump(mode="json")))
        return params

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def _log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)


def _scenario_tag(scenario: dict[str, Any]) -> str:
    """The ``scenario`` tag: ``source/protocol``, or the source alone for a text stream.

    A source that brings its own experiences (avalanche, text_tasks) may leave the
    protocol out of a trial's section; a text stream has no classes to cut, so its
    protocol would say nothing.
    """
    protocol = scenario.get("protocol")
    if scenario.get("source") == "text_tasks" or not protocol:
        return str(scenario["source"])
    return f"{scenario['source']}/{protocol}"
