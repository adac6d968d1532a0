"""A driver that dies leaves nothing of the local Ray instance it started running.

Each test runs its driver in a subprocess (its own local Ray instance, 1 CPU),
records every process of that instance while the driver runs (the driver's
descendants: GCS, raylet, agents, workers, the watchdog), then ends the driver
and checks that within ``BOUND_S`` none of them exists any more, zombies
included (a zombie of the instance is reparented to init when its parent dies
and reaped by it at once: left for longer, it fails the test too), and that no
process whose command line names the instance's session directory is left.

Without the watchdog (``LIFELONG_RAY_WATCHDOG=0``) the SIGKILL tests fail:
Ray's DashboardAgent and RuntimeEnvAgent outlive a SIGKILLed driver by ~60 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from test_cluster_faults import GATE, LIFELONG, experiment, log_lines, wait_for

BOUND_S = 20.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    return env | {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AIR_NEW_OUTPUT": "0"}


def _instance(driver: int) -> tuple[str, list[psutil.Process]]:
    """The session dir of the Ray instance below ``driver``, and its processes now."""
    procs = psutil.Process(driver).children(recursive=True)
    for p in procs:
        with_arg = [a for a in _cmdline(p) if a.startswith("--session-dir=")]
        if p.name() == "gcs_server" and with_arg:
            return with_arg[0].split("=", 1)[1], procs
    pytest.fail(f"no gcs_server below the driver: {[_describe(p) for p in procs]}")


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {p.status()} ppid={p.ppid()} {' '.join(_cmdline(p))[:100] or p.name()}"
    except psutil.Error:
        return f"{p.pid} (gone)"


def _left(recorded: list[psutil.Process], session: str) -> list[str]:
    """Recorded processes that still exist (``is_running`` is true for zombies), and any
    process naming ``session`` in its command line."""
    out = [_describe(p) for p in recorded if p.is_running()]
    pids = {p.pid for p in recorded}
    for p in psutil.process_iter(["cmdline"]):
        if p.pid not in pids and p.pid != os.getpid():
            if session in " ".join(p.info["cmdline"] or ()):
                out.append(_describe(p))
    return out


def _wait_gone(recorded: list[psutil.Process], session: str, bound: float) -> float:
    """Seconds until nothing of the instance is left; fails after ``bound``."""
    t0 = time.monotonic()
    while left := _left(recorded, session):
        if time.monotonic() - t0 > bound:
            log = Path(session, "logs", "lifelong_watchdog.log")
            notes = log.read_text() if log.exists() else "(no watchdog log)"
            pytest.fail(f"still there {bound:.0f} s after the driver ended:\n" + "\n".join(left)
                        + f"\nwatchdog log:\n{notes}")  # fmt: skip
        time.sleep(0.2)
    return time.monotonic() - t0


def _watchers(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if "lifelong.cluster.watchdog" in _cmdline(p)]


@pytest.fixture
def cleanup() -> Iterator[list[psutil.Process]]:
    """Processes to kill at the end should the test fail and leave them running."""
    procs: list[psutil.Process] = []
    yield procs
    for p in procs:
        try:
            if p.is_running():
                p.kill()
        except psutil.Error:
            pass


def test_sigkilled_sweep_driver_leaves_no_ray_process(
    tmp_path: Path, cleanup: list[psutil.Process]
) -> None:
    """`lifelong run` SIGKILLed while its trial trains: its whole Ray instance goes."""
    plugin = tmp_path / "gate_plugin.py"
    plugin.write_text(GATE)
    path = experiment(tmp_path, [{"dir": str(tmp_path), "tag": "t"}], 1, "killed", str(plugin))
    (tmp_path / "hold").touch()
    proc = subprocess.Popen(
        [LIFELONG, "run", path.name, "--num-cpus", "1"]
        + ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cleanup.append(psutil.Process(proc.pid))
    try:
        held = lambda: any(r[1] == 1 for r in log_lines(tmp_path))  # noqa: E731
        wait_for("the trial held at experience 1", held, proc, 240)
        time.sleep(1)  # let the watchdog's periodic scan see the running trial too
        session, recorded = _instance(proc.pid)
        cleanup.extend(recorded)
        trial = next(r[2] for r in log_lines(tmp_path) if r[1] == 1)
        names = {p.pid: _describe(p) for p in recorded}
        assert trial in names, f"trial worker {trial} not below the driver: {names}"
        agents = [d for d in names.values() if "Agent" in d]
        assert len(agents) == 2, names  # DashboardAgent, RuntimeEnvAgent
        proc.kill()
        proc.wait(timeout=30)  # reap the driver
        took = _wait_gone(recorded, session, BOUND_S)
    finally:
        (tmp_path / "hold").unlink(missing_ok=True)
    print(f"\nSIGKILLed driver: {len(recorded)} Ray processes, all gone after {took:.1f} s")


DRIVER = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    import psutil, ray
    from lifelong.cluster.sweep import ensure_ray

    sleeper = subprocess.Popen(["sleep", "300"], stdout=subprocess.DEVNULL)  # not Ray's
    ensure_ray(num_cpus=1)

    @ray.remote
    def pid():
        return os.getpid()

    worker = ray.get(pid.remote())
    time.sleep(1.5)  # a watchdog scan after the worker started
    print(json.dumps({"sleeper": sleeper.pid, "worker": worker}), flush=True)
    if sys.argv[1] == "shutdown":
        ray.shutdown()
        print("shut down", flush=True)
    time.sleep(300)
    """
)


def _script_driver(
    mode: str, cleanup: list[psutil.Process]
) -> tuple[subprocess.Popen[str], dict[str, int], str, list[psutil.Process]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, mode],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cleanup.append(psutil.Process(proc.pid))
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the driver is ready (or dies)
    if not line:
        pytest.fail(f"driver exited {proc.wait()}: {proc.stderr.read()[-4000:]}")  # type: ignore[union-attr]
    info = json.loads(line)
    session, procs = _instance(proc.pid)
    cleanup.extend(procs)
    return proc, info, session, procs


def test_sigkilled_driver_spares_its_other_children(cleanup: list[psutil.Process]) -> None:
    """Only the Ray instance is ended: a non-Ray child of the driver lives on."""
    proc, info, session, procs = _script_driver("kill", cleanup)
    sleeper = psutil.Process(info["sleeper"])
    recorded = [p for p in procs if p.pid != sleeper.pid]
    assert _watchers(recorded) and info["worker"] in {p.pid for p in recorded}
    proc.kill()
    proc.wait(timeout=30)
    took = _wait_gone(recorded, session, BOUND_S)
    time.sleep(1)
    assert sleeper.is_running() and sleeper.status() != psutil.STATUS_ZOMBIE
    sleeper.kill()
    print(f"\nSIGKILLed script driver: instance gone after {took:.1f} s, sleeper spared")


def test_watchdog_exits_after_a_normal_shutdown(cleanup: list[psutil.Process]) -> None:
    """`ray.shutdown()` with the driver alive: the watcher (and all else) ends by itself."""
    proc, info, session, procs = _script_driver("shutdown", cleanup)
    watchers = _watchers(procs)
    assert len(watchers) == 1, [_describe(p) for p in procs]
    assert proc.stdout is not None and proc.stdout.readline().strip() == "shut down"
    recorded = [p for p in procs if p.pid != info["sleeper"]]
    took = _wait_gone(recorded, session, BOUND_S)
    assert proc.poll() is None  # the driver still runs; its watcher is reaped, no zombie
    assert psutil.Process(info["sleeper"]).is_running()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    psutil.Process(info["sleeper"]).kill()
    print(f"\nray.shutdown(): the watcher and the instance gone after {took:.1f} s")
