"""Every trial's run records the plugin code it ran; a resume never runs changed code unasked.

The sweep runs as its own ``lifelong run`` process joined to the session's Ray
instance, so its plugin file is shipped to the workers as a user's would be. A
strategy holds experience 1 until the test lets it go; the test stops the sweep
there (SIGINT, exit 130), edits the plugin and resumes: plain ``--resume`` is
refused naming the file, ``--resume --allow-changed-plugins`` finishes the trial
from its checkpoint with the new code, and its run says so.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.provenance import TAG_CHANGED

from conftest import tiny_experiment

LIFELONG = str(Path(sys.executable).parent / "lifelong")

PLUGIN = '''\
"""A strategy that waits at the start of experience 1 while the file 'hold' exists."""

import time
from pathlib import Path

from lifelong.strategies import Strategy, register_strategy

VERSION = {version}
GATE = Path({gate!r})


@register_strategy("gated")
class Gated(Strategy):
    """Reports its code's VERSION; holds experience 1 while GATE/hold exists."""

    def on_experience_start(self, ctx):
        """At experience 1: say so, then wait (at most 120 s) for the gate to open."""
        if ctx.experience.index == 1:
            (GATE / "reached").touch()
            deadline = time.monotonic() + 120
            while (GATE / "hold").exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    def metrics(self):
        """The plugin's version, logged as gated/version after every experience."""
        return {{"version": float(VERSION)}}
'''


def lifelong(cwd: Path, address: str, *args: str) -> subprocess.Popen[str]:
    """``lifelong run`` in its own process, joined to the session's Ray instance."""
    return subprocess.Popen(
        [LIFELONG, "run", "gated.yaml", "--address", address, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def test_runs_record_plugin_code_and_a_changed_plugin_is_refused_then_allowed(
    ray_instance: str, in_tmp: Path
) -> None:
    plugin = in_tmp / "gate.py"
    plugin.write_text(PLUGIN.format(version=1, gate=str(in_tmp)))
    old_sha = hashlib.sha256(plugin.read_bytes()).hexdigest()
    uri = f"sqlite:///{in_tmp / 'mlflow.db'}"
    spec = tiny_experiment("provenance", ["gate.py"], ["gated"])
    (in_tmp / "gated.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (in_tmp / "hold").touch()
    proc = lifelong(in_tmp, ray_instance, "--tracking-uri", uri)
    deadline = time.monotonic() + 180
    while not (in_tmp / "reached").exists():
        assert proc.poll() is None and time.monotonic() < deadline, finish(proc)[1][-3000:]
        time.sleep(0.1)
    client = MlflowClient(uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("provenance").experiment_id],
        filter_string="tags.`lifelong.role` = 'trial'",
    )
    assert run.data.tags["lifelong.plugin.gate.py.sha256"] == old_sha
    shipped = client.download_artifacts(run.info.run_id, "plugins/gate.py", str(in_tmp / "a"))
    assert Path(shipped).read_text() == plugin.read_text()
    proc.send_signal(signal.SIGINT)
    rc, out = finish(proc)
    assert rc == 130, out[-3000:]
    assert client.get_run(run.info.run_id).info.status == "KILLED"

    plugin.write_text(PLUGIN.format(version=2, gate=str(in_tmp)))
    (in_tmp / "hold").unlink()
    rc, out = finish(lifelong(in_tmp, ray_instance, "--tracking-uri", uri, "--resume"))
    assert rc == 2, out[-3000:]
    message = " ".join(out.split())
    assert f"{plugin}: sha256 {old_sha[:12]} -> " in message, message
    assert "--resume --allow-changed-plugins" in message and "Traceback" not in out
    assert client.get_run(run.info.run_id).info.status == "KILLED"  # nothing touched

    rc, out = finish(
        lifelong(in_tmp, ray_instance, "--tracking-uri", uri, "--resume", "--allow-changed-plugins")
    )
    assert rc == 0, out[-3000:]
    assert "ModuleNotFoundError" not in out
    done = client.get_run(run.info.run_id)
    assert done.info.status == "FINISHED"
    assert "lifelong.error" not in done.data.tags  # the stale "stopped before" reason is gone
    new_sha = hashlib.sha256(plugin.read_bytes()).hexdigest()
    assert done.data.tags["lifelong.plugin.gate.py.sha256"] == new_sha
    assert f"{plugin}: sha256 {old_sha[:12]} -> {new_sha[:12]}" in done.data.tags[TAG_CHANGED]
    shipped = client.download_artifacts(run.info.run_id, "plugins/gate.py", str(in_tmp / "b"))
    assert Path(shipped).read_text() == plugin.read_text()
    versions = {
        m.step: m.value for m in client.get_metric_history(run.info.run_id, "gated/version")
    }
    assert versions == {0: 1.0, 1: 2.0}  # experience 0 ran the old code, 1 the new
    compared = CliRunner().invoke(app, ["compare", done.info.experiment_id, "--tracking-uri", uri])
    assert compared.exit_code == 0, compared.output
    assert "resumed with changed plugin code" in " ".join(compared.stderr.split())


def test_package_versions_and_changed_files(tmp_path: Path) -> None:
    import importlib.metadata as md

    from lifelong.platform.plugins import PluginRef
    from lifelong.platform.provenance import changed_files, file_hashes, package_versions, tags

    assert package_versions([PluginRef("yaml")]) == {"PyYAML": md.version("PyYAML")}
    assert tags([PluginRef("yaml")]) == {"lifelong.plugin_package.PyYAML": md.version("PyYAML")}
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 1\n")
    refs = [PluginRef("ma", str(a)), PluginRef("mb", str(b))]
    before = file_hashes(refs)
    assert changed_files(before, refs) == {}
    assert changed_files({}, refs) == {}  # nothing recorded: nothing to compare
    b.write_text("y = 2\n")
    assert list(changed_files(before, refs)) == [str(b)]
    b.unlink()
    assert changed_files(before, refs)[str(b)] == (before[str(b)], "missing")
    assert changed_files(before, refs[:1]) == {str(b): (before[str(b)], "none")}
