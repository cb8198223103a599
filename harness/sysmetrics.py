"""System metrics sampled during a run: CPU, memory and, on NVIDIA GPUs, utilisation,
memory, power, the enforced power limit and energy through NVML.

A daemon thread wakes every `interval_s` and appends one sample; it holds no lock the SUT
needs, and one sample costs well under a millisecond, so timing is not disturbed. NVML
(package nvidia-ml-py, module pynvml) is imported only when the monitor starts; without it,
or without a GPU, the GPU fields are simply absent.

    mon = SystemMonitor(interval_s=0.5); mon.start()
    ... run ...
    metrics = mon.stop(output_tokens=12345)   # {"interval_s", "samples", "aggregates", "gpus"}
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import psutil

log = logging.getLogger(__name__)


class SystemMonitor:
    def __init__(self, interval_s: float = 0.5):
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.interval_s = interval_s
        self._proc = psutil.Process(os.getpid())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples: dict[str, list] = {}
        self._nvml = None            # the pynvml module once initialised
        self._gpus: list[Any] = []   # NVML device handles
        self._gpu_names: list[str] = []
        self._energy_start_mj: list[int | None] = []
        self._power_limit_w: list[float | None] = []
        self._t0 = 0.0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "SystemMonitor":
        if self._thread is not None:
            raise RuntimeError("SystemMonitor already started")
        self._init_nvml()
        # cpu_percent() measures since its previous call: prime both counters now.
        self._proc.cpu_percent(None)
        psutil.cpu_percent(None)
        self._samples = {k: [] for k in ("t_s", "cpu_process_pct", "cpu_system_pct", "rss_bytes",
                                         "mem_system_used_bytes")}
        for i in range(len(self._gpus)):
            for k in ("util_pct", "mem_used_bytes", "power_w"):
                self._samples[f"gpu{i}_{k}"] = []
        self._t0 = time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sysmetrics", daemon=True)
        self._thread.start()
        return self

    def stop(self, output_tokens: int | None = None) -> dict[str, Any]:
        """Stop sampling and return samples (column lists) and aggregates.

        With output_tokens, GPU energy is also given as joules per output token.
        """
        if self._thread is None:
            raise RuntimeError("SystemMonitor.stop() before start()")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._sample()  # one last point, so even a very short run has two
        duration = time.perf_counter() - self._t0
        result: dict[str, Any] = {"interval_s": self.interval_s, "duration_s": duration,
                                  "samples": self._samples, "aggregates": self._aggregates()}
        if self._gpus:
            result["gpus"] = self._gpu_names
            for i, limit in enumerate(self._power_limit_w):
                result["aggregates"][f"gpu{i}_power_limit_w"] = limit
            energy = self._energy_j(duration)
            if energy is not None:
                result["aggregates"]["gpu_energy_j"] = energy
        self._shutdown_nvml()
        if output_tokens is not None:
            add_energy_per_token(result, output_tokens)
        return result

    # -- sampling --------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample()
            except Exception:  # a metrics hiccup must never end the run
                log.exception("system metrics sample failed; sampling stops")
                return

    def _sample(self) -> None:
        s = self._samples
        s["t_s"].append(time.perf_counter() - self._t0)
        s["cpu_process_pct"].append(self._proc.cpu_percent(None))
        s["cpu_system_pct"].append(psutil.cpu_percent(None))
        s["rss_bytes"].append(self._proc.memory_info().rss)
        s["mem_system_used_bytes"].append(psutil.virtual_memory().used)
        nv = self._nvml
        for i, h in enumerate(self._gpus):
            s[f"gpu{i}_util_pct"].append(_try(lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu))
            s[f"gpu{i}_mem_used_bytes"].append(_try(lambda: nv.nvmlDeviceGetMemoryInfo(h).used))
            s[f"gpu{i}_power_w"].append(_try(lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0))

    def _aggregates(self) -> dict[str, Any]:
        s = self._samples
        agg: dict[str, Any] = {"samples": len(s["t_s"]),
                               "cpu_process_pct_mean": _mean(s["cpu_process_pct"]),
                               "cpu_process_pct_max": _max(s["cpu_process_pct"]),
                               "cpu_system_pct_mean": _mean(s["cpu_system_pct"]),
                               "rss_bytes_max": _max(s["rss_bytes"]),
                               "mem_system_used_bytes_max": _max(s["mem_system_used_bytes"])}
        for i in range(len(self._gpus)):
            agg[f"gpu{i}_util_pct_mean"] = _mean(s[f"gpu{i}_util_pct"])
            agg[f"gpu{i}_mem_used_bytes_max"] = _max(s[f"gpu{i}_mem_used_bytes"])
            agg[f"gpu{i}_power_w_mean"] = _mean(s[f"gpu{i}_power_w"])
        return agg

    # -- NVML ------------------------------------------------------------------------------
    def _init_nvml(self) -> None:
        try:
            import pynvml
        except ImportError:
            log.debug("pynvml not installed (pip install nvidia-ml-py): no GPU metrics")
            return
        try:
            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as e:  # no driver / no GPU: NVMLError of various kinds
            log.debug("NVML unavailable (%s): no GPU metrics", e)
            return
        self._nvml, self._gpus = pynvml, handles
        self._gpu_names = [_decode(_try(lambda h=h: pynvml.nvmlDeviceGetName(h))) for h in handles]
        # The limit the driver enforces (a capped card draws and performs less: J/token depend on it).
        self._power_limit_w = [_try(lambda h=h: pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0) for h in handles]
        # Total energy counter (Volta and newer); None where unsupported -> integrate power.
        self._energy_start_mj = [_try(lambda h=h: pynvml.nvmlDeviceGetTotalEnergyConsumption(h))
                                 for h in handles]

    def _energy_j(self, duration: float) -> float | None:
        """Joules used by all GPUs since start: NVML's energy counter, else power x time."""
        total = 0.0
        for i, h in enumerate(self._gpus):
            start = self._energy_start_mj[i]
            end = _try(lambda: self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) if start is not None else None
            if start is not None and end is not None:
                total += (end - start) / 1000.0
                continue
            power = [p for p in self._samples[f"gpu{i}_power_w"] if p is not None]
            if not power:
                return None
            total += sum(power) / len(power) * duration
        return total

    def _shutdown_nvml(self) -> None:
        if self._nvml is not None:
            _try(self._nvml.nvmlShutdown)
            self._nvml, self._gpus = None, []


def add_energy_per_token(metrics: dict[str, Any], output_tokens: int) -> None:
    """Set aggregates.gpu_joules_per_output_token when GPU energy was measured."""
    agg = metrics.get("aggregates", {})
    if agg.get("gpu_energy_j") is not None and output_tokens > 0:
        agg["gpu_joules_per_output_token"] = agg["gpu_energy_j"] / output_tokens


def _try(fn):
    try:
        return fn()
    except Exception:  # NVMLError_NotSupported and friends: that one field is unknown
        return None


def _decode(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _max(xs: list):
    xs = [x for x in xs if x is not None]
    return max(xs) if xs else None


def gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs NVML sees; [] without pynvml, a driver or a GPU."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        return [_decode(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)))
                for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:
        return []
    finally:
        _try(pynvml.nvmlShutdown)
