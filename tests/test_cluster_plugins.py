"""A plugin file named in an experiment reaches the workers of a real two-node Ray cluster.

The module fixture starts its own Ray cluster on 127.0.0.1 (a head and a second
node, one CPU each, with `ray start --block` in their own process groups) and
stops exactly those processes afterwards; it never runs `ray stop`, which would
also end the session's `ray_instance` and anybody else's Ray.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

RAY = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
LIFELONG = shutil.which("lifelong") or str(Path(sys.executable).parent / "lifelong")

# The plugin lives only in the test's tmp_path. Its module name on a worker tells
# where it came from: `lifelong_shipped_<hash>.<...>` is the package lifelong puts
# in the job's runtime env (py_modules); `lifelong_plugin_<...>` would be the file
# loaded from its path on the driver's disk.
#
# Tiny trials finish before a second Ray worker has even started, and Tune then
# reuses the first trial's actor, so both trials would run on one node. The plugin
# therefore holds each trial at its first experience until `parties` trials have
# arrived (a file barrier: every node is on this host): the trials overlap, and
# with one CPU per node they must run on different nodes.
PLUGIN = '''\
"""Test plugin: a tiny loss term, and metrics saying how and with whom it ran."""

import os
import time
from pathlib import Path

from lifelong.strategies import Strategy, StrategyConfig, register_strategy

SHIPPED = __name__.startswith("lifelong_shipped_")


class WhereAmIConfig(StrategyConfig):
    """Where the trials meet before training (empty: they don't)."""

    barrier: str = ""
    parties: int = 1
    timeout: float = 60.0


@register_strategy("where_am_i")
class WhereAmI(Strategy):
    """Add a negligible weight penalty; report whether the module was shipped."""

    Config = WhereAmIConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.seen = 0

    def on_experience_start(self, ctx):
        """Wait (once) until `parties` trials have reached the barrier."""
        if not self.config.barrier or self.seen:
            return
        here = Path(self.config.barrier)
        here.mkdir(parents=True, exist_ok=True)
        (here / f"{os.getpid()}-{id(self)}").touch()
        deadline = time.monotonic() + self.config.timeout
        while True:
            self.seen = len(list(here.iterdir()))
            if self.seen >= self.config.parties or time.monotonic() > deadline:
                break
            time.sleep(0.1)

    def loss_terms(self, ctx, batch):
        """Return a tiny penalty, logged as loss/where_am_i."""
        return {"where_am_i": 1e-6 * sum(p.square().sum() for p in ctx.model.parameters())}

    def metrics(self):
        """Whether this module came from the shipped package; trials met at the barrier."""
        return {"shipped": 1.0 if SHIPPED else 0.0, "met": float(self.seen)}
'''

WAIT_FOR_NODES = """
import json, sys, time
import ray
ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False,
         logging_level="ERROR")
deadline = time.monotonic() + float(sys.argv[2])
while True:
    alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    if len(alive) >= 2 or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps(alive))
"""


@dataclass(frozen=True)
class Cluster:
    address: str
    node_ids: list[str]
    env: dict[str, str]  # what a client needs to join (its own auth token)


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _node_ports() -> list[str]:
    """Explicit ports for one node's services, so two nodes and the session's Ray never clash."""
    ports = _free_ports(6)
    names = (
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
        "--metrics-export-port",
    )
    return [arg for name, port in zip(names, ports, strict=True) for arg in (name, str(port))]


def _group(pgid: int) -> list[psutil.Process]:
    """The live (non-zombie) processes of process group ``pgid``."""
    members = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return members


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the process group ``proc`` leads: the node and every process it started."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    # The head's `ray start --block` can take 20 s and more to wind its GCS down
    # gracefully; this throwaway cluster does not need that.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader
        if not _group(proc.pid):
            break
        time.sleep(0.2)
    for p in _group(proc.pid):
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def two_node_cluster() -> Iterator[Cluster]:
    """A real Ray cluster of two 1-CPU nodes on 127.0.0.1, stopped at the end of the module."""
    temp = tempfile.mkdtemp(prefix="llc-", dir="/tmp")  # short: Ray's socket paths are long
    gcs_port, client_port = _free_ports(2)
    address = f"127.0.0.1:{gcs_port}"
    # Token authentication with a token of its own, given to every node and client of
    # this cluster through the environment (a joining `ray start` does not turn token
    # mode on by itself, and ~/.ray/auth_token need not exist).
    token = Path(temp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env |= {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--temp-dir", temp]
    procs: list[subprocess.Popen[bytes]] = []
    logs = [open(Path(temp) / f"{n}.log", "wb") for n in ("head", "node")]  # noqa: SIM115
    try:
        procs.append(
            subprocess.Popen(
                [RAY, "start", "--head", "--port", str(gcs_port), "--include-dashboard=false"]
                + ["--ray-client-server-port", str(client_port), "--disable-usage-stats"]
                + common
                + _node_ports()
                + ["--block"],
                env=env,
                stdout=logs[0],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        # The second node needs the head's GCS up; `ray start --address` retries for a while.
        procs.append(
            subprocess.Popen(
                [RAY, "start", "--address", address] + common + _node_ports() + ["--block"],
                env=env,
                stdout=logs[1],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        probe = subprocess.run(
            [sys.executable, "-c", WAIT_FOR_NODES, address, "60"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for p, name in zip(procs, ("head", "node"), strict=True):
            assert p.poll() is None, (
                f"ray {name} exited: {(Path(temp) / f'{name}.log').read_text()}"
            )
        assert probe.returncode == 0, probe.stderr[-3000:]
        node_ids = json.loads(probe.stdout.strip().splitlines()[-1])
        assert len(node_ids) == 2, f"cluster has nodes {node_ids}"
        yield Cluster(address, node_ids, env)
    finally:
        for p in reversed(procs):
            _stop(p)
        for f in logs:
            f.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_plugin_file_is_shipped_to_workers_on_both_nodes(
    two_node_cluster: Cluster, tmp_path: Path
) -> None:
    """`plugins: [file.py]` travels in the runtime env to the trials on every node.

    Two seeds of a plugin strategy at one CPU each, held until both have started,
    fill the two 1-CPU nodes, so the trial runs' `node_id` tags must name both
    nodes. Every trial logs the plugin's loss term and `where_am_i/shipped == 1.0`,
    which only a module imported from lifelong's shipped package (not the file on
    the driver's disk) reports; the driver's staged copy is removed at the end.
    Takes about a minute (two Ray nodes start).
    """
    (tmp_path / "where_am_i_plugin.py").write_text(PLUGIN)
    spec = {
        "name": "shipped",
        "plugins": ["where_am_i_plugin.py"],
        "seeds": 2,
        "scenario": {
            "source": "gaussian",
            "n_experiences": 2,
            "options": {
                "n_classes": 4,
                "n_features": 8,
                "n_train_per_class": 40,
                "n_test_per_class": 10,
            },
        },
        "model": {"hidden": [16]},
        "strategies": [{"where_am_i": {"barrier": str(tmp_path / "barrier"), "parties": 2}}],
        "resources": {"cpu": 1},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = dict(two_node_cluster.env)
    env.pop("MLFLOW_TRACKING_URI", None)
    staging = tmp_path / "tmp"  # where the driver copies the plugin files for Ray
    staging.mkdir()
    env["TMPDIR"] = str(staging)
    proc = subprocess.run(
        [LIFELONG, "run", "exp.yaml", "--address", two_node_cluster.address]
        + ["--tracking-uri", uri],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert not list(staging.glob("lifelong-plugins-*")), "the staged plugin copy was left behind"

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("shipped").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3
    trials = [r for r in runs if r.data.tags.get("lifelong.role") == "trial"]
    assert sorted(r.data.params["seed"] for r in trials) == ["0", "1"]
    assert {r.data.tags.get("node_id") for r in trials} == set(two_node_cluster.node_ids)
    for run in trials:
        for key in ("loss/where_am_i", "where_am_i/shipped", "where_am_i/met"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == [0, 1], (key, steps)
        assert run.data.metrics["loss/where_am_i"] > 0
        assert run.data.metrics["where_am_i/shipped"] == 1.0
        assert run.data.metrics["where_am_i/met"] == 2.0  # the two trials overlapped
