"""Run the strategy comparison and write its tables into docs/results.md.

    python benchmarks/comparison.py                   # run every sweep, then write
    python benchmarks/comparison.py --only-table      # rewrite the table from MLflow
    python benchmarks/comparison.py --tuned           # the tuned comparison (docs/tuning.md)

Each experiment file in examples/comparison/ is one stream (class-incremental
Split-Digits, domain-incremental Permuted MNIST-1D, task-incremental Split
MNIST-1D, the shuffled-labels plasticity stream; and HFT on a transformer) with
its strategies x 3 seeds.
The tables are read back from MLflow (the latest sweep of each experiment): mean
± sample std over seeds of the final metrics, and the sweep's wall time. They
replace the text between the ``<!-- tables:start -->`` and ``<!-- tables:end -->``
markers of docs/results.md; the discussion around them is left alone.

``--tuned`` runs ``examples/comparison/tuned/*.yaml`` instead: every strategy's
hyperparameter chosen on a validation stream, then re-run with seeds 0, 1, 2 on
the test stream. Its tables (the test phase, with the chosen values and the
validation score from the sweep's ``tuning.json``, and what the validation phase
cost) go between ``<!-- tuned:start -->`` and ``<!-- tuned:end -->``.

``--pretrained`` runs ``examples/pretrained/*.yaml`` (EfficientNet-Lite0 from
its ImageNet weights: frozen, fine-tuned, and Smith et al.'s recipe), tuned the
same way; its tables go between ``<!-- pretrained:start -->`` and
``<!-- pretrained:end -->``.

``--llm`` runs ``examples/llm/hft_smollm2.yaml`` (HFT, full fine-tuning, L2 and
EWC on SmolLM2-135M-Instruct over four text tasks; docs/language-models.md);
its table, with the general-text retention, goes between ``<!-- llm:start -->``
and ``<!-- llm:end -->``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "examples" / "comparison").glob("*.yaml"))
TUNED = sorted((ROOT / "examples" / "comparison" / "tuned").glob("*.yaml"))
PRETRAINED = [
    ROOT / "examples" / "pretrained" / f"{n}.yaml"
    for n in ("frozen_lite0", "finetune_lite0", "smith_lite0")
]
LLM = [ROOT / "examples" / "llm" / "hft_smollm2.yaml"]
METRICS = (
    "acc/avg",
    "forgetting/avg",
    "bwt",
    "plasticity/avg",
    "plasticity/fresh_avg",
    "retention/base_ppl",
    "retention/ppl",
    "retention/token_acc",
)


def run_all(uri: str, files: list[Path]) -> None:
    """Run every comparison sweep with the installed CLI."""
    cli = Path(sys.executable).parent / "lifelong"
    for f in files:
        t = time.perf_counter()
        subprocess.run([str(cli), "run", str(f), "--tracking-uri", uri], check=False)
        print(f"{f.name}: {time.perf_counter() - t:.0f} s", flush=True)


def _cells(done: list, shown: list[str]) -> list[str]:
    """``mean ± std`` over the finished runs ``done`` of each metric in ``shown``."""
    cells = []
    for m in shown:
        v = np.array([k.data.metrics[m] for k in done if m in k.data.metrics])
        cells.append(
            f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}" if len(v) else "—"
        )
    return cells


def sweep_table(client: MlflowClient, name: str, order: list[str]) -> tuple[str, list[str]]:
    """Markdown rows for the latest sweep of experiment ``name``, strategies in ``order``."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return f"(no runs for {name})", []
    parents = client.search_runs(
        [exp.experiment_id],
        "tags.`lifelong.role` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    parent = parents[0]
    kids = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    minutes = (parent.info.end_time - parent.info.start_time) / 60000
    labels = [label for label in order if any(k.data.params["strategy"] == label for k in kids)]
    shown = [m for m in METRICS if any(m in k.data.metrics for k in kids)]
    rows = ["| strategy | seeds | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]
    for label in labels:
        mine = [k for k in kids if k.data.params["strategy"] == label]
        done = [k for k in mine if k.info.status == "FINISHED"]
        cells = _cells(done, shown)
        failed = len(mine) - len(done)
        seeds = f"{len(done)}" + (f" ({failed} failed)" if failed else "")
        rows.append(f"| {label} | {seeds} | " + " | ".join(cells) + " |")
    head = f"sweep `{parent.data.tags.get('sweep')}`, {len(kids)} trials, {minutes:.1f} min"
    return head, rows


def _latest(client: MlflowClient, exp_id: str, phase: str):  # noqa: ANN202 - an mlflow Run
    runs = client.search_runs(
        [exp_id],
        f"tags.`lifelong.role` = 'sweep' and tags.`lifelong.phase` = '{phase}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def _short(key: str) -> str:
    """``strategy.ewc.lambda`` as ``lambda``; other keys as they are."""
    return key.split(".", 2)[-1] if key.startswith("strategy.") else key


def tuned_table(client: MlflowClient, name: str, order: list[str]) -> tuple[str, list[str]]:
    """Markdown rows of the latest tuned sweep of ``name``: the test phase, with the choices."""
    import json
    import tempfile

    exp = client.get_experiment_by_name(name)
    test = _latest(client, exp.experiment_id, "test") if exp else None
    if test is None:
        return f"(no tuned runs for {name})", []
    tune = client.get_run(test.data.tags["lifelong.tuned_by"])
    with tempfile.TemporaryDirectory() as d:
        path = client.download_artifacts(test.info.run_id, "tuning.json", d)
        choices = {c["strategy"]: c for c in json.loads(Path(path).read_text())}
    kids = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{test.info.run_id}'"
    )
    tuned = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{tune.info.run_id}'", max_results=5000
    )
    shown = [m for m in METRICS if any(m in k.data.metrics for k in kids)]
    rows = [
        "| strategy | chosen | validation acc/avg | tried (stopped) | seeds | "
        + " | ".join(shown)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(shown),
    ]
    for label in order:
        c = choices.get(label, {})
        mine = [k for k in kids if k.data.tags.get("lifelong.strategy_base") == label]
        done = [k for k in mine if k.info.status == "FINISHED"]
        cells = _cells(done, shown)
        values = ", ".join(
            f"{_short(k)}={v:.4g}" if isinstance(v, float) else f"{_short(k)}={v}"
            for k, v in c.get("values", {}).items()
        )
        score = c.get("validation_score")
        failed = len(mine) - len(done)
        seeds = f"{len(done)}" + (f" ({failed} failed)" if failed else "")
        rows.append(
            f"| {label} | {values or '—'} | {'—' if score is None else f'{score:.3f}'} | "
            f"{c.get('trials', 0)} ({c.get('stopped_early', 0)}) | {seeds} | "
            + " | ".join(cells)
            + " |"
        )
    t_tune = (tune.info.end_time - tune.info.start_time) / 60000
    t_test = (test.info.end_time - test.info.start_time) / 60000
    experiences = sum(c.get("experiences_trained", 0) for c in choices.values())
    head = (
        f"validation phase `{tune.data.tags.get('sweep')}`: {len(tuned)} trials, "
        f"{experiences} trial-experiences reported, {t_tune:.1f} min; test phase "
        f"`{test.data.tags.get('sweep')}`: {len(kids)} trials, {t_test:.1f} min"
    )
    return head, rows


def write_tables(
    uri: str, out: Path, *, tuned: bool = False, pretrained: bool = False, llm: bool = False
) -> str:
    """Render one table per comparison experiment (markdown)."""
    from lifelong.platform.spec import load_experiment

    client = MlflowClient(uri)
    parts = []
    for f in _files(tuned=tuned, pretrained=pretrained, llm=llm):
        exp = load_experiment(f)
        table = tuned_table if tuned or pretrained else sweep_table
        head, rows = table(client, exp.name, exp.labels())
        parts.append(
            f"### {exp.name}\n\n`{f.relative_to(ROOT)}`: {head}\n\n" + "\n".join(rows) + "\n"
        )
    text = "\n".join(parts)
    marker = "llm" if llm else "pretrained" if pretrained else "tuned" if tuned else "tables"
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    doc = out.read_text() if out.exists() else f"{start}\n{end}\n"
    head, rest = doc.split(start, 1)
    out.write_text(f"{head}{start}\n\n{text}\n{end}{rest.split(end, 1)[1]}")
    return text


def _files(*, tuned: bool, pretrained: bool, llm: bool) -> list[Path]:
    return LLM if llm else PRETRAINED if pretrained else TUNED if tuned else FILES


def main() -> None:
    """Run the sweeps (unless --only-table) and write the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'comparison.db'}")
    ap.add_argument("--only-table", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    ap.add_argument("--tuned", action="store_true", help="the tuned comparison instead")
    ap.add_argument("--pretrained", action="store_true", help="the pre-trained backbone sweeps")
    ap.add_argument("--llm", action="store_true", help="the language-model sweep (SmolLM2)")
    args = ap.parse_args()
    kinds = {"tuned": args.tuned, "pretrained": args.pretrained, "llm": args.llm}
    if not args.only_table:
        run_all(args.tracking_uri, _files(**kinds))
    print(write_tables(args.tracking_uri, args.out, **kinds))


if __name__ == "__main__":
    main()
