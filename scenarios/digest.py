"""A stream's digest: which data it holds, as a short hash (MLflow datasets, shared work)."""

from __future__ import annotations

import hashlib
import json

import torch

from lifelong.scenarios.stream import LazyExperiences, Stream


def stream_digest(stream: Stream) -> tuple[str, str]:
    """The stream's digest and what it hashes: ``("3f2a...", "data")`` or ``(..., "config")``."""
    sha = hashlib.sha256()
    if isinstance(stream.experiences, LazyExperiences):
        sha.update(json.dumps(stream.info, sort_keys=True, default=str).encode())
        sha.update(f"{stream.name}|{len(stream)}|{stream.seed}".encode())
        return sha.hexdigest()[:10], "config"
    for exp in stream.experiences:
        for t in (exp.x_train, exp.y_train, exp.x_test, exp.y_test):
            t = t.detach().cpu().contiguous()
            sha.update(f"{t.dtype}{tuple(t.shape)}".encode())
            sha.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()[:10], "data"
