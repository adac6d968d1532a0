"""The MLflow UI in a real browser: a sweep's parent, its nested children, acc/avg charted.

Starts ``mlflow server`` on 127.0.0.1 (a free port) against a store holding a
small sweep and drives Debian's ``/usr/bin/chromium`` headless with Playwright
(no browser download). The screenshots land in ``.lifelong/test-artifacts/``.
``make test`` installs chromium when it is missing; the test skips without it
only outside CI (``CI=true`` turns a missing browser into a failure).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lifelong.platform.cli import app

from conftest import ROOT
from test_compare_kit import tiny_sweep

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / ".lifelong" / "test-artifacts"
# MLflow 3.17 opens in its GenAI view with an assistant panel; a user clicks
# "Model training" and closes the panel once. The same two settings, preset:
INIT_SCRIPT = """
localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning'));
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
"""


def _need(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing in CI (make test installs it)")
    pytest.skip(f"{what} is missing (make test installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mlflow server not healthy after {timeout} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, MlflowClient]]:
    """``mlflow server`` on 127.0.0.1 over a store holding one small sweep; stopped after."""
    if not CHROMIUM.exists():
        _need(str(CHROMIUM))
    tmp = tmp_path_factory.mktemp("browser")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # create the tables before the server starts
    port = free_port()
    log = tmp / "server.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
            + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=tmp,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with its workers
        )
    url = f"http://127.0.0.1:{port}"
    try:
        tiny_sweep(uri, tmp / "artifacts", name="ui-check", seeds=2, n_experiences=2)
        wait_healthy(url, proc, log)
        yield url, MlflowClient(uri)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_parent_children_and_acc_avg_in_the_mlflow_ui(server: tuple[str, MlflowClient]) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright package")
    url, client = server
    exp = client.get_experiment_by_name("ui-check")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags["lifelong.role"] == "sweep")
    children = sorted(r.info.run_name for r in runs if r is not parent)
    assert children == ["l2-seed0", "l2-seed1", "naive-seed0", "naive-seed1"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.add_init_script(INIT_SCRIPT)
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs")
            row = page.locator("[role=row]", has_text=parent.info.run_name)
            row.first.wait_for()
            # children are nested under the parent: hidden until it is expanded
            assert page.get_by_text(children[0], exact=True).count() == 0
            row.first.locator("[col-id*='Run Name'] button").first.click()
            for name in children:
                page.get_by_text(name, exact=True).first.wait_for()
            page.screenshot(path=ARTIFACTS / "mlflow_ui_runs.png")

            page.locator("label", has=page.locator("input[value=CHART]")).click()
            chart = page.get_by_text("acc/avg", exact=True).first
            chart.wait_for()
            page.get_by_text("naive-seed0 (acc/avg)").first.wait_for()  # a child's series
            page.screenshot(path=ARTIFACTS / "mlflow_ui_charts.png")

            page.goto(
                f"{url}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}/artifacts"
            )
            page.get_by_text("summary.md", exact=True).first.wait_for()
            page.get_by_text("figures", exact=True).first.wait_for()
            page.screenshot(path=ARTIFACTS / "mlflow_ui_parent_artifacts.png")
        finally:
            browser.close()
    for name in ("runs", "charts", "parent_artifacts"):
        png = ARTIFACTS / f"mlflow_ui_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_reads_a_tracking_server(server: tuple[str, MlflowClient]) -> None:
    url, _ = server
    result = CliRunner().invoke(
        app, ["compare", "ui-check", "--tracking-uri", url, "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert sorted(s["strategy"] for s in doc["strategies"]) == ["l2", "naive"]
    assert all(s["n_finished"] == 2 for s in doc["strategies"])
