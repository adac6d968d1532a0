"""A tiny LLaMA model and tokenizer saved in a folder, for tests of the language-model path.

The tokenizer is a byte-level BPE trained here on the text tasks' own examples
and the general text (every string is representable); the model is a
``LlamaForCausalLM`` with 2 layers of width 32 from random weights, tied
embeddings as in SmolLM2. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lifelong.scenarios.text_tasks import TASKS, general_text, generate


def make_tiny_lm(folder: Path, *, layers: int = 2, width: int = 32, seed: int = 0) -> Path:
    """Write a tiny LLaMA model and its tokenizer into ``folder`` (idempotent); return it."""
    if (folder / "config.json").is_file():
        return folder
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    corpus = list(general_text())
    for task in TASKS:
        train, test = generate(task, 40, 10, 0)
        corpus += [f"{p}\n{r}" for p, r in train + test]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<eos>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<pad>")
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(folder)
    return folder
