"""The ``lifelong`` command line: ``run`` a sweep, open the MLflow ``ui``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from lifelong.platform.mlflow_process import port_in_use, serve

app = typer.Typer(
    rich_markup_mode="markdown",
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
ExperimentNameOption = Annotated[
    str | None,
    typer.Option(help="MLflow experiment name; default the file's `name` or its stem"),
]

if TYPE_CHECKING:
    from lifelong.platform.runner import Results, TrialResult
    from lifelong.platform.spec import Experiment
    from lifelong.platform.summary import TrialRecord


def _version(value: bool) -> None:
    if value:
        from lifelong import __version__

        out.print(f"lifelong {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """lifelong: distributed continual-learning sweeps tracked in MLflow."""


def _bad_input(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


@app.command()
def run(
    experiment_file: Annotated[Path, typer.Argument(help="experiment YAML file")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="KEY=VALUE overrides of the file: dotted keys, YAML values, e.g. "
            "training.lr=0.1 'strategies=[naive,ewc]' 'training.lr={grid: [0.01, 0.1]}'",
            show_default=False,
        ),
    ] = None,
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
    experiment_name: ExperimentNameOption = None,
    num_cpus: Annotated[
        int | None, typer.Option(min=1, help="CPUs of the local Ray instance lifelong starts")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="continue the latest stopped sweep of this file (or --sweep's): only "
            "unfinished trials run, from their last checkpoints, logging into the same "
            "MLflow runs",
        ),
    ] = False,
    sweep: Annotated[
        str | None,
        typer.Option(
            "--sweep",
            metavar="SWEEP_ID",
            help="with --resume: which sweep of this file to continue (`lifelong sweeps "
            "FILE` lists them); default the latest whose driver is gone",
        ),
    ] = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="run the FAILED trials of this file's latest ended sweep (or --sweep's) "
            "again, from scratch, into new child runs of its parent run (plugin files may "
            "have changed: the fix)",
        ),
    ] = False,
    allow_changed_plugins: Annotated[
        bool,
        typer.Option(
            "--allow-changed-plugins",
            help="with --resume: continue although a plugin file changed since the sweep "
            "started (the resumed trials run the new code; their runs are tagged so)",
        ),
    ] = False,
    storage: Annotated[
        str | None,
        typer.Option(
            help="where trials keep checkpoints (a path all nodes share, or s3://, gs://); "
            "default .lifelong/ray_results"
        ),
    ] = None,
    spool_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="LIFELONG_SPOOL_DIR",
            help="where results are journalled while the tracking store is unreachable "
            "(needs 64 MiB free); default .lifelong/spool beside a local store, or in "
            "this directory for a tracking server",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="print the resolved experiment and its trials, then exit (no Ray, no MLflow)",
        ),
    ] = False,
    in_process: Annotated[
        bool,
        typer.Option(
            "--in-process",
            help="train the trials one after another in this process, without Ray "
            "(for debugging a strategy: breakpoint() and pdb work)",
        ),
    ] = False,
    log_model: Annotated[
        bool,
        typer.Option(
            "--log-model",
            help="log each finished trial's final weights to its MLflow run "
            "(model/state_dict.pt, loadable with weights_only=True, and model/model.json)",
        ),
    ] = False,
) -> None:
    """Run the sweep an experiment file describes and print a summary per strategy.

    Ctrl-C (or SIGTERM) stops the trials, marks their MLflow runs KILLED, keeps
    their checkpoints and exits 130; ``--resume`` then finishes the sweep.
    """
    from lifelong.cluster.progress import stage

    with stage(err, f"reading {experiment_file}", log=False):  # a terminal sees it move
        from lifelong.platform.spec import SpecError, load_experiment

        try:
            experiment = load_experiment(experiment_file, overrides or ())
        except SpecError as e:
            raise _bad_input(str(e)) from None
    if dry_run:
        from lifelong.platform.dry_run import print_dry_run

        print_dry_run(experiment, out)
        return
    with stage(err, "loading Ray Tune and MLflow", log=False):
        from lifelong.cluster.state import NothingToResume, resumable, retryable, state_dir
        from lifelong.cluster.sweep import ClusterConnectError, StorageFullStop, SweepInterrupted
        from lifelong.platform.mlflow_io import SPOOL_ENV, SpoolFullError
        from lifelong.platform.provenance import TAG_CHANGED, changed_files, describe_changes
        from lifelong.platform.runner import RunError, execute
    # read where the tracker is made (and by `lifelong sync`); restored after, for callers
    # that run several commands in one process
    with _env(SPOOL_ENV, None if spool_dir is None else str(spool_dir.expanduser().resolve())):
        name = experiment_name or experiment.name
        folder = state_dir(experiment_file, name, overrides=experiment.overrides)
        previous = state_file = None
        if resume and retry_failed:
            raise _bad_input(
                "--resume continues a stopped sweep, --retry-failed an ended one; give one"
            )
        if sweep is not None and not (resume or retry_failed):
            raise _bad_input(
                "--sweep picks the sweep that --resume (or --retry-failed) continues; give it too"
            )
        if resume or retry_failed:
            flag = "--resume" if resume else "--retry-failed"
            try:
                state_file, previous = (resumable if resume else retryable)(folder, sweep)
            except NothingToResume as e:
                raise _bad_input(f"{experiment_file}: {e}") from None
            if previous.file_sha256 != experiment.digest:
                raise _bad_input(
                    f"{experiment_file} (or its command-line overrides) changed since its sweep "
                    f"started; {flag} must run the same trials (give the same overrides, or run "
                    f"it without {flag} for a new sweep)"
                )
        if resume:
            changed = changed_files(previous.plugin_sha256, experiment.plugins)
            if changed and not allow_changed_plugins:
                raise _bad_input(
                    f"{experiment_file}: plugin code changed since sweep {previous.sweep_id} "
                    f"started ({describe_changes(changed)}); its finished trials ran the old "
                    "code. Continue with the new code: lifelong run "
                    f"{experiment_file} --resume --allow-changed-plugins (the resumed runs "
                    f"get the tag {TAG_CHANGED}), or start a new sweep: lifelong run "
                    f"{experiment_file}"
                )
        elif allow_changed_plugins and not retry_failed:
            raise _bad_input("--allow-changed-plugins applies to --resume; give --resume too")
        try:
            results = execute(
                experiment,
                address=address,
                tracking_uri=tracking_uri,
                experiment_name=name,
                num_cpus=num_cpus,
                storage=storage,
                resume=previous,
                state_file=state_file,
                state_folder=folder,
                in_process=in_process,
                console=err,
                retry_failed=retry_failed,
                log_model=log_model,
            )
        except (SpecError, RunError, ClusterConnectError) as e:
            raise _bad_input(str(e)) from None
        except StorageFullStop as e:
            done = ", ".join(e.finished) or "none"
            err.print(
                f"[bold red]error:[/] {escape(str(e))}. {len(e.finished)} of {e.total} trials "
                f"finished ({escape(done)}); the others are KILLED in MLflow. Free space there, "
                f"then continue with: lifelong run {experiment_file} --resume{_own_sweep(folder)}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None
        except SpoolFullError as e:
            err.print(f"[bold red]error:[/] {escape(e.strerror or str(e))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except (SweepInterrupted, KeyboardInterrupt) as e:
            again = "" if experiment.spec.tune else " --resume" + _own_sweep(folder)
            err.print(
                f"[bold yellow]stopped:[/] {escape(str(e) or 'interrupted')}; unfinished trials "
                f"are KILLED in MLflow, their checkpoints kept. Continue with: lifelong run "
                f"{experiment_file}{again}" + (f" --address {address}" if address else ""),
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(130) from None
        _print_results(results, experiment)


@contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    """Set environment variable ``name`` to ``value`` (unless None) for a block, then restore it."""
    before = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def ui_hint(uri: str, experiment: str | None = None) -> str:
    """How to open the MLflow UI on the store at ``uri``: a command, or the server's address.

    On a tracking server, with ``experiment`` (a name): the URL of its runs charted
    per strategy (the view :func:`lifelong.platform.ui_view.comparison_view_url` saves).
    """
    if uri.startswith(("http://", "https://")):
        if experiment is not None:
            try:
                return _comparison_url(uri, uri, experiment) + " (the tracking server's UI)"
            except (typer.Exit, Exception):  # noqa: BLE001 - a hint; the results are logged
                pass
        return f"{uri} (the tracking server serves it; open it in a browser)"
    from lifelong.platform.tracking import DEFAULT_TRACKING_URI, resolve_tracking_uri

    default = uri == resolve_tracking_uri(DEFAULT_TRACKING_URI)
    return "lifelong ui" + ("" if default else f" --tracking-uri {uri}")


def _own_sweep(folder: Path) -> str:
    """`` --sweep SWEEP_ID`` of the sweep this process drove, for the resume hint (else empty)."""
    from lifelong.cluster.state import sweep_states

    mine = [s.sweep_id for s in sweep_states(folder).values() if s.driver_pid == os.getpid()]
    return f" --sweep {mine[-1]}" if mine and mine[-1] else ""


def _print_results(results: Results, experiment: Experiment) -> None:
    """The end of ``lifelong run``: tables, failures, where to look; exit 1 if a trial failed."""
    from lifelong.platform.partial_metrics import PARTIAL_NOTE
    from lifelong.platform.summary import summarize
    from lifelong.platform.terminal_table import summary_table

    if results.tuned is not None:
        from lifelong.cluster.tuning import choices_table

        assert experiment.spec.tune is not None
        title = f"{results.experiment_name}: validation phase (hyperparameters chosen here)"
        out.print(choices_table(results.tuned, experiment.spec.tune, title))
    rows = summarize([_record(t) for t in results.trials])
    phase = "test phase, " if results.tuned is not None else ""
    title = f"{results.experiment_name}: {phase}final metrics, mean ± std over seeds"
    if rows:
        out.print(summary_table(rows, title=title, width=out.width))
    partial = sorted({t.label for t in results.trials if "eval/coverage" in t.metrics})
    if partial:
        out.print(Text(f"note: {', '.join(partial)}: {PARTIAL_NOTE}"), soft_wrap=True)
    failed = [(r.label, f) for r in rows for f in r.failed]
    for label, reason in failed:
        out.print(
            f"[red]FAILED[/] {escape(label)} {escape(reason)}", highlight=False, soft_wrap=True
        )
    out.print(
        f"Open the MLflow UI: {ui_hint(results.tracking_uri, results.experiment_name)}",
        highlight=False,
        soft_wrap=True,
    )
    if failed or not results.trials:
        raise typer.Exit(1)


def _record(t: TrialResult) -> TrialRecord:
    from lifelong.platform import metrics as M
    from lifelong.platform.summary import TrialRecord

    R = t.R
    finite = R is not None and np.isfinite(R).all()
    return TrialRecord(
        label=t.label,
        seed=t.seed,
        status=t.status,
        final=dict(t.metrics),
        curve=tuple(M.average_accuracy(R, i) for i in range(R.shape[0])) if finite else (),
        final_acc=tuple(float(v) for v in R[-1]) if finite else (),
        run_id=t.run_id,
        error=t.error,
    )


KINDS = ("strategies", "scenarios", "models")
SINGULAR = {"strategy": "strategies", "scenario": "scenarios", "model": "models"}


def _complete_kind(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of ``list``'s and ``show``'s first argument."""
    kinds = [*KINDS, "presets"] if ctx.command.name == "list" else list(SINGULAR)
    return [k for k in kinds if k.startswith(incomplete)]


def _complete_name(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of ``show``'s name: the registered names of the kind given."""
    from lifelong.platform.catalog import registry

    kind = SINGULAR.get(ctx.params.get("kind") or "", ctx.params.get("kind"))
    if kind not in KINDS:
        return []
    return [e.name for e in registry(kind).entries() if e.name.startswith(incomplete)]


PluginOption = Annotated[
    list[str] | None,
    typer.Option("--plugin", help="also load this plugin file or module (repeatable)"),
]


def _load_plugins(plugins: list[str] | None) -> None:
    from lifelong.platform.plugins import load_plugin

    for spec in plugins or []:
        load_plugin(spec, Path.cwd())


@app.command()
def sweeps(
    experiment_file: Annotated[Path, typer.Argument(help="experiment YAML file")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="the KEY=VALUE overrides its sweeps ran with", show_default=False),
    ] = None,
    experiment_name: ExperimentNameOption = None,
) -> None:
    """List the sweeps of an experiment file: running, stale (driver gone), stopped or ended."""
    from lifelong.cluster.state import state_dir
    from lifelong.cluster.sweeps import sweeps_table
    from lifelong.platform.spec import SpecError, load_experiment

    try:
        experiment = load_experiment(experiment_file, overrides or ())
    except SpecError as e:
        raise _bad_input(str(e)) from None
    folder = state_dir(
        experiment_file, experiment_name or experiment.name, overrides=experiment.overrides
    )
    table = sweeps_table(folder, experiment_file)
    if not table.row_count:
        err.print(f"no sweep of {experiment_file} yet (states: {folder})", highlight=False)
        return
    out.print(table)


@app.command("list")
def list_(
    kind: Annotated[
        str,
        typer.Argument(
            help="strategies, scenarios, models or presets", autocompletion=_complete_kind
        ),
    ],
    plugin: PluginOption = None,
) -> None:
    """List every registered strategy, scenario source or model (or the scenario presets)."""
    from lifelong.platform.catalog import list_table, presets_table
    from lifelong.platform.plugins import PluginError

    kind = SINGULAR.get(kind, kind)
    if kind in ("presets", "preset"):
        out.print(presets_table())
        return
    if kind not in KINDS:
        raise _bad_input(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    try:
        _load_plugins(plugin)
        out.print(list_table(kind))  # type: ignore[arg-type]
    except PluginError as e:
        raise _bad_input(str(e)) from None


@app.command()
def show(
    kind: Annotated[
        str, typer.Argument(help="strategy, scenario or model", autocompletion=_complete_kind)
    ],
    name: Annotated[str, typer.Argument(help="its registered name", autocompletion=_complete_name)],
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
    workers: Annotated[int, typer.Option(min=1, help="UI server processes")] = 1,
    experiment: Annotated[
        str | None,
        typer.Option(
            help="the MLflow experiment (name or id) to open on; default: the latest sweep's"
        ),
    ] = None,
) -> None:
    """Start the MLflow UI against the same store ``lifelong run`` logs to.

    It prints (and the URL opens on) the experiment's Model-training runs,
    charted per strategy: ``acc/avg`` grouped by the ``strategy`` tag, one
    averaged line per strategy (an MLflow saved view, ``docs/compare.md``).
    """
    from lifelong.platform.tracking import missing_store, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        raise _bad_input(f"{uri} is a tracking server already; open it in a browser")
    _check_port(host, port)
    shown = "127.0.0.1" if _unspecified(host) else host  # a URL a browser can open
    url = f"http://{shown}:{port}"
    if missing_store(uri) is None:  # a store with sweeps: open on the comparison
        url = _comparison_url(uri, url, experiment)
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
        "--workers",
        str(workers),
    ]
    err.print(f"MLflow UI on {url} (store {uri}); Ctrl-C stops it", highlight=False, soft_wrap=True)
    raise typer.Exit(serve(cmd))


def _unspecified(host: str) -> bool:
    """Whether ``host`` is the any-address (every interface), which no browser can open."""
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name
        return False


def _comparison_url(uri: str, base: str, experiment: str | None) -> str:
    """``base``'s URL of ``experiment``'s (default: the latest sweep's) runs per strategy."""
    from mlflow.tracking import MlflowClient

    from lifelong.platform.mlflow_io import find_experiment
    from lifelong.platform.ui_view import comparison_view_url, latest_sweep_experiment

    client = MlflowClient(uri)
    if experiment is None:
        found = latest_sweep_experiment(client)
    elif (named := find_experiment(client, experiment)) is None:
        raise _bad_input(f"--experiment: no MLflow experiment {experiment!r} in {uri}")
    else:
        found = named.experiment_id
    return base if found is None else comparison_view_url(base, client, found)


def _check_port(host: str, port: int) -> None:
    """Exit 2 when ``host:port`` is taken, before MLflow starts (it would only log the clash)."""
    if port_in_use(host, port):
        raise _bad_input(
            f"port {port} on {host} is in use (another MLflow server or UI?): stop it, or "
            "choose another with --port"
        )


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
    experiment_name: ExperimentNameOption = None,
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
    """Start an MLflow tracking server; sweeps on a cluster log to it with --tracking-uri.

    Ctrl-C or SIGTERM stops the server and every one of its processes.
    """
    _check_port(host, port)
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
    raise typer.Exit(serve(cmd))


@app.command()
def sync(
    spool: Annotated[
        list[Path] | None,
        typer.Argument(
            help="spool directories (default: every one under --spool-dir, .lifelong/spool "
            "beside the tracking store and .lifelong/spool here)"
        ),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="upload to this MLflow tracking URI instead of the one recorded"),
    ] = None,
    spool_dir: Annotated[
        Path | None,
        typer.Option(envvar="LIFELONG_SPOOL_DIR", help="the root `lifelong run --spool-dir` used"),
    ] = None,
) -> None:
    """Upload results a sweep kept on disk while its tracking store was down.

    Each spool directory is replayed in order; what was uploaded before is
    skipped, so running ``sync`` again duplicates nothing. A torn journal (cut
    by a crash or a full disk) is skipped and reported; the exit code is 1 when
    anything was left not uploaded.
    """
    from mlflow.exceptions import MlflowException

    from lifelong.platform.mlflow_io import (
        SPOOL_ROOT,
        TornJournalError,
        cause,
        default_spool_root,
        spool_dirs,
    )
    from lifelong.platform.mlflow_io import sync as sync_journal
    from lifelong.platform.tracking import resolve_tracking_uri

    if spool:
        dirs = list(spool)
    else:
        roots = [spool_dir] if spool_dir else []
        store = resolve_tracking_uri(tracking_uri)
        roots += [default_spool_root(store, env=False), SPOOL_ROOT.resolve()]
        dirs = list(dict.fromkeys(d.resolve() for r in roots for d in spool_dirs(r)))
    if not dirs:
        err.print("lifelong sync: nothing to upload (no spool directory found)")
        return
    failed = False
    for d in dirs:
        try:
            report = sync_journal(d, tracking_uri)
        except FileNotFoundError as e:
            raise _bad_input(str(e)) from None
        except TornJournalError as e:
            err.print(f"[red]skipped[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            failed = True
            continue
        except (MlflowException, OSError) as e:
            why = escape(cause(e))
            err.print(f"[red]not synced[/] {d}: {why}", highlight=False, soft_wrap=True)
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
