"""``nvidia-smi``'s GPU utilisation and memory, sampled in a thread (the GPU benchmarks)."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import threading


class GpuSampler:
    """Samples ``nvidia-smi``'s GPU utilisation (%) and memory used (MiB) in a thread."""

    def __init__(self, period_s: float = 0.5) -> None:
        self.period_s = period_s
        self.util: list[float] = []
        self.mem: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        query = [
            "nvidia-smi",
            "--id=0",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
        ]
        while not self._stop.wait(self.period_s):
            out = subprocess.run(query, capture_output=True, text=True).stdout
            fields = out.splitlines()[0].split(",") if out.strip() else []
            if len(fields) == 2:
                self.util.append(float(fields[0]))
                self.mem.append(float(fields[1]))

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def summary(self) -> str:
        """``mean util %, peak MiB`` or ``n/a`` without samples."""
        if not self.util:
            return f"{'n/a':>8} {'n/a':>9}"
        return f"{statistics.mean(self.util):>7.0f}% {max(self.mem):>9.0f}"
