"""lifelong server and lifelong ui: a busy port exits 2; SIGTERM ends every MLflow process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from lifelong.platform.cli import app, ui_hint

LIFELONG = str(Path(sys.executable).parent / "lifelong")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", ["server", "ui"])
def test_a_busy_port_exits_2_before_mlflow_starts(command: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [command, "--port", str(port)]
        if command == "ui":
            args += ["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"port {port} on 127.0.0.1 is in use" in " ".join(result.output.split())


def test_sigterm_stops_the_server_and_every_one_of_its_processes(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [LIFELONG, "server", "--port", str(port), "--workers", "2"]
        + ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
        + ["--artifacts-destination", str(tmp_path / "artifacts")],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180  # MLflow starts slowly on a loaded machine
        while True:
            assert proc.poll() is None, "lifelong server exited early"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.5)
        served = psutil.Process(proc.pid).children(recursive=True)
        assert served  # MLflow's manager and workers
        proc.send_signal(signal.SIGTERM)  # to lifelong only: it forwards to MLflow's group
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        alive = [p for p in served if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert alive == []
        with socket.socket() as s:  # the port is free again
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in psutil.Process(os.getpid()).children(recursive=True):
            if "mlflow" in " ".join(p.cmdline()):
                p.kill()


def test_the_ui_hint_is_a_command_that_works_for_the_store() -> None:
    assert ui_hint("http://127.0.0.1:5000").startswith("http://127.0.0.1:5000 ")
    assert ui_hint("sqlite:////x/y.db") == "lifelong ui --tracking-uri sqlite:////x/y.db"
