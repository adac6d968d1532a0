"""``lifelong run --retry-failed``: an ended sweep's failed trials run again into new runs.

A strategy fails while the file ``broken`` exists. The sweep ends with it FAILED;
once "fixed" (the file removed), ``--retry-failed`` runs only that trial again,
from scratch, into a new child run of the same parent run, linked both ways by
tags; the finished trial is not run again, and ``lifelong compare`` counts the
retry. A second ``--retry-failed`` has nothing to do.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lifelong.platform.cli import app

from conftest import tiny_experiment

PLUGIN = '''\
"""A strategy that fails while the file 'broken' exists next to this one."""

from pathlib import Path

from lifelong.strategies import Strategy, register_strategy

BROKEN = Path({broken!r})


@register_strategy("flaky")
class Flaky(Strategy):
    """Raises in loss_terms while BROKEN exists."""

    def loss_terms(self, ctx, batch):
        """Nothing to add, or an error."""
        if BROKEN.exists():
            raise RuntimeError("still broken")
        return {{}}
'''


def test_retry_failed_runs_only_the_failed_trial_into_a_new_run(
    ray_instance: str, in_tmp: Path
) -> None:
    broken = in_tmp / "broken"
    broken.touch()
    (in_tmp / "flaky.py").write_text(PLUGIN.format(broken=str(broken)))
    spec = tiny_experiment("retry", ["flaky.py"], ["naive", "flaky"])
    path = in_tmp / "retry.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    uri = f"sqlite:///{in_tmp / 'mlflow.db'}"
    cli = CliRunner()
    result = cli.invoke(app, ["run", str(path), "--retry-failed", "--tracking-uri", uri])
    assert result.exit_code == 2 and "no sweep of this file to retry" in result.output

    result = cli.invoke(app, ["run", str(path), "--tracking-uri", uri])
    assert result.exit_code == 1, result.output
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name("retry").experiment_id

    def trial_runs() -> dict[str, list]:
        runs: dict[str, list] = {}
        for r in client.search_runs([exp_id], filter_string="tags.`lifelong.role` = 'trial'"):
            runs.setdefault(r.data.tags["strategy"], []).append(r)
        return runs

    (naive,), (failed,) = trial_runs()["naive"], trial_runs()["flaky"]
    assert failed.info.status == "FAILED" and "still broken" in failed.data.tags["lifelong.error"]

    broken.unlink()  # the fix
    result = cli.invoke(app, ["run", str(path), "--retry-failed", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    runs = trial_runs()
    assert [r.info.run_id for r in runs["naive"]] == [naive.info.run_id]  # not run again
    assert client.get_run(naive.info.run_id).info.end_time == naive.info.end_time
    old, new = sorted(runs["flaky"], key=lambda r: r.info.start_time)
    assert old.info.run_id == failed.info.run_id and old.info.status == "FAILED"
    assert new.info.status == "FINISHED"
    assert new.data.tags["lifelong.retry_of"] == old.info.run_id
    assert old.data.tags["lifelong.retried_by"] == new.info.run_id
    assert new.data.tags["mlflow.parentRunId"] == naive.data.tags["mlflow.parentRunId"]
    steps = [m.step for m in client.get_metric_history(new.info.run_id, "acc/avg")]
    assert steps == [0, 1]  # from scratch: every experience
    parent = client.get_run(naive.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"

    result = cli.invoke(app, ["compare", "retry", "--tracking-uri", uri, "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "flaky" in result.stdout and "ran 2 times" in result.output

    result = cli.invoke(app, ["run", str(path), "--retry-failed", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert "has no failed trial; nothing to retry" in result.output
    assert len(trial_runs()["flaky"]) == 2
