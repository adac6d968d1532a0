"""The URL ``lifelong ui`` prints opens the per-strategy acc/avg chart in a real browser.

``lifelong ui`` (MLflow's UI on 127.0.0.1) serves a store holding a sweep parent
and its nested trials (tag ``strategy`` naive/ewc, ``acc/avg`` over steps 0-2); a
fresh headless Chromium (Debian's ``/usr/bin/chromium`` through Playwright, as in
``test_browser.py``, and with no preset local storage: the link alone must do it)
opens the URL it printed. The page must show the runs' charts grouped by strategy,
one averaged ``acc/avg`` line per group, and nothing else charted; the parent
run's page must open on the ranked summary table (its description). Screenshots
land in ``.lifelong/test-artifacts/``. Skips as ``test_browser.py`` does when the
browser is missing (a failure under ``CI=true``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from test_browser import CHROMIUM, _need, free_port, wait_healthy

from lifelong.platform.ui_view import SHARED_VIEW_TAG_PREFIX, VIEW_KEY, comparison_view_url

from conftest import ROOT

ARTIFACTS = ROOT / ".lifelong" / "test-artifacts"
BASE = {"naive": 0.5, "ewc": 0.7}
SEEDS = (0, 1)
STEPS = (0, 1, 2)


def acc(strategy: str, seed: int, step: int) -> float:
    """The ``acc/avg`` a trial logs; the seeds differ, so a group's mean is no run's value."""
    return BASE[strategy] + 0.05 * step + 0.02 * seed


def mean_curve(strategy: str) -> tuple[float, ...]:
    """The group's line: the mean over its seeds at each step."""
    return tuple(round(sum(acc(strategy, s, t) for s in SEEDS) / len(SEEDS), 4) for t in STEPS)


PLOT_LINES = """(() => {
  const plot = document.querySelector('.js-plotly-plot');
  if (!plot || !plot.data) return null;
  const lines = plot.data.filter(d => !d.fill && d.y && d.y.length && d.y[0] !== null);
  return lines.length ? lines.map(d => Array.from(d.y)) : null;
})()"""
"""JS: the y values of the one plot's line traces, or null before it is drawn."""


def _store(uri: str, artifacts: Path) -> str:
    """A sweep parent with two trials per strategy nested under it; returns the experiment id."""
    client = MlflowClient(uri)
    exp_id = client.create_experiment("ui-view", artifact_location=artifacts.as_uri())
    parent = client.create_run(exp_id, run_name="sweep-1", tags={"lifelong.role": "sweep"})
    for strategy in BASE:
        for seed in SEEDS:
            tags = {"strategy": strategy, "mlflow.parentRunId": parent.info.run_id}
            run = client.create_run(exp_id, run_name=f"{strategy}-seed{seed}", tags=tags)
            for step in STEPS:
                client.log_metric(run.info.run_id, "acc/avg", acc(strategy, seed, step), step=step)
                client.log_metric(run.info.run_id, "forgetting/avg", 0.1 * step, step=step)
            client.set_terminated(run.info.run_id)
    client.set_terminated(parent.info.run_id)
    return exp_id


def _parent_with_summary(client: MlflowClient, exp_id: str) -> str:
    """Log the sweep summary to the store's parent run (as a sweep's end does); its id."""
    from lifelong.platform.summary import TrialRecord, log_sweep_summary

    (parent,) = client.search_runs([exp_id], "tags.`lifelong.role` = 'sweep'")
    records = [
        TrialRecord(s, seed, "FINISHED", {"acc/avg": acc(s, seed, STEPS[-1])})
        for s in BASE
        for seed in SEEDS
    ]
    log_sweep_summary(client, parent.info.run_id, records, title="ui-view")
    return parent.info.run_id


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, str, MlflowClient, str]]:
    """``lifelong ui`` on 127.0.0.1 over the small store, the URL it printed; stopped after."""
    if not CHROMIUM.exists():
        _need(str(CHROMIUM))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = _store(uri, tmp_path / "artifacts")  # creates the tables before the UI starts
    port = free_port()
    log = tmp_path / "ui.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("lifelong")), "ui", "--tracking-uri", uri]
            + ["--port", str(port)],
            cwd=tmp_path,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with MLflow's workers
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        printed = next(ln for ln in log.read_text().splitlines() if ln.startswith("MLflow UI on "))
        link = printed.removeprefix("MLflow UI on ").split(" (store ")[0]
        yield url, link, MlflowClient(uri), exp_id
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # lifelong ui forwards it and waits for MLflow
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_printed_url_opens_acc_avg_charted_per_strategy(
    server: tuple[str, str, MlflowClient, str],
) -> None:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _need("the playwright package")
    url, link, client, exp_id = server  # link: what `lifelong ui` printed
    assert comparison_view_url(url + "/", client, exp_id) == link
    assert link == (
        f"{url}/#/experiments/{exp_id}/runs?viewStateShareKey={VIEW_KEY}"
        "&compareRunsMode=CHART&workflowType=machine_learning"
    )
    envelope = json.loads(client.get_experiment(exp_id).tags[SHARED_VIEW_TAG_PREFIX + VIEW_KEY])
    assert json.loads(envelope["state"])["groupBy"] == {
        "aggregateFunction": "average",
        "groupByKeys": [{"mode": "tag", "groupByData": "strategy"}],
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            # a fresh profile: no workflow type, panel or view state preset
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.set_default_timeout(30_000)
            page.goto(link)
            # the shared view was found and applied (a bad key shows an error instead);
            # the first load of the bundle can take longer than expect()'s 5 s
            page.get_by_text("You're viewing a shared view").wait_for()
            expect(page.get_by_text("Group by: strategy")).to_be_visible()
            expect(page.get_by_text("Group: naive", exact=True)).to_be_visible()
            expect(page.get_by_text("Group: ewc", exact=True)).to_be_visible()
            expect(page.locator("input[value=CHART]")).to_be_checked()
            # one chart, acc/avg, with one averaged line per strategy, no per-run lines
            expect(page.get_by_role("heading", name="acc/avg", exact=True)).to_be_visible()
            expect(page.get_by_text("naive (acc/avg)", exact=True)).to_be_visible()
            expect(page.get_by_text("ewc (acc/avg)", exact=True)).to_be_visible()
            assert page.get_by_text("naive-seed0 (acc/avg)").count() == 0
            # drawn: the plot's lines (its traces without a min-max band fill) are the
            # groups' mean curves, not one per run
            expect(page.locator(".js-plotly-plot")).to_have_count(1)
            page.wait_for_function(f"() => ({PLOT_LINES}) !== null")
            lines = {tuple(round(y, 4) for y in ys) for ys in page.evaluate(PLOT_LINES)}
            assert lines == {mean_curve("naive"), mean_curve("ewc")}, lines
            assert page.get_by_role("heading", name="forgetting/avg").count() == 0
            assert "workflowType=machine_learning" in page.url
            page.screenshot(path=ARTIFACTS / "mlflow_ui_view_by_strategy.png")

            # the parent run's page opens on its description: the ranked summary table
            parent = _parent_with_summary(client, exp_id)
            page.goto(f"{url}/#/experiments/{exp_id}/runs/{parent}?workflowType=machine_learning")
            table = page.locator("table", has_text="p vs best (acc/avg)").first
            table.wait_for()
            rows = [r.inner_text().split("\t")[:2] for r in table.locator("tbody tr").all()]
            assert [cells[1].strip() for cells in rows] == ["ewc", "naive"], rows
            page.screenshot(path=ARTIFACTS / "mlflow_ui_parent_description.png")
        finally:
            browser.close()
    png = ARTIFACTS / "mlflow_ui_view_by_strategy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lifelong_ui_prints_the_latest_sweeps_per_strategy_view(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _store(uri, tmp_path / "artifacts")
    MlflowClient(uri).create_experiment("empty-later")  # newer, but holds no sweep
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("lifelong")), "ui", "--port", str(port)]
        + ["--tracking-uri", uri],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    exp_id = MlflowClient(uri).get_experiment_by_name("ui-view").experiment_id
    url = f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs?viewStateShareKey={VIEW_KEY}"
    assert first.startswith(f"MLflow UI on {url}&compareRunsMode=CHART"), first
    tags = MlflowClient(uri).get_experiment(exp_id).tags
    assert SHARED_VIEW_TAG_PREFIX + VIEW_KEY in tags


def test_lifelong_ui_refuses_an_unknown_experiment(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lifelong.platform.cli import app

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _store(uri, tmp_path / "artifacts")
    args = ["ui", "--tracking-uri", uri, "--port", str(free_port()), "--experiment", "nope"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "--experiment: no MLflow experiment 'nope'" in " ".join(result.output.split())
