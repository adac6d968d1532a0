"""The ``lifelong`` command line: ``run`` a sweep, open the MLflow ``ui``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="lifelong: distributed continual-learning sweeps tracked in MLflow.",
)
err = Console(stderr=True)
out = Console()
for console in (out, err):  # logs and pipes: keep tables and messages on one line
    if not console.is_terminal:
        console.width = 160

EXIT_BAD_INPUT = 2


def _bad_input(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


@app.command()
def run(
    experiment_file: Annotated[Path, typer.Argument(help="experiment YAML file")],
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to join (auto, HOST:PORT, ray://HOST:PORT); default: start one"
        ),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI; default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
        ),
    ] = None,
    experiment_name: Annotated[
        str | None,
        typer.Option(help="MLflow experiment name; default the file's `name` or its stem"),
    ] = None,
    num_cpus: Annotated[
        int | None, typer.Option(min=1, help="CPUs of the local Ray instance lifelong starts")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="continue the stopped sweep of this file: only unfinished trials run, "
            "from their last checkpoints, logging into the same MLflow runs",
        ),
    ] = False,
    storage: Annotated[
        str | None,
        typer.Option(
            help="where trials keep checkpoints (a path all nodes share, or s3://, gs://); "
            "default .lifelong/ray_results"
        ),
    ] = None,
) -> None:
    """Run the sweep an experiment file describes and print a summary per strategy.

    Ctrl-C (or SIGTERM) stops the trials, marks their MLflow runs KILLED, keeps
    their checkpoints and exits 130; ``--resume`` then finishes the sweep.
    """
    from lifelong.cluster.state import SweepState, file_digest, state_path
    from lifelong.cluster.sweep import (
        ClusterConnectError,
        SweepInterrupted,
        ensure_ray,
        in_ray_job,
        plugin_imports,
        run_sweep,
    )
    from lifelong.platform.plugins import discard_staged, stage_for_workers
    from lifelong.platform.spec import SpecError, build_checked_stream, load_experiment
    from lifelong.platform.summary import summarize, summary_table
    from lifelong.platform.tracking import (
        DEFAULT_TRACKING_URI,
        SweepTracker,
        resolve_tracking_uri,
    )

    try:
        experiment = load_experiment(experiment_file)
    except SpecError as e:
        raise _bad_input(str(e)) from None
    try:
        stream = build_checked_stream(experiment)  # the data itself: empty, NaN, bad labels
    except SpecError as e:
        raise _bad_input(str(e)) from None
    name = experiment_name or experiment.name
    state_file = state_path(experiment_file, name)
    previous = SweepState.load(state_file) if resume else None
    if resume:
        if previous is None or previous.status == "ended":
            what = "no stopped sweep" if previous is None else "its sweep ended; nothing"
            raise _bad_input(f"{experiment_file}: {what} to resume (state: {state_file})")
        if previous.file_sha256 != file_digest(experiment_file):
            raise _bad_input(
                f"{experiment_file} changed since its sweep started; a resumed sweep "
                "must run the same trials (run it without --resume for a new sweep)"
            )
        tracking_uri = tracking_uri or previous.tracking_uri
    uri = resolve_tracking_uri(tracking_uri)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # e.g. "creating tables" notices
    tracker = SweepTracker(experiment, uri, name)
    n = len(experiment.trials())
    err.print(
        f"lifelong: {n} trials of {stream.name} ({len(stream)} experiences), tracking to {uri}",
        highlight=False,
    )
    job = in_ray_job()  # `lifelong submit`: the job's working_dir carries the plugins
    runtime_env, shipped = ({}, None) if job else stage_for_workers(list(experiment.plugins))
    staged = list(runtime_env.get("py_modules", []))  # ray.init rewrites them to URIs
    try:
        started = ensure_ray(address, num_cpus=num_cpus, runtime_env=runtime_env)
    except ClusterConnectError as e:
        discard_staged(staged)
        raise _bad_input(str(e)) from None
    imports = plugin_imports(
        experiment, shipped if started else None, relative_to=Path.cwd() if job else None
    )
    try:
        outcomes = run_sweep(
            experiment,
            stream,
            tracker,
            console=err,
            plugins=imports,
            storage_path=storage,
            state_file=state_file,
            resume=previous,
        )
    except (SweepInterrupted, KeyboardInterrupt) as e:
        err.print(
            f"[bold yellow]stopped:[/] {e or 'interrupted'}; unfinished trials are KILLED in "
            f"MLflow, their checkpoints kept. Continue with: lifelong run {experiment_file} "
            "--resume" + (f" --address {address}" if address else ""),
            highlight=False,
            soft_wrap=True,
        )
        tracker.client.close(wait=False)
        raise typer.Exit(130) from None
    finally:
        if started:
            import ray

            ray.shutdown()
        discard_staged(staged)  # Ray uploaded the plugin files when it started
    tracker.client.close()  # a tracking store that was down: replay, or say where results are
    rows = summarize(outcomes)
    out.print(
        summary_table(
            rows, title=f"{tracker.experiment_name}: final metrics, mean ± std over seeds"
        )
    )
    failed = [(r.label, f) for r in rows for f in r.failed]
    for label, reason in failed:
        out.print(f"[red]FAILED[/] {label} {reason}", highlight=False, soft_wrap=True)
    default = uri == resolve_tracking_uri(DEFAULT_TRACKING_URI)
    ui = "lifelong ui" + ("" if default else f" --tracking-uri {uri}")
    out.print(f"Open the MLflow UI: {ui}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


KINDS = ("strategies", "scenarios", "models")
SINGULAR = {"strategy": "strategies", "scenario": "scenarios", "model": "models"}


PluginOption = Annotated[
    list[str] | None,
    typer.Option("--plugin", help="also load this plugin file or module (repeatable)"),
]


def _load_plugins(plugins: list[str] | None) -> None:
    from lifelong.platform.plugins import load_plugin

    for spec in plugins or []:
        load_plugin(spec, Path.cwd())


@app.command("list")
def list_(
    kind: Annotated[str, typer.Argument(help="strategies, scenarios or models")],
    plugin: PluginOption = None,
) -> None:
    """List every registered strategy, scenario source or model, built-in or plugin."""
    from lifelong.platform.catalog import list_table
    from lifelong.platform.plugins import PluginError

    kind = SINGULAR.get(kind, kind)
    if kind not in KINDS:
        raise _bad_input(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    try:
        _load_plugins(plugin)
        out.print(list_table(kind))  # type: ignore[arg-type]
    except PluginError as e:
        raise _bad_input(str(e)) from None


@app.command()
def show(
    kind: Annotated[str, typer.Argument(help="strategy, scenario or model")],
    name: Annotated[str, typer.Argument(help="its registered name")],
    plugin: PluginOption = None,
) -> None:
    """Show one strategy's, scenario source's or model's documentation and hyperparameters."""
    from lifelong.platform._registry import RegistryError
    from lifelong.platform.catalog import show_table
    from lifelong.platform.plugins import PluginError

    plural = SINGULAR.get(kind, kind)
    if plural not in KINDS:
        raise _bad_input(f"unknown kind {kind!r}; use strategy, scenario or model")
    try:
        _load_plugins(plugin)
        header, table = show_table(plural, name)  # type: ignore[arg-type]
    except (RegistryError, PluginError) as e:
        raise _bad_input(str(e)) from None
    out.print(header, highlight=False)
    if table is not None:
        out.print(table)


@app.command()
def ui(
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI; default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(help="address to bind; anything but 127.0.0.1 exposes the UI to the network"),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port")] = 5000,
) -> None:
    """Start the MLflow UI against the same store ``lifelong run`` logs to."""
    from lifelong.platform.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        raise _bad_input(f"{uri} is a tracking server already; open it in a browser")
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
    ]
    err.print(f"MLflow UI on http://{host}:{port} (store {uri}); Ctrl-C stops it", highlight=False)
    try:
        raise typer.Exit(subprocess.call(cmd, env=os.environ.copy()))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _register_compare() -> None:
    from lifelong.platform.compare import compare

    app.command()(compare)


_register_compare()


JobAddress = Annotated[
    str | None,
    typer.Option(help="the cluster's job server, e.g. http://HEAD:8265; default $RAY_ADDRESS"),
]


@app.command()
def submit(
    experiment_file: Annotated[Path, typer.Argument(help="experiment YAML file")],
    address: JobAddress = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI the job logs to, e.g. http://HOST:5000"),
    ] = None,
    experiment_name: Annotated[
        str | None, typer.Option(help="MLflow experiment name; default the file's")
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help="checkpoint storage all nodes share (see `run`)")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the job's logs; exit 0 only if it succeeds")
    ] = False,
) -> None:
    """Submit a sweep as a Ray job; the current directory travels with it.

    The job runs ``lifelong run EXPERIMENT_FILE --address auto`` on the cluster,
    in a copy of this directory (so plugin files named in the experiment come
    along). Follow it with ``lifelong status`` and ``lifelong logs``.
    """
    from lifelong.cluster.jobs import JobError, job_status, logs
    from lifelong.cluster.jobs import submit as submit_job
    from lifelong.platform.spec import SpecError, load_experiment

    try:
        load_experiment(experiment_file)
    except SpecError as e:
        raise _bad_input(str(e)) from None
    run_args: list[str] = []
    for flag, value in (
        ("--tracking-uri", tracking_uri),
        ("--experiment-name", experiment_name),
        ("--storage", storage),
    ):
        if value:
            run_args += [flag, value]
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")) and "://" not in uri.replace("sqlite:", ""):
        err.print(
            "[yellow]note:[/] without --tracking-uri http://... (see `lifelong server`) the "
            "job logs to a store inside its working directory on the cluster",
            highlight=False,
            soft_wrap=True,
        )
    try:
        job = submit_job(
            experiment_file, address=address, run_args=run_args, working_dir=Path.cwd()
        )
    except JobError as e:
        raise _bad_input(str(e)) from None
    out.print(job, highlight=False)
    err.print(f"follow it: lifelong logs {job} --follow", highlight=False)
    if wait:
        logs(address, job, follow=True, write=lambda t: out.out(t, end="", highlight=False))
        status = job_status(address, job)
        err.print(f"job {job}: {status}", highlight=False)
        if status != "SUCCEEDED":
            raise typer.Exit(1)


@app.command()
def status(
    job: Annotated[str | None, typer.Argument(help="a job id; default: every job")] = None,
    address: JobAddress = None,
) -> None:
    """Show the status of one Ray job, or of every job on the cluster."""
    from rich.table import Table

    from lifelong.cluster.jobs import JobError, job_rows

    try:
        rows = job_rows(address, job)
    except JobError as e:
        raise _bad_input(str(e)) from None
    table = Table("job", "status", "entrypoint", "message", box=None, header_style="bold")
    for r in rows:
        table.add_row(r["job"], r["status"], r["entrypoint"], r["message"][:200])
    out.print(table)


@app.command()
def logs(
    job: Annotated[str, typer.Argument(help="the job id `lifelong submit` printed")],
    address: JobAddress = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing until the job ends")
    ] = False,
) -> None:
    """Print a Ray job's logs (the sweep's progress and summary)."""
    from lifelong.cluster.jobs import JobError
    from lifelong.cluster.jobs import logs as job_logs

    try:
        job_logs(address, job, follow=follow, write=lambda t: out.out(t, end="", highlight=False))
    except JobError as e:
        raise _bad_input(str(e)) from None


@app.command()
def server(
    backend_store_uri: Annotated[
        str, typer.Option(help="where runs are stored: sqlite:///FILE or a database URI")
    ] = "sqlite:///mlflow.db",
    artifacts_destination: Annotated[
        str, typer.Option(help="where the server keeps artifacts (a directory or s3://...)")
    ] = "./mlartifacts",
    host: Annotated[
        str,
        typer.Option(
            help="address to bind; anything but 127.0.0.1 opens the store to the network "
            "(unauthenticated: put it behind a firewall or an authenticating proxy)"
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port")] = 5000,
    workers: Annotated[
        int, typer.Option(min=1, help="server processes (only sweep drivers write: 1-2 suffice)")
    ] = 1,
) -> None:
    """Start an MLflow tracking server; sweeps on a cluster log to it with --tracking-uri."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    err.print(
        f"MLflow tracking server on http://{host}:{port} (store {backend_store_uri}, "
        f"artifacts {artifacts_destination}); sweeps: --tracking-uri http://{host}:{port}",
        highlight=False,
        soft_wrap=True,
    )
    try:
        raise typer.Exit(subprocess.call(cmd, env=os.environ.copy()))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def sync(
    spool: Annotated[
        list[Path] | None,
        typer.Argument(help="spool directories (default: every one under .lifelong/spool)"),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="upload to this MLflow tracking URI instead of the one recorded"),
    ] = None,
) -> None:
    """Upload results a sweep kept on disk while its tracking store was down.

    Each spool directory is replayed in order; what was uploaded before is
    skipped, so running ``sync`` again duplicates nothing.
    """
    from mlflow.exceptions import MlflowException

    from lifelong.platform.mlflow_io import spool_dirs
    from lifelong.platform.mlflow_io import sync as sync_journal

    dirs = spool or spool_dirs()
    if not dirs:
        err.print("lifelong sync: nothing to upload (no spool under .lifelong/spool)")
        return
    failed = False
    for d in dirs:
        try:
            report = sync_journal(d, tracking_uri)
        except FileNotFoundError as e:
            raise _bad_input(str(e)) from None
        except (MlflowException, OSError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            err.print(f"[red]not synced[/] {d}: {first}", highlight=False, soft_wrap=True)
            failed = True
            continue
        out.print(
            f"synced {d} -> {report.tracking_uri}: {report.replayed} writes uploaded, "
            f"{report.already_done} uploaded before",
            highlight=False,
            soft_wrap=True,
        )
    if failed:
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the ``lifelong`` console script."""
    app()


if __name__ == "__main__":
    main()
