"""The ``text_tasks`` source: a stream of instruction tasks for a causal language model.

Each experience is one task (:mod:`lifelong.scenarios.text_tasks`: generated
offline from the seed, or a user's JSONL file of ``{"prompt", "response"}``
objects). An example becomes one row of token ids: the prompt (through the
tokenizer's chat template when it has one, as a user turn with the assistant's
turn opened), then the response and the end-of-sequence token, right-padded to
the longest row of the stream. Its labels are the next token at every position
whose next token belongs to the response (``labels[t] = ids[t + 1]``), and
``-100`` (ignored) elsewhere: the loss is the causal-LM loss on response tokens
only, and ``R[i, j]`` is task j's exact match (every response token, the end of
sequence included, is the argmax of the teacher-forced logits, which is what
greedy decoding would produce; one forward pass per example).

The tokenizer is the model's (``options.tokenizer`` is filled in from
``model`` when the experiment is read), so the token ids are the ones the
model was trained on. The stream also carries the tokenized general-text set
(``general_text()``: the Zen of Python and the history section of Python's
licence, which ship with Python) on which the learner measures general-ability
retention after every experience (``retention/ppl``, ``retention/token_acc``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor

from lifelong.scenarios.sources import SOURCES, ScenarioError, Source, SourceInfo
from lifelong.scenarios.stream import Experience, Stream
from lifelong.scenarios.text_tasks import TASKS, Example, general_text, generate, read_jsonl

IGNORE = -100
"""The label of a position whose next token is not scored (prompt, padding)."""

KIND = "text"
"""``stream.info["kind"]`` of a text stream."""


class TokenizerRef(BaseModel):
    """Which tokenizer: that of a language model (``name``, and ``path`` for ``hf_causal_lm``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    path: str | None = None


class TextTasksSource(Source):
    """The ``text_tasks`` source: one experience per instruction task, tokenized for the model."""

    stream_source: ClassVar[bool] = True

    class Config(BaseModel):
        """Options of the ``text_tasks`` source."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        tasks: list[str] = Field(
            min_length=1,
            max_length=1000,
            description="The tasks in training order: built-in names (arithmetic, reverse, "
            "caesar, ...; lifelong.scenarios.text_tasks.TASKS) or paths of JSONL files.",
        )
        n_train: int = Field(64, ge=1, le=1_000_000, description="Training examples per task.")
        n_test: int = Field(32, ge=1, le=1_000_000, description="Test examples per task.")
        max_length: int = Field(
            96, ge=4, le=8192, description="Longest example, in tokens (longer is an error)."
        )
        system: str | None = Field(
            None,
            description="The system turn given to the chat template: null keeps the template's "
            'own default (SmolLM2\'s names the assistant), "" an empty one (shorter rows).',
        )
        general_length: int = Field(
            128, ge=8, le=8192, description="Tokens kept of each general-text passage."
        )
        tokenizer: TokenizerRef | None = Field(
            None, description="Filled in from the experiment's language model; leave it out."
        )

        @field_validator("tasks")
        @classmethod
        def _known(cls, tasks: list[str]) -> list[str]:
            for task in tasks:
                if task not in TASKS and not task.endswith(".jsonl"):
                    raise ValueError(
                        f"unknown task {task!r}: a built-in ({', '.join(TASKS)}) or a .jsonl file"
                    )
            return tasks

    config: Config

    def info(self) -> SourceInfo:
        """Not known before the tokenizer is; see :meth:`stream`."""
        raise NotImplementedError("the text_tasks source knows its shape once tokenized")

    def check(self, scenario: Any) -> None:
        """Check the JSONL files exist and ``n_experiences`` (when given) counts the tasks."""
        for i, task in enumerate(self.config.tasks):
            if task not in TASKS and not Path(task).expanduser().is_file():
                raise ScenarioError(f"options.tasks.{i}", f"no file {task!r}")
        n = len(self.config.tasks)
        if "protocol" in scenario.model_fields_set and scenario.protocol != "task_incremental":
            raise ScenarioError(
                "protocol",
                f"a text stream is task_incremental (one instruction task per experience), "
                f"not {scenario.protocol} (leave protocol out)",
            )
        if "n_experiences" in scenario.model_fields_set and scenario.n_experiences != n:
            raise ScenarioError(
                "n_experiences",
                f"the stream has one experience per task: {n}, not {scenario.n_experiences} "
                "(leave n_experiences out)",
            )

    def stream(self, scenario: Any) -> Stream:
        """Generate or read every task, tokenize it and cut one experience per task."""
        from lifelong.platform.models.language import load_tokenizer

        ref = self.config.tokenizer
        if ref is None:
            raise ScenarioError(
                "options.tokenizer", "a text stream needs a language model (model.name)"
            )
        tokenizer = load_tokenizer(ref.name, ref.path)
        rows: list[tuple[list[list[int]], list[int], list[list[int]], list[int]]] = []
        for i, task in enumerate(self.config.tasks):
            train, test = self._examples(task, scenario.seed, i)
            a, b = _encode_all(tokenizer, train, task, self.config)
            c, d = _encode_all(tokenizer, test, task, self.config)
            rows.append((a, b, c, d))
        length = max(len(ids) for r in rows for ids in (*r[0], *r[2]))
        pad = int(tokenizer.pad_token_id)
        experiences = tuple(
            Experience(
                index=i,
                task_id=i,
                classes=(),
                x_train=_pad(train, length, pad),
                y_train=_labels(train, starts, length),
                x_test=_pad(test, length, pad),
                y_test=_labels(test, test_starts, length),
            )
            for i, (train, starts, test, test_starts) in enumerate(rows)
        )
        general = _general(tokenizer, self.config.general_length, pad)
        return Stream(
            name="text_tasks",
            protocol="task_incremental",
            experiences=experiences,
            n_classes=len(tokenizer),
            input_shape=(length,),
            seed=scenario.seed,
            info={
                "source": "text_tasks",
                "kind": KIND,
                "tasks": list(self.config.tasks),
                "general": general,
            },
        )

    def _examples(self, task: str, seed: int, index: int) -> tuple[list[Example], list[Example]]:
        """Task ``task``'s train and test examples (a JSONL file is split after shuffling)."""
        n_train, n_test = self.config.n_train, self.config.n_test
        try:
            if task in TASKS:
                return generate(task, n_train, n_test, seed)
            examples = read_jsonl(Path(task).expanduser())
        except ValueError as e:
            raise ScenarioError(f"options.tasks.{index}", str(e)) from None
        if len(examples) < 2:
            raise ScenarioError(
                f"options.tasks.{index}", f"{task}: needs at least 2 examples, has {len(examples)}"
            )
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))
        shuffled = [examples[j] for j in order.tolist()]
        cut = max(1, min(len(shuffled) - 1, round(len(shuffled) * n_train / (n_train + n_test))))
        return shuffled[:cut][:n_train], shuffled[cut:][:n_test]


def prompt_ids(tokenizer: Any, prompt: str, system: str | None = None) -> list[int]:
    """The token ids of ``prompt`` as the model's user turn, ending where its answer starts.

    ``system``: a system turn before it (None: the chat template's default, if any).
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        try:
            text = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        except Exception as e:  # jinja2's TemplateError: e.g. a template without a system role
            field = "options.system" if system is not None else "options.tasks"
            raise ScenarioError(field, f"the model's chat template refused it: {e}") from None
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt + "\n")["input_ids"])


def encode(
    tokenizer: Any, prompt: str, response: str, system: str | None = None
) -> tuple[list[int], int]:
    """One example's token ids (prompt, response, end of sequence) and where the response starts."""
    head = prompt_ids(tokenizer, prompt, system)
    tail = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    return head + tail + [int(tokenizer.eos_token_id)], len(head)


def _encode_all(
    tokenizer: Any, examples: list[Example], task: str, config: TextTasksSource.Config
) -> tuple[list[list[int]], list[int]]:
    ids, starts = [], []
    max_length = config.max_length
    for k, (prompt, response) in enumerate(examples):
        row, start = encode(tokenizer, prompt, response, config.system)
        if len(row) > max_length:
            raise ScenarioError(
                "options.max_length",
                f"example {k} of task {task!r} is {len(row)} tokens, over max_length "
                f"{max_length} (raise max_length)",
            )
        ids.append(row)
        starts.append(start)
    return ids, starts


def _pad(rows: list[list[int]], length: int, pad: int) -> Tensor:
    out = torch.full((len(rows), length), pad, dtype=torch.int64)
    for k, row in enumerate(rows):
        out[k, : len(row)] = torch.tensor(row, dtype=torch.int64)
    return out


def _labels(rows: list[list[int]], starts: list[int], length: int) -> Tensor:
    """``labels[t] = ids[t + 1]`` where token t + 1 is in the response, else ``IGNORE``."""
    out = torch.full((len(rows), length), IGNORE, dtype=torch.int64)
    for k, (row, start) in enumerate(zip(rows, starts, strict=True)):
        out[k, start - 1 : len(row) - 1] = torch.tensor(row[start:], dtype=torch.int64)
    return out


def _general(tokenizer: Any, length: int, pad: int) -> dict[str, Tensor]:
    """The general-text set as ids and labels (every next token scored, padding ignored)."""
    rows = [list(tokenizer(p)["input_ids"])[:length] for p in general_text()]
    width = max(len(r) for r in rows)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.int64)
    for k, row in enumerate(rows):
        labels[k, : len(row) - 1] = torch.tensor(row[1:], dtype=torch.int64)
    return {"x": _pad(rows, width, pad), "y": labels}


SOURCES.register("text_tasks", TextTasksSource)
