"""A stream as an MLflow dataset: the input every trial's child run logs (``mlflow.data``).

:class:`StreamDataset` is an :class:`mlflow.data.meta_dataset.MetaDataset` named after the
stream (``split_digits``), with its own digest and a profile of its shape:

* ``digest``: the first 10 hex digits of the SHA-256 of every experience's train
  and test tensors (bytes, dtype and shape) in order, so two runs with the same
  digest learned exactly the same data. MLflow's ``from_numpy`` digest hashes only
  the first 10,000 values, which would call two streams that differ later equal.
  A stream read lazily from disk (its experiences are not all in memory) is not
  read twice for it: its digest is that of its configuration, and its profile
  says so (``digest_of: config``).
* ``source``: where the data came from, as the scenario names it (an
  :class:`~mlflow.data.code_dataset_source.CodeDatasetSource` with the source,
  protocol and options as tags; the options are cut at 500 characters).
* ``profile``: experiences, classes, input shape, train/test samples.
"""

from __future__ import annotations

import json
from typing import Any

from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.meta_dataset import MetaDataset

from lifelong.scenarios.digest import stream_digest
from lifelong.scenarios.stream import LazyExperiences, Stream

__all__ = ["StreamDataset", "stream_digest"]


class StreamDataset(MetaDataset):
    """A stream as MLflow sees a dataset: name, digest, source and a profile of its shape."""

    def __init__(self, stream: Stream, scenario: dict[str, Any]) -> None:
        digest, of = stream_digest(stream)
        tags = {
            "source": str(scenario.get("source", "")),
            "protocol": str(scenario.get("protocol", "")),
            "options": json.dumps(scenario.get("options", {}), sort_keys=True, default=str)[:500],
        }
        sizes = [(e.n_train, e.n_test) for e in _representatives(stream)]
        self._profile = {
            "experiences": len(stream),
            "classes": stream.n_classes,
            "input_shape": list(stream.input_shape),
            "train_samples": sum(n for n, _ in sizes),
            "test_samples": sum(n for _, n in sizes),
            "digest_of": of,
        }
        super().__init__(CodeDatasetSource(tags=tags), name=stream.name, digest=digest)

    @property
    def profile(self) -> dict[str, Any]:
        """Experiences, classes, input shape, samples, and what the digest hashes."""
        return self._profile

    def to_dict(self) -> dict[str, str]:
        """MLflow's fields of the dataset, the profile (as JSON) included."""
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def _representatives(stream: Stream) -> list[Any]:
    if isinstance(stream.experiences, LazyExperiences):
        return list(stream.experiences.representatives())
    return list(stream.experiences)
