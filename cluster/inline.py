"""Trials in this process, one after another, without Ray: for debugging a strategy.

``lifelong run exp.yaml --in-process`` (or ``lifelong.run(..., in_process=True)``)
trains every trial here, in order, with the same learner, checkpoints aside,
and logs to MLflow exactly as a Ray sweep does (one parent run, one child run
per trial, the same metrics and artifacts), so a ``breakpoint()`` in a
strategy's hook stops in your terminal and ``python -m pdb`` can step through
it. A failing trial ends FAILED with its reason, as under Ray; with
``raise_errors`` the exception propagates instead (for ``pdb``'s post-mortem).
"""

from __future__ import annotations

import traceback

import torch

from lifelong.cluster.system_metrics import SystemSampler
from lifelong.platform.expand import scenario_key
from lifelong.platform.hook_errors import reason
from lifelong.platform.partial_metrics import partial_description
from lifelong.platform.shared_reference import discard_reference, reference_dir
from lifelong.platform.spec import Experiment
from lifelong.platform.tracking import SweepTracker, TrialOutcome
from lifelong.scenarios.stream import Stream

from .trial import build_learner, experience_result


def run_in_process(
    experiment: Experiment,
    stream: Stream | dict[str, Stream],
    tracker: SweepTracker,
    *,
    raise_errors: bool = False,
) -> list[TrialOutcome]:
    """Train and log every trial of ``experiment`` in this process; outcomes in file order.

    Torch uses ``resources.cpu`` threads meanwhile, as a Ray trial does: another
    thread count sums in another order, and the accuracy matrices would differ
    from the sweep's in the last digits.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(experiment.spec.resources.cpu)))
    tracker.streams = stream  # each child run logs its stream as an MLflow dataset input
    try:
        return _run_all(experiment, stream, tracker, raise_errors)
    finally:
        torch.set_num_threads(threads)


def _run_all(
    experiment: Experiment,
    stream: Stream | dict[str, Stream],
    tracker: SweepTracker,
    raise_errors: bool,
) -> list[TrialOutcome]:
    tracker.start()
    trials = experiment.trials()
    status = "FINISHED"
    try:
        for trial in trials:
            data = stream[scenario_key(trial.scenario)] if isinstance(stream, dict) else stream
            tracker.trial_started(trial)
            try:
                shared = str(reference_dir(tracker.sweep_id))
                learner = build_learner({"trial": trial.to_dict(), "reference_cache": shared}, data)
                learner.evaluate_untrained()
                last: dict[str, float] = {}
                with SystemSampler() as machine:
                    for i in range(len(data)):
                        _, losses = learner.run_experience(i)
                        result = experience_result(learner, i, losses, "in-process", last)
                        tracker.trial_result(
                            trial.trial_id,
                            i,
                            result["metrics"],
                            losses,
                            result["strategy_metrics"],
                            anytime=result["anytime"],
                            system=machine.take(),
                        )
            except Exception as e:
                if raise_errors:
                    raise
                text = "".join(traceback.format_exception(e))
                tracker.trial_failed(trial.trial_id, reason(text), text)
                status = "FAILED"
                continue
            fresh = learner.fresh if learner.training.plasticity_baseline else None
            if tracker.log_model:
                tracker.log_final_model(trial.trial_id, learner.model.state_dict())
            tracker.trial_finished(
                trial.trial_id,
                learner.R,
                learner.untrained,
                fresh,
                partial_description(learner.training),
            )
    except BaseException:
        tracker.abort("the in-process sweep was interrupted")
        raise
    tracker.finish(status)
    discard_reference(tracker.sweep_id)
    return [tracker.outcomes[t.trial_id] for t in trials]
