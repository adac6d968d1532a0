"""Run sweeps as Ray jobs: submit an experiment to a cluster's job server, follow it.

``lifelong submit exp.yaml --address http://HEAD:8265`` uploads the submitting
directory as the job's ``working_dir`` (so the experiment file and the plugin
files it names travel with it) and runs ``lifelong run exp.yaml --address auto``
on the cluster. ``lifelong status`` and ``lifelong logs`` read the job server.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Never uploaded with the working directory: local stores, results, caches.
EXCLUDES = [
    ".git",
    ".lifelong",
    "mlruns",
    "mlartifacts",
    "mlflow.db",
    "*.db",
    "__pycache__",
    ".venv",
    "venv",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
]


class JobError(RuntimeError):
    """The job server could not be reached, or refused the request."""


def job_client(address: str | None) -> Any:
    """A :class:`ray.job_submission.JobSubmissionClient` for ``address``.

    ``None`` uses ``$RAY_API_SERVER_ADDRESS`` or ``$RAY_ADDRESS`` as Ray does.
    """
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise JobError(f"cannot reach the Ray job server {_where(address)}: {first}") from e


def _where(address: str | None) -> str:
    """Which job server was tried: the address given, the environment's, or none."""
    if address:
        return f"at {address}"
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        if os.environ.get(name):
            return f"at {os.environ[name]} (${name})"
    return "(no --address given and $RAY_ADDRESS is not set, so Ray looked for a local one)"


def entrypoint(experiment_file: str, run_args: list[str]) -> str:
    """The job's shell command: ``lifelong run <file> --address auto <run_args>``."""
    parts = ["lifelong", "run", experiment_file, "--address", "auto", *run_args]
    return shlex.join(parts)


def submit(
    experiment_file: Path,
    *,
    address: str | None,
    run_args: list[str],
    working_dir: Path,
    env_vars: dict[str, str] | None = None,
    submission_id: str | None = None,
) -> str:
    """Submit ``experiment_file`` (inside ``working_dir``) as a Ray job; return its id.

    Raises:
        JobError: the file is outside ``working_dir``, or the server refused the job.
    """
    try:
        rel = experiment_file.resolve().relative_to(working_dir.resolve())
    except ValueError:
        raise JobError(
            f"{experiment_file} is not inside the working directory {working_dir}, "
            "which is what travels to the cluster; submit from a directory that holds it"
        ) from None
    runtime_env: dict[str, Any] = {"working_dir": str(working_dir), "excludes": EXCLUDES}
    if env_vars:
        runtime_env["env_vars"] = env_vars
    client = job_client(address)
    try:
        return str(
            client.submit_job(
                entrypoint=entrypoint(rel.as_posix(), run_args),
                runtime_env=runtime_env,
                submission_id=submission_id,
                metadata={"lifelong.experiment": rel.as_posix()},
            )
        )
    except (RuntimeError, ValueError) as e:
        raise JobError(f"the job server refused the job: {e}") from e


def job_rows(address: str | None, job: str | None) -> list[dict[str, str]]:
    """Id, status, entrypoint and message of one job or of every job (newest first)."""
    client = job_client(address)
    try:
        infos = [client.get_job_info(job)] if job else client.list_jobs()
    except RuntimeError as e:
        raise JobError(str(e).strip().splitlines()[0]) from e
    infos = sorted(infos, key=lambda i: i.start_time or 0, reverse=True)
    return [
        {
            "job": str(i.submission_id or i.job_id),
            "status": str(getattr(i.status, "value", i.status)),
            "entrypoint": i.entrypoint or "",
            "message": (i.message or "").strip(),
        }
        for i in infos
    ]


def logs(address: str | None, job: str, *, follow: bool, write: Callable[[str], Any]) -> None:
    """Write the job's logs so far; with ``follow`` keep writing until the job ends."""
    client = job_client(address)
    try:
        if not follow:
            write(client.get_job_logs(job))
            return

        async def tail() -> None:
            async for chunk in client.tail_job_logs(job):
                write(chunk)

        asyncio.run(tail())
    except RuntimeError as e:
        raise JobError(str(e).strip().splitlines()[0]) from e


def job_status(address: str | None, job: str) -> str:
    """``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED`` or ``STOPPED``."""
    return job_rows(address, job)[0]["status"]
