"""The transformer body: patching, parameter names, per-sample gradients, learning, multi-head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lifelong.platform.learner import Learner
from lifelong.platform.models import MODELS, ModelConfig, build_model
from lifelong.platform.training import TrainingConfig
from lifelong.platform.transformer import Patchify, transformer
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies._importance import empirical_fisher

SMALL = ModelConfig(name="transformer", hidden=[32, 32])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small matmuls: one thread is faster, and the test machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("shape", "tokens"),
    [((1, 40), 10), ((1, 8, 8), 16), ((3, 10, 13), 35), ((2, 30), 8), ((1, 28, 28), 49)],
)
def test_shapes_and_token_counts(shape, tokens) -> None:
    body, width = transformer(shape, [16, 16, 16])
    assert width == 16 and body.patchify.n_tokens == tokens
    assert body.pos_embed.shape == (1, tokens, 16)
    x = torch.randn(5, *shape)
    assert body(x).shape == (5, 16)
    model = build_model(ModelConfig(name="transformer", hidden=[16, 16]), shape, 10)
    assert model(x).shape == (5, 10) and model.features(x).shape == (5, 16)


def test_patches_hold_the_right_values() -> None:
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    tokens = Patchify((1, 8, 8), 2)(x)
    assert tokens.shape == (1, 16, 4)
    assert tokens[0, 0].tolist() == [0, 1, 8, 9]  # top-left 2x2 patch, row-major
    assert tokens[0, 5].tolist() == [18, 19, 26, 27]  # second row of patches, second column
    seq = Patchify((2, 6), 4)(torch.arange(12.0).reshape(1, 2, 6))  # padded to length 8
    assert seq.tolist() == [[[0, 1, 2, 3, 6, 7, 8, 9], [4, 5, 0, 0, 10, 11, 0, 0]]]


def test_parameter_names() -> None:
    model = build_model(SMALL, (1, 8, 8), 10)
    names = {n for n, _ in model.named_parameters()}
    expected = {"body.pos_embed", "body.embed.weight", "body.norm.weight", "head.linear.weight"}
    for i in (0, 1):
        for part in ("attn.q", "attn.k", "attn.v", "attn.o", "ff.fc1", "ff.fc2", "norm1", "norm2"):
            expected |= {f"body.blocks.{i}.{part}.weight", f"body.blocks.{i}.{part}.bias"}
    assert expected <= names
    assert not any(n.startswith("body.blocks.2.") for n in names)
    attn = model.body.blocks[0].attn
    assert attn.n_heads == 4 and all(isinstance(m, torch.nn.Linear) for m in (attn.q, attn.o))


def test_registered_and_validated() -> None:
    assert MODELS.get("transformer") is transformer
    with pytest.raises(ValueError, match="one equal width per block"):
        transformer((1, 8, 8), [32, 64])
    with pytest.raises(ValueError, match=r"\(C, L\) or \(C, H, W\)"):
        transformer((64,), [32])


def test_per_sample_gradients_under_vmap_match_a_loop() -> None:
    torch.manual_seed(0)
    model = build_model(SMALL, (1, 8, 8), 10)
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    fisher = empirical_fisher(model, x, y, batch_size=4)  # vmap(grad(...)) on x[None]
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(6):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad.square() / 6
    assert set(fisher) == set(expected)
    for n in fisher:
        torch.testing.assert_close(fisher[n], expected[n], rtol=1e-4, atol=1e-7)
    assert fisher["body.blocks.0.attn.q.weight"].sum() > 0


def test_learns_first_split_digits_experience() -> None:
    stream = build_stream(ScenarioConfig(source="digits", n_experiences=5, seed=0))
    training = TrainingConfig(epochs=6, lr=3e-3, optimizer="adam")
    row, _ = Learner(stream, SMALL, [], training, seed=0).run_experience(0)
    assert row[0] > 0.9


def test_multi_head() -> None:
    stream = build_stream(
        ScenarioConfig(source="digits", protocol="task_incremental", n_experiences=3, seed=0)
    )
    lrn = Learner(stream, SMALL, [], TrainingConfig(epochs=2, lr=3e-3, optimizer="adam"), 0)
    lrn.run_experience(0)
    assert lrn.model.head.multi_head
    with torch.no_grad():
        for exp in stream:
            pred = lrn.model(exp.x_test, exp.task_id).argmax(1)
            assert set(pred.tolist()) <= set(exp.classes)
