"""End the local Ray instance lifelong started when its driver dies (even by SIGKILL).

Ray 2.60 fate-shares only part of a local instance with the driver: the
processes ``ray.init`` spawns itself (gcs_server, raylet, dashboard head,
monitor, log monitor) get ``PR_SET_PDEATHSIG``/SIGKILL and die with it, and
workers quit when their raylet goes. The raylet's DashboardAgent and
RuntimeEnvAgent do notice the raylet is gone at once, but then block in a
60 s ``publish_error`` to the GCS that died too before they exit: for about a
minute after a SIGKILLed driver they run on, reparented to init.

:func:`start_watchdog` (called by ``ensure_ray`` when it has started a local
instance) spawns a small detached process, in its own session, that keeps a
record of the instance's processes (re-scanned every ``INTERVAL_S``, since
Ray starts workers and agents later) and checks it is still the driver's
child. When the driver is gone (the watcher was reparented) it SIGTERMs every
recorded process still running, SIGKILLs those left after ``GRACE_S`` and
exits. It exits by itself too when the instance ends normally
(``ray.shutdown``: raylet and GCS gone while the driver lives on), after
ending whatever of the instance outlives them by ``LINGER_S`` the same way.
It notes what it did in the session's ``logs/lifelong_watchdog.log``.

A process belongs to the instance when its command line contains the
instance's session directory, or it is a Ray process (``raylet``,
``gcs_server``, ``ray::...``, Ray's own scripts) below the driver, or it
descends from such a process. Any other child of the driver (an MLflow
server, say) is never touched, nor is anything whose pid was reused (every
process is known by pid *and* kernel start time).

Zombies: the watcher reaps nothing (no instance process is its child). A
worker that exits before its raylet is a zombie of that raylet; once the
raylet is dead (by PDEATHSIG, or by this watcher) it is reparented to init,
which reaps it at once. The same holds for the driver's dead children. So a
zombie of the instance never outlives its parent by more than init's reaping.

``LIFELONG_RAY_WATCHDOG=0`` turns the watcher off.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence

import psutil

#: How often the watcher polls the driver and re-scans the instance's processes.
INTERVAL_S = 0.5
#: How long a process has after SIGTERM before it gets SIGKILL.
GRACE_S = 3.0
#: How long the instance's other processes may outlive its raylet and GCS (normal end).
LINGER_S = 5.0
#: The environment variable that turns the watcher off when set to ``0``.
ENV_SWITCH = "LIFELONG_RAY_WATCHDOG"

_CORE = ("raylet", "gcs_server")
_RAY_MARKS = (
    "default_worker.py",
    "dashboard/agent.py",
    "runtime_env/agent",
    "/ray/_private/",
    "/ray/dashboard/",
    "/ray/autoscaler/",
    "/ray/core/src/ray/",
)

Known = dict[int, float]  # pid -> start time (see start_time)


def start_watchdog(session_dir: str | None = None) -> subprocess.Popen[bytes] | None:
    """Spawn the watcher of the local Ray instance this process started; its handle.

    ``session_dir``: the instance's session directory (default: that of the node
    this process is connected to). Returns None, spawning nothing, when this
    process did not start the node's raylet itself (it joined a running
    instance, which is not its to end) or ``LIFELONG_RAY_WATCHDOG=0``.
    """
    if os.environ.get(ENV_SWITCH, "1") == "0" or sys.platform == "win32":
        return None
    from ray._private import ray_constants
    from ray._private.worker import global_worker

    node = getattr(global_worker, "node", None)
    if node is None or ray_constants.PROCESS_TYPE_RAYLET not in node.all_processes:
        return None
    session_dir = session_dir or node.get_session_dir_path()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifelong.cluster.watchdog"]
        + ["--driver", str(os.getpid()), "--session-dir", str(session_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
    )
    # Reap the watcher when it exits while this process lives on (no zombie left).
    threading.Thread(target=proc.wait, name="ray-watchdog-reaper", daemon=True).start()
    return proc


def is_ray_process(proc: psutil.Process) -> bool:
    """Whether ``proc`` is one of Ray's own processes (by its name or command line)."""
    try:
        name = proc.name()
        cmdline = proc.cmdline()
    except psutil.Error:
        return False
    if name in _CORE or (cmdline and cmdline[0].startswith("ray::")):
        return True
    text = " ".join(cmdline)
    return any(mark in text for mark in _RAY_MARKS)


def names(cmdline: Sequence[str], session_dir: str) -> bool:
    """Whether ``cmdline`` names ``session_dir`` (or a path inside it), not just a prefix."""
    text = " ".join(cmdline) + " "
    return f"{session_dir}/" in text or f"{session_dir} " in text


def start_time(pid: int) -> float | None:
    """When process ``pid`` started (None: no such process, or a zombie).

    On Linux the kernel's start time in clock ticks since boot (``/proc/PID/stat``),
    which, unlike a wall-clock time, a clock step cannot change; elsewhere psutil's.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return None if fields[0] == b"Z" else float(fields[19])
    except FileNotFoundError:
        return None
    except (OSError, IndexError, ValueError):
        pass
    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
    except psutil.Error:
        return None


def alive(pid: int, started: float) -> bool:
    """Whether process ``pid`` that started at ``started`` still runs (a zombie does not)."""
    return start_time(pid) == started


def scan(driver: psutil.Process | None, session_dir: str, known: Known) -> None:
    """Add the instance's processes running now to ``known``.

    ``driver``: look below it for Ray processes and their descendants (None once
    it is gone). Processes whose command line names ``session_dir`` are found
    anywhere.
    """
    me = os.getpid()
    found: list[int] = []
    if driver is not None:
        with contextlib.suppress(psutil.Error):
            for child in driver.children():
                if child.pid != me and is_ray_process(child):
                    found.append(child.pid)
                    with contextlib.suppress(psutil.Error):
                        found.extend(p.pid for p in child.children(recursive=True))
    for proc in psutil.process_iter(["cmdline"]):
        if names(proc.info["cmdline"] or (), session_dir):
            found.append(proc.pid)
    for pid in found:
        if pid != me and pid not in known and (started := start_time(pid)) is not None:
            known[pid] = started


def end(known: Known, grace: float = GRACE_S) -> tuple[list[int], list[int]]:
    """SIGTERM every process of ``known`` still running, SIGKILL those left after ``grace``.

    Returns the pids sent SIGTERM and those that then needed SIGKILL.
    """
    termed = _signal(known, list(known), signal.SIGTERM)
    rest = _wait(known, termed, grace)
    killed = _signal(known, rest, signal.SIGKILL)
    _wait(known, killed, grace)
    return termed, killed


def watch(
    driver_pid: int,
    session_dir: str,
    *,
    interval: float = INTERVAL_S,
    linger: float = LINGER_S,
) -> tuple[str, list[int], list[int]]:
    """Watch the driver (this process's parent) until it or its instance ends; end the rest.

    The driver is gone when this process is no longer its child (reparented to
    init or a subreaper): no pid can be mistaken for it. Returns why it stopped
    (``"driver gone"`` or ``"session ended"``), the pids it sent SIGTERM and those
    it then had to SIGKILL.
    """
    driver = psutil.Process(driver_pid) if os.getppid() == driver_pid else None
    known: Known = {}
    core_gone_at: float | None = None
    while True:
        if os.getppid() != driver_pid:
            driver = None
        scan(driver, session_dir, known)
        for pid in [p for p, started in known.items() if not alive(p, started)]:
            del known[pid]
        if driver is None:
            return "driver gone", *end(known)
        if not any(_is_core(pid) for pid in known):
            core_gone_at = core_gone_at or time.monotonic()
            if not known or time.monotonic() - core_gone_at >= linger:
                return "session ended", *end(known)
        time.sleep(interval)


def main(argv: Sequence[str] | None = None) -> int:
    """The watcher process: ``python -m lifelong.cluster.watchdog --driver PID ...``.

    It notes its start and its end (or a crash) in the session's
    ``logs/lifelong_watchdog.log``.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", type=int, required=True, help="the driver's pid")
    parser.add_argument("--session-dir", required=True, help="the Ray session directory")
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    log = os.path.join(args.session_dir, "logs", "lifelong_watchdog.log")
    _note(log, f"watching driver {args.driver} (watcher pid {os.getpid()})")
    started = time.monotonic()
    try:
        why, termed, killed = watch(args.driver, args.session_dir)
    except BaseException:
        _note(log, "crashed:\n" + traceback.format_exc())
        raise
    _note(
        log,
        f"{why} after {time.monotonic() - started:.1f} s; SIGTERM {termed or 'none'}, "
        f"SIGKILL {killed or 'none'}",
    )
    return 0


def _note(path: str, message: str) -> None:
    with contextlib.suppress(OSError), open(path, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def _signal(known: Known, pids: list[int], sig: signal.Signals) -> list[int]:
    """Send ``sig`` to those of ``pids`` still running (as ``known`` knows them)."""
    sent = []
    for pid in pids:
        if alive(pid, known[pid]):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
                sent.append(pid)
    return sent


def _wait(known: Known, pids: list[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` for ``pids`` to end; those still running."""
    deadline = time.monotonic() + timeout
    rest = [p for p in pids if alive(p, known[p])]
    while rest and time.monotonic() < deadline:
        time.sleep(0.1)
        rest = [p for p in rest if alive(p, known[p])]
    return rest


def _is_core(pid: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).name() in _CORE
    return False


if __name__ == "__main__":
    sys.exit(main())
