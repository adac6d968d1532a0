"""Did-you-mean hints for a misspelled or foreign name in an experiment file.

A name is matched against the names that are valid where it was written: first
through :data:`SYNONYMS` (what Hugging Face's ``TrainingArguments``, Avalanche,
PyTorch Lightning or Ray call a field lifelong names otherwise, e.g.
``learning_rate`` for ``lr``), then by spelling (:func:`difflib.get_close_matches`).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel

SYNONYMS: dict[str, str] = {
    # training (Hugging Face TrainingArguments, Avalanche, Lightning)
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "n_epochs": "epochs",
    "max_epochs": "epochs",
    "train_epochs": "epochs",
    "epoch": "epochs",
    "per_device_train_batch_size": "batch_size",
    "train_batch_size": "batch_size",
    "train_mb_size": "batch_size",
    "batchsize": "batch_size",
    "bs": "batch_size",
    "optim": "optimizer",
    # strategies (Avalanche's argument names)
    "ewc_lambda": "lambda",
    "si_lambda": "lambda",
    "reg_lambda": "lambda",
    "lamda": "lambda",
    "decay_factor": "gamma",
    # scenario
    "n_tasks": "n_experiences",
    "num_tasks": "n_experiences",
    "n_experience": "n_experiences",
    "num_experiences": "n_experiences",
    "dataset": "source",
    "scenario_type": "protocol",
    # model
    "hidden_sizes": "hidden",
    "hidden_size": "hidden",
    "arch": "name",
    # resources (Ray's names)
    "num_cpus": "cpu",
    "cpus": "cpu",
    "num_gpus": "gpu",
    "gpus": "gpu",
    "num_workers": "workers",
    # the file's top level
    "strategy": "strategies",
    "num_seeds": "seeds",
    "seed": "seeds",
}
"""Another framework's name for a field -> lifelong's name for it."""


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the valid name closest to ``name``, or ``""``."""
    if not isinstance(name, str):
        return ""
    known = list(known)
    synonym = SYNONYMS.get(name.lower())
    if synonym in known:
        return f" (did you mean {synonym!r}?)"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not close:
        lowered = {k.lower(): k for k in known}
        close = [lowered[c] for c in difflib.get_close_matches(name.lower(), lowered, n=1)]
    return f" (did you mean {close[0]!r}?)" if close else ""


def field_names(model: type[BaseModel]) -> list[str]:
    """The keys ``model`` accepts: each field's alias where it has one, else its name."""
    return [f.alias or n for n, f in model.model_fields.items()]


def model_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model whose fields are valid at ``loc`` inside ``model`` (None: unknown).

    ``loc`` is a pydantic error location without its last entry: field names (or
    aliases), with list indices and dict keys skipped through the annotations.
    """
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            by_key = {f.alias or n: f for n, f in current.model_fields.items()}
            field = by_key.get(part) or current.model_fields.get(part)  # type: ignore[call-overload]
            if field is None:
                return None
            current = _unwrap(field.annotation)
        else:  # a list index or a dict key: into the container's item type
            args = [a for a in typing.get_args(current) if a is not type(None)]
            current = _unwrap(args[-1]) if args else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _unwrap(annotation: Any) -> Any:
    """``X`` from ``X | None`` / ``Optional[X]``; other annotations unchanged."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation
