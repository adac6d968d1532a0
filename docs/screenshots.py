"""Build the pictures of docs/compare.md from a real run.

    .venv/bin/python docs/screenshots.py            # writes docs/img/*.png

Runs a small sweep with the real CLI (``lifelong run``: a local Ray instance,
MLflow's SQLite store in a temporary folder), prints ``lifelong compare`` on
it, starts ``mlflow server`` on 127.0.0.1 and drives Debian's
``/usr/bin/chromium`` headless with Playwright (no browser download) through
the steps docs/compare.md describes, saving a 1280x800 screenshot of each. The
sweep's summary figures are copied from its parent run's artifacts. PNGs are
quantised to 256 colours to keep the repository small.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
NAME = "permuted_digits"
# MLflow 3.17 opens in its GenAI view with an assistant panel; a user clicks
# "Model training" once (and may close the panel): the same two settings, preset.
INIT_SCRIPT = """
localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning'));
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
"""


def experiment_file(folder: Path) -> Path:
    """examples/permuted_digits.yaml with one epoch per experience (a minute's run)."""
    spec = yaml.safe_load((ROOT / "examples" / "permuted_digits.yaml").read_text())
    spec["training"]["epochs"] = 1
    spec["max_failures"] = 3  # a trial killed by a busy machine (OOM) resumes from its checkpoint
    path = folder / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def lifelong(*args: str, cwd: Path) -> str:
    """Run the installed ``lifelong`` CLI; return its stdout (stderr passes through)."""
    cli = Path(sys.executable).with_name("lifelong")
    proc = subprocess.run([str(cli), *args], cwd=cwd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"lifelong {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}")
    return proc.stdout


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(uri: str, cwd: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` on 127.0.0.1 over ``uri``; returns the process once it is healthy."""
    port = free_port()
    log = (cwd / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if proc.poll() is not None:
            raise SystemExit(f"mlflow server exited: {(cwd / 'server.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    stop(proc)
    raise SystemExit("mlflow server did not become healthy in 120 s")


def stop(proc: subprocess.Popen) -> None:
    """Stop the server and its workers (its own process group)."""
    import os

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def shrink(path: Path) -> None:
    """Quantise a PNG to 256 colours (screenshots and plots stay readable, ~3x smaller)."""
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def screenshots(url: str, client: MlflowClient, out: Path) -> list[Path]:
    """Drive the MLflow UI through the steps of docs/compare.md; one PNG per step."""
    from playwright.sync_api import sync_playwright

    exp = client.get_experiment_by_name(NAME)
    runs = client.search_runs([exp.experiment_id], "tags.`lifelong.role` = 'sweep'")
    parent = runs[0]
    base = f"{url}/#/experiments/{exp.experiment_id}"
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.add_init_script(INIT_SCRIPT)
        page = context.new_page()
        page.set_default_timeout(60_000)

        # 1. the experiment: one parent per sweep, children nested under it
        page.goto(f"{base}/runs")
        row = page.locator("[role=row]", has_text=parent.info.run_name).first
        row.wait_for()
        row.locator("[col-id*='Run Name'] button").first.click()
        page.get_by_text("naive-seed0", exact=True).first.wait_for()
        page.wait_for_timeout(500)
        shots.append(out / "ui_runs_nested.png")
        page.screenshot(path=shots[-1])

        # 2. chart view, grouped by the `strategy` tag: acc/avg against step
        page.locator("label", has=page.locator("input[value=CHART]")).click()
        page.get_by_text("acc/avg", exact=True).first.wait_for()
        page.get_by_role("button", name="Group by").click()
        page.get_by_role("menuitemcheckbox", name="strategy", exact=True).first.click()  # tag
        page.keyboard.press("Escape")
        page.wait_for_timeout(2000)
        page.get_by_placeholder("Search metric charts").fill("acc/avg")
        page.wait_for_timeout(1500)
        shots.append(out / "ui_chart_acc_avg.png")
        page.screenshot(path=shots[-1])
        page.locator("button[data-component-id=fullscreen_button_chartcard]").first.click()
        page.wait_for_timeout(2000)
        shots.append(out / "ui_chart_acc_avg_full.png")
        page.screenshot(path=shots[-1])
        page.keyboard.press("Escape")

        # 3. the parent run's artifacts: summary table and figures
        page.goto(f"{base}/runs/{parent.info.run_id}/artifacts")
        page.get_by_text("figures", exact=True).first.click()
        page.get_by_text("acc_avg_curve.png", exact=True).first.click()
        page.locator("img[src^=blob]").first.wait_for(state="attached")
        page.wait_for_timeout(1500)
        shots.append(out / "ui_parent_artifacts.png")
        page.screenshot(path=shots[-1])
        browser.close()
    return shots


def main() -> None:
    """Run the sweep, take the screenshots, copy the figures, shrink every PNG."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument(
        "--keep", type=Path, help="run in this folder and keep it (default: a temp dir)"
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="lifelong-docs-"))
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    try:
        path = experiment_file(work)
        lifelong("run", str(path), "--tracking-uri", uri, "--num-cpus", "2", cwd=work)
        print(lifelong("compare", NAME, "--tracking-uri", uri, "--format", "md", cwd=work))
        client = MlflowClient(uri)
        proc, url = start_server(uri, work)
        try:
            written = screenshots(url, client, args.out)
        finally:
            stop(proc)
        exp = client.get_experiment_by_name(NAME)
        parent = client.search_runs([exp.experiment_id], "tags.`lifelong.role` = 'sweep'")[0]
        for name in ("acc_avg_curve.png", "final_accuracy.png", "forgetting.png"):
            local = client.download_artifacts(parent.info.run_id, f"figures/{name}", str(work))
            written.append(Path(shutil.copy(local, args.out / name)))
        for png in written:
            shrink(png)
            print(f"wrote {png.relative_to(ROOT)} ({png.stat().st_size // 1024} KiB)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
