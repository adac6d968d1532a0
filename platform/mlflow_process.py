"""MLflow's server or UI as a child process group that ends with the command.

``lifelong server`` and ``lifelong ui`` run ``mlflow server`` / ``mlflow ui``,
which start a process manager and worker processes. Started in a session of
their own, they form one process group: a signal to ``lifelong`` (Ctrl-C,
SIGTERM, SIGHUP) is forwarded to the whole group, and the command returns only
once every process of the group has exited (SIGKILL after a grace period), so
nothing keeps serving the store after the command is gone. A port already in
use is refused before anything starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from types import FrameType

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""The signals passed on to MLflow's process group."""

GRACE_S = 10.0
"""How long MLflow's processes get to exit after a forwarded signal before SIGKILL."""


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port`` (binding it fails)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As the servers do: a port left in TIME_WAIT by an earlier server is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def serve(cmd: Sequence[str], grace_s: float = GRACE_S) -> int:
    """Run ``cmd`` as its own process group until it exits or this process is signalled.

    Returns the command's exit code, or ``128 + signal`` when a forwarded signal
    ended it (130 for Ctrl-C, 143 for SIGTERM).
    """
    proc = subprocess.Popen(list(cmd), env=os.environ.copy(), start_new_session=True)
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    with _handlers(forward):
        code = proc.wait()
        _end_group(proc.pid, grace_s)
    return 128 + received[0] if received else code


def _end_group(pgid: int, grace_s: float) -> None:
    """Wait for every process of group ``pgid`` to exit: SIGTERM, then SIGKILL after grace."""
    if not _group_alive(pgid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            return
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` runs (zombies awaiting their reaper do not count)."""
    import psutil

    for p in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):  # gone meanwhile
            if os.getpgid(p.info["pid"]) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


@contextlib.contextmanager
def _handlers(handler: signal.Handlers | object) -> Iterator[None]:
    """Install ``handler`` for :data:`FORWARDED` (main thread only), restoring them after."""
    previous = {s: signal.signal(s, handler) for s in FORWARDED}  # type: ignore[arg-type]
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
