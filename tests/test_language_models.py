"""Language models learn continually: text-task streams, LM strategies, HFT on LLaMA blocks.

A tiny LLaMA model and tokenizer that the tests make and save (``tiny_lm.py``)
stand in for a real one everywhere except ``test_smollm2_completes_a_known_prompt``,
which loads the packaged SmolLM2-135M-Instruct weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from test_sweep_e2e import children
from tiny_lm import make_tiny_lm
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig, build_model
from lifelong.platform.spec import SpecError, build_checked_stream, parse_experiment
from lifelong.platform.task_loss import IGNORE, exact_match
from lifelong.scenarios.text import encode
from lifelong.strategies import build_strategy
from lifelong.strategies.hft import select_frozen


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("lm") / "tiny")


def spec_text(
    path: Path,
    *,
    strategies: str = "[naive]",
    tasks: str = "[arithmetic, reverse]",
    extra: str = "",
) -> str:
    return f"""
seeds: [0]
scenario:
  source: text_tasks
  options: {{tasks: {tasks}, n_train: 16, n_test: 8}}
model: {{name: hf_causal_lm, path: {path}}}
training: {{epochs: 1, batch_size: 8, optimizer: adam, lr: 0.003, eval_batch_size: 8}}
strategies: {strategies}
{extra}
"""


def problems(text: str) -> str:
    with pytest.raises(SpecError) as e:
        parse_experiment(text)
    return str(e.value)


# ----------------------------------------------------------------- the file
def test_model_fields_are_checked(tiny: Path) -> None:
    with pytest.raises(ValueError, match="needs `path`"):
        ModelConfig(name="hf_causal_lm")
    with pytest.raises(ValueError, match="takes no path"):
        ModelConfig(name="smollm2_135m", path=str(tiny))
    with pytest.raises(ValueError, match="hidden: not for the language model"):
        ModelConfig(name="hf_causal_lm", path=str(tiny), hidden=[8])
    with pytest.raises(ValueError, match="freeze: 'backbone'"):
        ModelConfig(name="hf_causal_lm", path=str(tiny), freeze="backbone")
    with pytest.raises(ValueError, match="only for model 'hf_causal_lm'"):
        ModelConfig(name="mlp", path=str(tiny))
    dumped = ModelConfig(name="hf_causal_lm", path=str(tiny)).model_dump()
    assert dumped == {"name": "hf_causal_lm", "path": str(tiny), "freeze": "none"}
    assert "path" not in ModelConfig().model_dump()  # built-ins log the params they did


def test_language_model_and_text_stream_go_together(tiny: Path, tmp_path: Path) -> None:
    text = spec_text(tiny)
    digits = text.replace("source: text_tasks", "source: digits").replace(
        "options: {tasks: [arithmetic, reverse], n_train: 16, n_test: 8}", "n_experiences: 2"
    )
    assert "needs a text stream" in problems(digits)
    assert "text_tasks needs a language model" in problems(
        text.replace(f"{{name: hf_causal_lm, path: {tiny}}}", "{name: mlp}")
    )
    out = problems(spec_text(tiny, strategies="[naive, center_loss, lwf]"))
    assert "'center_loss' does not apply to a language model: its class centres" in out
    assert "'lwf' does not apply to a language model" in out
    out = problems(spec_text(tiny, strategies="[naive, {avalanche.EWC: {ewc_lambda: 1.0}}]"))
    assert "avalanche.EWC run Avalanche's classification loop" in out
    assert "use cross_entropy" in problems(
        text.replace("eval_batch_size: 8}", "eval_batch_size: 8, task_loss: bce_seen}")
    )
    assert "is not a model directory" in problems(text.replace(str(tiny), str(tmp_path)))
    assert "unknown task 'nope'" in problems(spec_text(tiny, tasks="[arithmetic, nope]"))
    assert "no file" in problems(spec_text(tiny, tasks=f"[{tmp_path / 'missing.jsonl'}]"))


def test_unsupported_or_searched_models_are_refused_when_read(tiny: Path, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=64)).save_pretrained(gpt2)
    out = problems(spec_text(tiny).replace(str(tiny), str(gpt2)))
    assert "model.path" in out and "not GPT-2's" in out
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((tiny / "config.json").read_text())
    assert "has no weights" in problems(spec_text(tiny).replace(str(tiny), str(tmp_path / "empty")))
    searched = spec_text(tiny).replace(f"path: {tiny}}}", f"path: {{grid: [{tiny}, {gpt2}]}}}}")
    assert "search no model field" in problems(searched)
    explicit = spec_text(tiny).replace(
        "source: text_tasks", "source: text_tasks\n  protocol: class_incremental"
    )
    assert "a text stream is task_incremental" in problems(explicit)


def test_perplexity_ranks_lower_first() -> None:
    from lifelong.platform.summary import lower_is_better

    assert lower_is_better("retention/ppl") and lower_is_better("retention/base_ppl")
    assert not lower_is_better("retention/token_acc")


def test_refused_strategy_exits_2_before_anything_starts(tiny: Path, in_tmp: Path) -> None:
    (in_tmp / "lm.yaml").write_text(spec_text(tiny, strategies="[center_loss]"))
    result = CliRunner().invoke(app, ["run", str(in_tmp / "lm.yaml")])
    assert result.exit_code == 2, result.output
    assert "lm.yaml" in result.output and "does not apply to a language model" in result.output
    assert not (in_tmp / "mlflow.db").exists() and not (in_tmp / ".lifelong").exists()


def test_language_defaults_for_hft_and_ewc(tiny: Path) -> None:
    exp = parse_experiment(
        spec_text(tiny, strategies="[hft, ewc, {hft: {first_experience_full: true}}]")
    )
    params = [dict(t.strategies[0].params) for t in exp.trials()]
    assert params[0]["first_experience_full"] is False  # the paper's HFT on a pre-trained model
    assert params[1]["fisher_batch_size"] == 8
    assert params[2]["first_experience_full"] is True  # what the file says wins
    plain = parse_experiment(
        spec_text(tiny)
        .replace("source: text_tasks", "source: digits")
        .replace(
            "options: {tasks: [arithmetic, reverse], n_train: 16, n_test: 8}", "n_experiences: 2"
        )
        .replace(f"{{name: hf_causal_lm, path: {tiny}}}", "{name: mlp}")
        .replace("[naive]", "[hft, ewc]")
    )
    assert [
        dict(t.strategies[0].params)[k]
        for t, k in zip(plain.trials(), ["first_experience_full", "fisher_batch_size"], strict=True)
    ] == [True, 256]


# --------------------------------------------------------------- the stream
def test_text_stream_scores_response_tokens_only(tiny: Path) -> None:
    exp = parse_experiment(spec_text(tiny))
    stream = build_checked_stream(exp)
    from lifelong.platform.models.language import load_tokenizer

    tok = load_tokenizer("hf_causal_lm", str(tiny))
    assert len(stream) == 2 and stream.protocol == "task_incremental"
    assert stream.n_classes == len(tok) and stream.info["kind"] == "text"
    e = stream[0]
    assert e.x_train.dtype == torch.int64 and e.x_train.shape == (16, stream.input_shape[0])
    for k in range(3):
        ids, labels = e.x_train[k], e.y_train[k]
        scored = labels != IGNORE
        # the scored labels are the response then the end of sequence, each the next token
        response = tok.decode(labels[scored][:-1])
        assert labels[scored][-1] == tok.eos_token_id
        prompt = tok.decode(ids[: int(scored.nonzero()[0]) + 1])
        assert prompt.startswith("Add the two numbers") and "+" in prompt
        a, b = prompt.split("\n")[1].split(" + ")
        assert int(response) == int(a) + int(b)
        pos = scored.nonzero().flatten()
        assert torch.equal(labels[pos], ids[pos + 1])
    short = parse_experiment(spec_text(tiny).replace("n_test: 8}", "n_test: 8, system: ''}"))
    assert torch.equal(build_checked_stream(short)[0].x_train, e.x_train)  # no chat template
    again = build_checked_stream(exp)
    assert torch.equal(again[1].x_test, stream[1].x_test)
    assert stream.info["general"]["x"].shape[0] >= 5


def test_user_task_from_jsonl(tiny: Path, tmp_path: Path) -> None:
    rows = [{"prompt": f"Say {w} twice.", "response": f"{w} {w}"} for w in "abcdefghij"]
    file = tmp_path / "twice.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    stream = build_checked_stream(parse_experiment(spec_text(tiny, tasks=f"[arithmetic, {file}]")))
    assert stream.info["tasks"] == ["arithmetic", str(file)]
    assert stream[1].n_train + stream[1].n_test == 10
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    bad = parse_experiment(spec_text(tiny, tasks=f"[{tmp_path / 'bad.jsonl'}]"))
    with pytest.raises(SpecError) as e:  # the data is read when the stream is built
        build_checked_stream(bad)
    assert "scenario.options.tasks[0]" in str(e.value)
    assert "bad.jsonl:1" in str(e.value) and "response" in str(e.value)


def test_exact_match_equals_greedy_decoding(tiny: Path) -> None:
    """Teacher-forced exact match is true exactly when greedy decoding yields the response."""
    from transformers import AutoModelForCausalLM

    from lifelong.platform.models.language import load_tokenizer

    tok = load_tokenizer("hf_causal_lm", str(tiny))
    hf = AutoModelForCausalLM.from_pretrained(tiny).eval()
    model = build_model(ModelConfig(name="hf_causal_lm", path=str(tiny)), (8,), len(tok)).eval()
    prompt = "Write the word backwards.\ntable"
    ids, start = encode(tok, prompt, "")
    head = torch.tensor([ids[:start]])
    greedy = hf.generate(head, max_new_tokens=6, do_sample=False, eos_token_id=None)[0, start:]
    response = greedy.tolist()
    row = torch.tensor([ids[:start] + response])
    labels = torch.full_like(row, IGNORE)
    labels[0, start - 1 : -1] = torch.tensor(response)
    with torch.no_grad():
        logits = model(row)
    assert exact_match(logits, labels).tolist() == [True]
    wrong = labels.clone()
    wrong[0, start + 2] = (wrong[0, start + 2] + 1) % len(tok)
    assert exact_match(logits, wrong).tolist() == [False]


# -------------------------------------------------------------- strategies
@pytest.mark.parametrize("name", ["naive", "l2", "ewc", "si", "mas", "hft", "spectral"])
def test_strategies_train_a_language_model_and_resume_exactly(tiny: Path, name: str) -> None:
    exp = parse_experiment(
        spec_text(tiny, strategies=f"[{name}]", tasks="[arithmetic, caesar, reverse]")
    )
    stream = build_checked_stream(exp)
    (trial,) = exp.trials()

    def learner() -> Learner:
        strategies = [build_strategy(s.name, s.params) for s in trial.strategies]
        return Learner(stream, exp.spec.model, strategies, exp.spec.training, trial.seed)

    whole = learner()
    R = whole.fit()
    assert np.isfinite(R).all() and ((R >= 0) & (R <= 1)).all()
    with torch.no_grad():  # the learner's exact match (LM head at scored positions only)
        full = [  # equals the full logits' exact match
            float(exact_match(whole.model(e.x_test), e.y_test).double().mean()) for e in stream
        ]
    np.testing.assert_allclose(whole.evaluate(), full)
    assert set(whole.retention) == {"ppl", "token_acc"} and whole.retention["ppl"] > 1
    assert whole.retention_base["ppl"] != whole.retention["ppl"]  # training moved it
    first = learner()
    first.evaluate_untrained()
    first.run_experience(0)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"lm-{name}-{os.getpid()}.pt"
    torch.save(first.state_dict(), path)
    resumed = learner()
    resumed.load_state_dict(torch.load(path, weights_only=True))
    path.unlink()
    np.testing.assert_array_equal(resumed.fit(), R)
    assert resumed.retention == whole.retention


def test_ewc_fisher_on_text_is_a_batch_fisher(tiny: Path) -> None:
    from lifelong.platform.task_loss import lm_cross_entropy
    from lifelong.strategies._importance import batch_fisher

    exp = parse_experiment(spec_text(tiny))
    stream = build_checked_stream(exp)
    model = build_model(exp.spec.model, stream.input_shape, stream.n_classes)
    x, y = stream[0].x_train[:16], stream[0].y_train[:16]
    fisher = batch_fisher(model, x, y, batch_size=8)
    name = "body.layers.0.mlp.up_proj.weight"
    expected = torch.zeros_like(fisher[name])
    param = dict(model.named_parameters())[name]
    model.eval()
    for chunk in (slice(0, 8), slice(8, 16)):
        (g,) = torch.autograd.grad(lm_cross_entropy(model(x[chunk]), y[chunk]), [param])
        expected += g.square() / 2
    torch.testing.assert_close(fisher[name], expected)


# ---------------------------------------------------------------------- HFT
def _kinds(frozen: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in frozen:
        parts = n.split(".")
        key = parts[2] if parts[1] == "layers" else parts[1]
        out.setdefault(key, []).append(n)
    return out


def test_hft_freezes_llama_blocks_as_the_paper_says(tmp_path: Path) -> None:
    folder = make_tiny_lm(tmp_path / "four", layers=4)
    model = build_model(ModelConfig(name="hf_causal_lm", path=str(folder)), (8,), 10)
    draws = []
    for experience in range(4):
        frozen = select_frozen(model, seed=3, experience=experience, fraction=0.5)
        draws.append(frozen)
        per_layer = _kinds(frozen)
        for layer in map(str, range(4)):
            names = per_layer.get(layer, [])
            attn = [n for n in names if ".self_attn." in n]
            ff = [n for n in names if ".mlp." in n]
            norms = [n for n in names if "layernorm" in n]
            assert len(attn) == 2, (layer, attn)  # 2 of q, k, v, o
            assert len(ff) in (1, 2), (layer, ff)
            assert len(norms) == 1, (layer, norms)  # half of the norms
        ff_counts = sorted(len([n for n in per_layer[str(i)] if ".mlp." in n]) for i in range(4))
        assert ff_counts == [1, 1, 2, 2]  # 2 of 3 in half of the layers, 1 in the other half
        assert "body.norm.weight" not in frozen
        assert "body.embed_tokens.weight" not in frozen  # tied with the LM head: one unit
    assert len({tuple(d) for d in draws}) > 1  # redrawn per stage


def test_hft_freezes_one_of_untied_embedding_and_lm_head(tmp_path: Path) -> None:
    from transformers import AutoConfig, LlamaForCausalLM

    folder = make_tiny_lm(tmp_path / "tied")
    config = AutoConfig.from_pretrained(folder)
    config.tie_word_embeddings = False
    untied = tmp_path / "untied"
    LlamaForCausalLM(config).save_pretrained(untied)
    for f in folder.glob("tokenizer*"):
        (untied / f.name).write_bytes(f.read_bytes())
    model = build_model(ModelConfig(name="hf_causal_lm", path=str(untied)), (8,), 10)
    assert not model.tied
    for experience in range(3):
        frozen = set(select_frozen(model, seed=0, experience=experience, fraction=0.5))
        both = {"body.embed_tokens.weight", "head.lm_head.weight"} & frozen
        assert len(both) == 1, frozen


# ---------------------------------------------------------------- a sweep
def test_sweep_on_a_language_model_logs_scores_and_retention(
    ray_instance: str, tiny: Path, in_tmp: Path
) -> None:
    (in_tmp / "lm.yaml").write_text(spec_text(tiny, strategies="[naive, hft]"))
    result = CliRunner().invoke(app, ["run", str(in_tmp / "lm.yaml")])
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{in_tmp / 'mlflow.db'}")
    _, kids = children(client, "lm")
    assert sorted(k.data.params["strategy"] for k in kids) == ["hft", "naive"]
    for kid in kids:
        assert kid.info.status == "FINISHED"
        assert kid.data.params["model.name"] == "hf_causal_lm"
        for key in ("acc/avg", "retention/ppl", "retention/token_acc", "retention/base_ppl"):
            steps = [m.step for m in client.get_metric_history(kid.info.run_id, key)]
            assert sorted(steps) == [0, 1], (key, steps)
    hft = next(k for k in kids if k.data.params["strategy"] == "hft")
    assert hft.data.params["strategy.hft.first_experience_full"] == "False"


# ---------------------------------------------------------- the real model
def test_smollm2_completes_a_known_prompt() -> None:
    from lifelong.platform.models.language import load_tokenizer, smollm2_file

    try:
        smollm2_file()
    except ValueError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))
    tok = load_tokenizer("smollm2_135m")
    model = build_model(ModelConfig(name="smollm2_135m"), (8,), len(tok)).eval()
    assert model.tied and len(model.body.layers) == 30
    ids, start = encode(tok, "What is the capital of France?", "")
    x = torch.tensor([ids[:start]])
    with torch.no_grad():
        for _ in range(8):  # greedy decoding through lifelong's own model
            x = torch.cat([x, model(x)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert "Paris" in tok.decode(x[0, start:])
