"""Memory per extra trial on one node: the stream shared through Ray's object store or not.

Starts a local Ray instance and, for each way of getting the stream to a trial,
N = 1 and N = 4 actors that each hold the stream as a trial does (and touch
every byte of it), then sums the proportional set size (PSS: a shared page
counts 1/k in each of the k processes mapping it) over the Ray processes. The
memory one more trial costs is ``(PSS(N=4) - PSS(N=1)) / 3``.

Ways compared (``none``: a trial process holding no stream, the baseline):
  shared    lifelong's way: one ``SharedStream`` in the object store, read zero-copy;
  pickled   the plain ``Stream`` (torch tensors) put in the object store once;
  rebuilt   every trial builds the stream itself from the scenario config.

Prints the figures (MiB); run with ``python benchmarks/object_store_memory.py``.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

import psutil
import ray
import torch

from lifelong.cluster.shared import SharedStream, unpack
from lifelong.scenarios import build_stream
from lifelong.scenarios.builder import ScenarioConfig

MiB = 2**20


def scenario(mb: int) -> ScenarioConfig:
    """A gaussian stream of about ``mb`` MiB (float32 inputs, 1024 features)."""
    per_class = max(10, mb * MiB // (10 * 1024 * 4))
    return ScenarioConfig.model_validate(
        {
            "source": "gaussian",
            "n_experiences": 5,
            "options": {
                "n_classes": 10,
                "n_features": 1024,
                "n_train_per_class": per_class,
                "n_test_per_class": 10,
            },
        }
    )


@ray.remote(num_cpus=0)
class Holder:
    """Holds the stream the way a trial does for its whole life."""

    def __init__(self, how: str, payload: Any) -> None:
        torch.set_num_threads(1)
        if how == "none":
            self.stream = []
        elif how == "rebuilt":
            self.stream = build_stream(ScenarioConfig.model_validate(payload))
        else:
            self.stream = unpack(payload)
        # Read every byte, as training and evaluation do.
        self.total = sum(float(e.x_train.sum()) + float(e.x_test.sum()) for e in self.stream)

    def pid(self) -> int:
        """This actor's process id."""
        return psutil.Process().pid


def ray_pss() -> int:
    """Summed PSS (bytes) of this driver and every process it started (raylet, workers)."""
    me = psutil.Process()
    total = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def measure(how: str, n: int, cfg: ScenarioConfig, ref: ray.ObjectRef | None) -> int:
    """PSS of the Ray processes with ``n`` trials holding the stream ``how``."""
    payload: Any = cfg.model_dump(mode="json") if how == "rebuilt" else ref
    holders = [Holder.remote(how, payload) for _ in range(n)]
    ray.get([h.pid.remote() for h in holders])
    time.sleep(1.0)
    pss = ray_pss()
    for h in holders:
        ray.kill(h)
    time.sleep(1.0)
    return pss


def main() -> None:
    """Print memory per extra trial for each way of sharing the stream."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="stream size in MiB")
    parser.add_argument("--trials", type=int, default=4, help="N of the larger measurement")
    args = parser.parse_args()
    cfg = scenario(args.mb)
    stream = build_stream(cfg)
    size = sum(
        t.numel() * t.element_size()
        for e in stream
        for t in (e.x_train, e.y_train, e.x_test, e.y_test)
    )
    ray.init(
        num_cpus=args.trials,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=max(4 * size, 512 * MiB),
        log_to_driver=False,
    )
    refs = {"shared": ray.put(SharedStream(stream)), "pickled": ray.put(stream)}
    del stream
    gc.collect()
    print(f"stream: {size / MiB:.0f} MiB; PSS summed over the Ray processes of one node")
    print(
        f"{'way':<8} {'N=1 MiB':>9} {f'N={args.trials} MiB':>9} {'per extra trial':>16}"
        f" {'minus baseline':>15}"
    )
    base = 0.0
    for how in ("none", "shared", "pickled", "rebuilt"):
        one = measure(how, 1, cfg, refs.get(how))
        many = measure(how, args.trials, cfg, refs.get(how))
        extra = (many - one) / (args.trials - 1)
        if how == "none":
            base = extra
        print(
            f"{how:<8} {one / MiB:>9.0f} {many / MiB:>9.0f} {extra / MiB:>12.0f} MiB"
            f" {(extra - base) / MiB:>8.0f} MiB = {(extra - base) / size:.2f}x the stream"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
