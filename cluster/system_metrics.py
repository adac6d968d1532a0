"""System metrics of a trial's machine, sampled where the trial trains, with MLflow's monitors.

MLflow's own :class:`~mlflow.system_metrics.system_metrics_monitor.SystemMetricsMonitor`
logs from the process it runs in; a trial's worker does not log to MLflow (the
driver does, journalled), so the trial samples with the same monitor classes
(CPU and memory, disk, network and, where there is one, the NVIDIA or AMD GPU)
in a background thread and each experience's report carries their averages
since the last one. The driver logs them under MLflow's names,
``system/<metric>`` (e.g. ``system/cpu_utilization_percentage``), so the run's
*System metrics* tab in the MLflow UI shows them; the run's ``node_id`` tag
names the machine they were measured on.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

PREFIX = "system/"
"""MLflow's prefix of system metrics (its UI groups them in their own tab)."""


def _monitors() -> list[Any]:
    """MLflow's CPU, disk and network monitors, and a GPU monitor where one starts."""
    from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
    from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
    from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor

    monitors: list[Any] = [CPUMonitor(), DiskMonitor(), NetworkMonitor()]
    for module, name in (("gpu_monitor", "GPUMonitor"), ("rocm_monitor", "ROCMMonitor")):
        try:  # no GPU, or no NVML / ROCm library: no GPU metrics
            mod = __import__(f"mlflow.system_metrics.metrics.{module}", fromlist=[name])
            monitors.append(getattr(mod, name)())
            break
        except Exception:  # noqa: BLE001 - MLflow raises several kinds here
            logging.getLogger(__name__).debug("no %s", name, exc_info=True)
    return monitors


class SystemSampler:
    """Samples the machine every ``interval`` seconds; :meth:`take` averages since the last."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._monitors = _monitors()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lifelong-system", daemon=True)

    def __enter__(self) -> SystemSampler:
        self._sample()  # one sample at once: a short experience still gets its numbers
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _sample(self) -> None:
        with self._lock:
            for monitor in self._monitors:
                monitor.collect_metrics()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def take(self) -> dict[str, float]:
        """The mean of each metric since the last call (MLflow's aggregation), then reset."""
        self._sample()
        out: dict[str, float] = {}
        with self._lock:
            for monitor in self._monitors:
                out.update({k: float(v) for k, v in monitor.aggregate_metrics().items()})
                monitor.clear_metrics()
        return out
