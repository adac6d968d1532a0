"""Property-based fuzzing of experiment files: every malformed file is rejected cleanly.

Hypothesis generates malformed experiment files (wrong types, missing and unknown
fields, out-of-range and huge numbers, unknown names, bad YAML, wrong nesting,
empty strings, Unicode) and runs each through what ``lifelong run`` checks
before anything starts (:func:`load_experiment`, then the stream build). Every
one must raise :class:`SpecError` naming the field (and the line, where the YAML
has one); no other exception may escape. A sample goes through the real CLI in
a fresh interpreter: exit code 2, no traceback, no MLflow store, no Ray.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifelong.platform.spec import SpecError, build_checked_stream, load_experiment

N_CASES = 600  # hypothesis examples per run (the issue asks for at least 500)

BASE: dict[str, Any] = {
    "name": "fuzz",
    "seeds": [0, 1],
    "scenario": {
        "source": "gaussian",
        "protocol": "class_incremental",
        "n_experiences": 2,
        "seed": 0,
        "options": {
            "n_classes": 4,
            "n_features": 5,
            "n_train_per_class": 10,
            "n_test_per_class": 5,
        },
    },
    "model": {"name": "mlp", "hidden": [8]},
    "training": {"epochs": 1, "batch_size": 8, "lr": 0.1, "optimizer": "sgd", "momentum": 0.0},
    "strategies": ["naive", {"l2": {"lambda": 0.5}}, ["l2", {"ewc": {"lambda": 1.0}}]],
    "resources": {"cpu": 1, "gpu": 0},
    "max_failures": 0,
}

# ------------------------------------------------------------- value generators
LETTERS = "abcxyzéßλ中🙂"
words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
# text that can never parse as a number or a bool (it holds a letter no literal uses)
nonsense = st.builds(lambda a, b: a + b, st.sampled_from("qzλ中🙂ß"), words)
huge_int = st.integers(min_value=10**12, max_value=10**40)
containers = st.one_of(
    st.lists(st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b", "λ"]), st.integers(), min_size=1, max_size=2),
)


def int_bad(lo: int, hi: int | None) -> st.SearchStrategy[Any]:
    """Values an int field in [lo, hi] must reject."""
    options = [
        st.integers(max_value=lo - 1, min_value=lo - 10**6),
        st.floats(min_value=0.1, max_value=1e6).filter(lambda f: f != int(f)),
        nonsense,
        containers,
        st.just(None),
        st.just(""),
    ]
    if hi is not None:
        options.append(st.integers(min_value=hi + 1, max_value=hi + 10**30))
    return st.one_of(options)


def float_bad(lo: float, hi: float | None, lo_open: bool) -> st.SearchStrategy[Any]:
    """Values a float field in [lo, hi] (or (lo, hi]) must reject."""
    below = st.floats(max_value=lo, min_value=-1e300, exclude_max=not lo_open)
    options = [below, st.just(float("nan")), nonsense, containers, st.just(None), st.just("")]
    if hi is not None:
        options += [st.floats(min_value=hi, exclude_min=True, max_value=1e300)]
        options += [st.just(float("inf"))]
    return st.one_of(options)


def enum_bad(known: list[str]) -> st.SearchStrategy[Any]:
    """Unknown names (Unicode, empty, near misses) and wrong types."""
    near = st.sampled_from([k + "x" for k in known] + [k.upper() for k in known])
    return st.one_of(nonsense, near, st.just(""), st.integers(), containers, st.just(None)).filter(
        lambda v: v not in known
    )


bool_bad = st.one_of(nonsense, containers, st.floats(min_value=2, max_value=1e9))

# path in BASE -> invalid values for it
FIELDS: dict[tuple[Any, ...], st.SearchStrategy[Any]] = {
    ("name",): st.one_of(
        st.just(""),
        st.just(" "),
        st.text(min_size=251, max_size=300, alphabet=LETTERS),
        st.builds(lambda a: a + "\x00", words),
        st.integers(),
        containers,
    ),
    ("seeds",): st.one_of(
        st.integers(max_value=0, min_value=-(10**9)),
        huge_int,
        st.lists(st.integers(min_value=-100, max_value=-1), min_size=1, max_size=3),
        st.lists(st.integers(min_value=2**32, max_value=2**70), min_size=1, max_size=2),
        st.just([]),
        st.just([3, 3]),
        nonsense,
        st.dictionaries(st.just("n"), st.integers(), min_size=1),
    ),
    ("scenario", "source"): enum_bad(["gaussian", "digits", "mnist1d", "arrays", "avalanche"]),
    ("scenario", "protocol"): enum_bad(
        ["class_incremental", "task_incremental", "domain_incremental"]
    ),
    ("scenario", "n_experiences"): int_bad(1, 4),  # 4 classes: at most 4 experiences
    ("scenario", "seed"): int_bad(0, 2**32 - 1),
    ("scenario", "transform"): enum_bad(["permuted", "rotated", "shuffled_labels"]),
    ("scenario", "max_angle"): float_bad(0, 360, lo_open=True),
    ("scenario", "options", "n_classes"): int_bad(2, 100_000),
    ("scenario", "options", "n_features"): int_bad(1, 1_000_000),
    ("scenario", "options", "n_train_per_class"): int_bad(1, 10_000_000),
    ("scenario", "options", "separation"): float_bad(0, None, lo_open=True),
    ("model", "name"): enum_bad(["mlp", "cnn", "transformer"]),
    ("model", "hidden"): st.one_of(
        st.just([]),
        st.lists(st.integers(max_value=0, min_value=-100), min_size=1, max_size=3),
        st.lists(huge_int, min_size=1, max_size=2),
        nonsense,
        st.lists(nonsense, min_size=1, max_size=2),
    ),
    ("model", "multi_head"): bool_bad,
    ("training", "epochs"): int_bad(1, 10_000),
    ("training", "batch_size"): int_bad(1, 1_000_000),
    ("training", "eval_batch_size"): int_bad(1, 1_000_000),
    ("training", "lr"): float_bad(0, 100, lo_open=True),
    ("training", "momentum"): st.one_of(float_bad(0, None, lo_open=False), st.just(1.0)),
    ("training", "weight_decay"): float_bad(0, 1, lo_open=False),
    ("training", "optimizer"): enum_bad(["sgd", "adam"]),
    ("training", "accelerator"): enum_bad(["auto", "cpu", "cuda"]),
    ("training", "precision"): enum_bad(["32-true", "bf16-mixed"]),
    ("training", "reset_optimizer"): st.one_of(bool_bad, st.just(None)),
    ("resources", "cpu"): float_bad(0, 1024, lo_open=True),
    ("resources", "gpu"): float_bad(0, 64, lo_open=False),
    ("resources", "workers"): int_bad(1, 1024),
    ("max_failures",): int_bad(0, 100),
    ("max_concurrent_trials",): st.one_of(
        st.integers(max_value=0, min_value=-10), nonsense, containers
    ),
    ("strategies",): st.one_of(
        st.just([]), st.just(None), nonsense, st.dictionaries(st.just("naive"), st.none())
    ),
    ("strategies", 0): st.one_of(
        enum_bad(["naive", "l2", "ewc", "si", "mas", "lwf", "center_loss", "spectral"]),
        st.just([]),
        st.just({"naive": None, "l2": None}),
    ),
    ("strategies", 1, "l2", "lambda"): st.one_of(
        float_bad(0, None, lo_open=False), st.just(float("inf"))
    ),
    ("strategies", 1, "l2", "anchor"): enum_bad(["previous", "initial"]),
    ("strategies", 1, "l2"): st.one_of(nonsense, st.lists(st.integers(), min_size=1)),
    ("strategies", 2, 1, "ewc", "lambda"): float_bad(0, None, lo_open=False),
    ("strategies", 2, 1, "ewc", "mode"): enum_bad(["separate", "online"]),
    ("plugins",): st.one_of(
        nonsense,
        st.lists(st.builds(lambda w: f"missing_plugin_{abs(hash(w))}.py", words), min_size=1),
        st.lists(st.integers(), min_size=1, max_size=2),
        st.just([""]),
    ),
}

SECTIONS: list[tuple[Any, ...]] = [
    (),
    ("scenario",),
    ("scenario", "options"),
    ("model",),
    ("training",),
    ("resources",),
    ("strategies", 1, "l2"),
    ("strategies", 2, 1, "ewc"),
]
KNOWN_KEYS = {
    "name", "plugins", "seeds", "scenario", "model", "training", "strategies", "resources",
    "max_failures", "max_concurrent_trials",
}  # fmt: skip


def get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def put(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    get(doc, path[:-1])[path[-1]] = value


def render(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# ----------------------------------------------------------- case generators
@st.composite
def bad_value(draw: st.DrawFn) -> tuple[str, str, str]:
    path = draw(st.sampled_from(sorted(FIELDS, key=str)))
    value = draw(FIELDS[path])
    doc = copy.deepcopy(BASE)
    put(doc, path, value)
    if path[0] == "scenario" and path[1] in ("transform", "max_angle"):
        doc["scenario"]["protocol"] = "domain_incremental"
    # strategies[i] name mistakes are reported at the entry, not inside it
    field = render(path[:2]) if path[0] == "strategies" else path[0]
    return "wrong value", dump(doc), field


@st.composite
def unknown_field(draw: st.DrawFn) -> tuple[str, str, str]:
    section = draw(st.sampled_from(SECTIONS))
    doc = copy.deepcopy(BASE)
    target = get(doc, section)
    key = draw(st.one_of(nonsense, st.sampled_from(["epochs", "lambda_", "sources", "Name"])))
    if key in target or (not section and key in KNOWN_KEYS):
        key = key + "_zz"
    target[key] = draw(st.one_of(st.integers(), words, containers))
    shown = key if key.isprintable() else repr(key)[1:-1]  # as the message shows it
    return "unknown field", dump(doc), render(section) or shown[:60]


@st.composite
def missing_field(draw: st.DrawFn) -> tuple[str, str, str]:
    doc = copy.deepcopy(BASE)
    choice = draw(st.sampled_from(["strategies", "arrays path", "strategies null"]))
    if choice == "strategies":
        del doc["strategies"]
        return "missing field", dump(doc), "strategies"
    if choice == "strategies null":
        doc["strategies"] = None
        return "missing field", dump(doc), "strategies"
    doc["scenario"] = {"source": "arrays", "n_experiences": 2, "options": {}}
    return "missing field", dump(doc), "scenario.options.path"


@st.composite
def wrong_nesting(draw: st.DrawFn) -> tuple[str, str, str]:
    doc = copy.deepcopy(BASE)
    kind = draw(st.integers(0, 4))
    if kind == 0:  # a section as a list or scalar
        section = draw(st.sampled_from(["scenario", "model", "training", "resources"]))
        doc[section] = draw(st.one_of(st.lists(st.integers(), max_size=2), nonsense, huge_int))
        return "wrong nesting", dump(doc), section
    if kind == 1:  # a field moved into the wrong section
        src, dst = draw(
            st.sampled_from(
                [("training", "scenario"), ("scenario", "model"), ("model", "training")]
            )
        )
        key = next(iter(BASE[src]))
        doc[dst][key] = copy.deepcopy(BASE[src][key])
        return "wrong nesting", dump(doc), f"{dst}.{key}"
    if kind == 2:  # a top-level field moved into a section
        doc["training"]["seeds"] = doc.pop("seeds")
        return "wrong nesting", dump(doc), "training.seeds"
    if kind == 3:  # deep lists where a strategy name belongs
        depth = draw(st.integers(2, 60))
        entry: Any = "naive"
        for _ in range(depth):
            entry = [entry]
        doc["strategies"] = [entry]
        return "wrong nesting", dump(doc), "strategies[0]"
    doc["strategies"] = {"naive": None, "l2": {"lambda": 1}}  # a mapping, not a list
    return "wrong nesting", dump(doc), "strategies"


BREAKERS = [
    ("  name: [unclosed\n", "unclosed bracket"),
    ('name: "unterminated\n', "unterminated quote"),
    ("name: {a: 1\n", "unclosed brace"),
    ("\tname: tab\n", "tab indentation"),
    ("seeds: *nowhere\n", "undefined alias"),
    ("name: !!python/object/apply:os.system ['touch pwned']\n", "python tag"),
    ("name: !!python/name:os.system\n", "python tag"),
    ("- item\n", "list inside a mapping"),
    ("name: fuzz\n", "duplicate key"),
    ("name: a\n  b: c\n", "bad indentation"),
    ("---\nname: second\n", "two documents"),
    ("name: \x00\n", "NUL character"),
    ("key: : value\n", "bad mapping value"),
]


@st.composite
def bad_yaml(draw: st.DrawFn) -> tuple[str, str, str]:
    text = dump(BASE)
    breaker, _why = draw(st.sampled_from(BREAKERS))
    lines = text.splitlines(keepends=True)
    top = [i for i, ln in enumerate(lines) if ln[:1].isalpha()]  # top-level key lines
    at = draw(st.sampled_from(top + [len(lines)]))
    return "bad YAML", "".join(lines[:at]) + breaker + "".join(lines[at:]), ""


@st.composite
def not_a_mapping(draw: st.DrawFn) -> tuple[str, str, str]:
    value = draw(
        st.one_of(
            st.lists(words, max_size=3),
            st.integers(),
            nonsense,
            st.just(None),
            st.just([BASE]),
        )
    )
    return "not a mapping", "" if value is None else dump(value), ""


@st.composite
def unicode_names(draw: st.DrawFn) -> tuple[str, str, str]:
    doc = copy.deepcopy(BASE)
    name = draw(nonsense)
    where = draw(st.sampled_from(["strategy", "source", "model", "param"]))
    if where == "strategy":
        doc["strategies"][0] = name
        return "unicode name", dump(doc), "strategies[0]"
    if where == "source":
        doc["scenario"]["source"] = name
        return "unicode name", dump(doc), "scenario.source"
    if where == "model":
        doc["model"]["name"] = name
        return "unicode name", dump(doc), "model.name"
    doc["strategies"][1] = {"l2": {name: 1.0}}
    return "unicode name", dump(doc), "strategies[1].l2"


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


CASES = st.one_of(
    bad_value(),
    bad_value(),
    bad_value(),
    unknown_field(),
    missing_field(),
    wrong_nesting(),
    bad_yaml(),
    not_a_mapping(),
    unicode_names(),
)


def check_rejected(path: Path, family: str, field: str) -> SpecError:
    """The CLI's checks on ``path`` raise SpecError naming ``field``, file and line."""
    try:
        build_checked_stream(load_experiment(path))
    except SpecError as e:
        error = e
    else:
        raise AssertionError(f"{family}: accepted:\n{path.read_text()}")
    text = str(error)
    assert error.problems and text.strip()
    assert all(line.startswith(str(path)) for line in text.splitlines()), text
    assert field in text, f"{family}: {field!r} not named in:\n{text}"
    readable = "cannot read" not in text
    assert not readable or all(line is not None for _, line, _ in error.problems), text
    return error


def test_base_file_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "base.yaml"
    path.write_text(dump(BASE))
    stream = build_checked_stream(load_experiment(path))
    assert len(stream) == 2


def test_malformed_experiment_files_are_rejected_cleanly(tmp_path: Path) -> None:
    seen: Counter[str] = Counter()
    path = tmp_path / "exp.yaml"

    @settings(
        max_examples=N_CASES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(CASES)
    def run(case: tuple[str, str, str]) -> None:
        family, text, field = case
        path.write_text(text, encoding="utf-8")
        check_rejected(path, family, field)
        seen[family] += 1

    run()
    total = sum(seen.values())
    print(f"\nfuzzed experiment files: {total} rejected cleanly; by kind: {dict(seen)}")
    assert total >= 500 and len(seen) == 7, seen


def test_non_utf8_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(dump(BASE).replace("fuzz", "f\xfcz").encode("latin-1"))
    error = check_rejected(path, "encoding", "")
    assert "cannot read" in str(error)


def test_python_tag_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = dump(BASE).replace(
        "name: fuzz", f"name: !!python/object/apply:os.system ['touch {marker}']"
    )
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    error = check_rejected(path, "python tag", "")
    assert re.search(r":1: invalid YAML: could not determine a constructor", str(error))
    assert "python/object/apply" in str(error) and "only plain YAML data" in str(error)
    assert not marker.exists()


# ------------------------------------------------------- the real CLI, fresh process
CLI_SAMPLE = [
    ("name",),
    ("seeds",),
    ("scenario", "source"),
    ("scenario", "n_experiences"),
    ("scenario", "options", "n_features"),
    ("model", "hidden"),
    ("training", "lr"),
    ("training", "epochs"),
    ("resources", "cpu"),
    ("strategies", 0),
    ("strategies", 1, "l2", "lambda"),
    ("plugins",),
]
CLI_VALUES: dict[tuple[Any, ...], list[Any]] = {
    ("name",): ["", "x" * 300, "a\x00b"],
    ("seeds",): [0, 10**20, [-1], [2**40]],
    ("scenario", "source"): ["gausian", "データ", 7],
    ("scenario", "n_experiences"): [0, 99, "two"],
    ("scenario", "options", "n_features"): [10**12, -3],
    ("model", "hidden"): [[], [10**9]],
    ("training", "lr"): [0, float("nan"), "fast"],
    ("training", "epochs"): [1.5, 10**9],
    ("resources", "cpu"): [0, {"n": 1}],
    ("strategies", 0): ["naïve", []],
    ("strategies", 1, "l2", "lambda"): [-1, float("inf")],
    ("plugins",): [["missing_plugin.py"], "plugin.py"],
}


def cli_cases() -> list[tuple[str, str]]:
    cases = []
    for path in CLI_SAMPLE:
        for value in CLI_VALUES[path]:
            doc = copy.deepcopy(BASE)
            put(doc, path, value)
            cases.append((render(path[:2]) if path[0] == "strategies" else path[0], dump(doc)))
    cases += [("", text) for text in ("strategies: [naive\n", "- a\n", "", "seeds: *x\n")]
    cases.append(("", dump(BASE).replace("name: fuzz", "name: !!python/name:os.system")))
    return cases


RUNNER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from typer.testing import CliRunner
    from lifelong.platform.cli import app

    results = []
    for i, (field, text) in enumerate(json.loads(Path(sys.argv[1]).read_text())):
        path = Path(f"case{i}.yaml")
        path.write_text(text, encoding="utf-8")
        r = CliRunner().invoke(app, ["run", str(path)])
        results.append({"code": r.exit_code, "out": r.output, "field": field, "file": str(path)})
    import ray
    results.append({"ray_initialized": ray.is_initialized()})
    print(json.dumps(results))
    """
)


def test_cli_sample_exits_2_without_traceback_mlflow_or_ray(tmp_path: Path) -> None:
    cases = cli_cases()
    work, scratch = tmp_path / "work", tmp_path / "scratch"
    work.mkdir()
    scratch.mkdir()
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = {
        **os.environ,
        "TMPDIR": str(scratch),
        "RAY_TMPDIR": str(scratch),
        "MLFLOW_TRACKING_URI": "",
    }
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tmp_path / "cases.json")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    *results, last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last == {"ray_initialized": False}
    assert len(results) == len(cases) >= 30
    for r in results:
        assert r["code"] == 2, r
        assert "Traceback" not in r["out"], r
        assert r["file"] in r["out"] and r["field"] in r["out"], r
    left = sorted(p.name for p in work.iterdir() if not p.name.startswith("case"))
    assert left == [], left  # no mlflow.db, mlruns/, .lifelong/ (Ray results)
    assert not list(scratch.rglob("session_*"))  # no Ray session was started
    # and the installed console script itself, once
    bad = work / "case0.yaml"
    script = Path(sys.executable).with_name("lifelong")
    proc = subprocess.run(
        [str(script), "run", str(bad)], cwd=work, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert f"{bad}:1: name:" in proc.stderr
    print(f"\nCLI sample: {len(results)} malformed files, all exit 2, no traceback/MLflow/Ray")
