"""The system description (systems/SYSTEM.json) and measurements.json of a submission.

Every field of the submission checker's SYSTEM_DESC_REQUIRED_FIELDS is written. What this
machine can tell (CPU model, sockets, cores, caches, frequency, memory, storage, GPUs and their
memory through NVML, OS, framework versions) is filled in; the rest holds "TO FILL: ..." with a
hint, and `submission.py --check` lists every such field until a person has filled it.
"""
from __future__ import annotations

import os
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.results import environment

TO_FILL = "TO FILL"
NOT_APPLICABLE = "N/A"

# SYSTEM_DESC_REQUIRED_FIELDS of tools/submission/submission_checker/constants.py (v6.0).
REQUIRED_FIELDS = (
    "division", "submitter", "status", "system_name", "number_of_nodes", "host_processor_model_name",
    "host_processors_per_node", "host_processor_core_count", "host_memory_capacity", "host_storage_capacity",
    "host_storage_type", "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity",
    "framework", "operating_system", "system_type", "other_software_stack", "host_processor_frequency",
    "host_processor_caches", "host_memory_configuration", "host_processor_interconnect", "host_networking",
    "host_networking_topology", "accelerator_frequency", "accelerator_host_interconnect",
    "accelerator_interconnect", "accelerator_interconnect_topology", "accelerator_memory_configuration",
    "accelerator_on-chip_memories", "cooling", "hw_notes", "sw_notes", "host_network_card_count",
    "system_type_detail",
)
# SYSTEM_DESC_MEANINGFUL_RESPONSE_REQUIRED_FIELDS: these may not be empty.
MEANINGFUL_FIELDS = (
    "division", "submitter", "system_type", "status", "system_name", "number_of_nodes",
    "host_processor_model_name", "host_processors_per_node", "host_processor_core_count",
    "host_memory_capacity", "host_memory_configuration", "host_storage_capacity", "host_storage_type",
    "host_networking", "host_network_card_count", "host_networking_topology", "accelerators_per_node",
    "accelerator_model_name", "accelerator_memory_capacity", "accelerator_host_interconnect",
    "accelerator_memory_configuration", "accelerator_interconnect", "cooling", "framework",
    "operating_system", "other_software_stack",
)
AVAILABILITIES = ("available", "preview", "rdi")   # VALID_AVAILABILITIES
SYSTEM_TYPES = ("datacenter", "edge", "datacenter,edge")
# SYSTEM_IMP_REQUIRED_FILES: the fields of measurements.json.
MEASUREMENT_FIELDS = ("input_data_types", "retraining", "starting_weights_filename", "weight_data_types",
                      "weight_transformations")

FRAMEWORK_PACKAGES = {
    "llamacpp": ("llama-cpp-python",),
    "hf": ("torch", "transformers"),
    "fakequant": ("torch", "transformers"),
    "openai": ("httpx",),
    "null": (),
}


def _gb(n_bytes: int | None) -> str:
    return f"{n_bytes / 2**30:.0f} GB" if n_bytes else f"{TO_FILL}: capacity in GB"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpuinfo() -> tuple[int | None, str | None]:
    """(sockets, max MHz) from /proc/cpuinfo and sysfs; None where this system does not say."""
    sockets, mhz = None, None
    try:
        ids = {ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
               if ln.startswith("physical id")}
        sockets = len(ids) or None
    except OSError:
        pass
    try:
        khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        mhz = f"{khz / 1000:.0f} MHz"
    except (OSError, ValueError):
        pass
    return sockets, mhz


def _cpu_caches() -> str | None:
    """'L1d 48K, L1i 32K, L2 2048K, L3 ...' from sysfs (per core or shared, as the kernel says)."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    parts = []
    for index in sorted(base.glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        parts.append(f"L{level}{suffix} {size}")
    return ", ".join(parts) or None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))} (kernel {platform.release()})"
    except OSError:
        pass
    return platform.platform()


def gpus() -> list[dict[str, Any]]:
    """Name, memory (bytes) and max SM clock (MHz) of each NVIDIA GPU NVML sees; [] without one."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # no package, no driver or no GPU: a CPU system
        return []
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            try:
                clock = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)
            except pynvml.NVMLError:
                clock = None
            out.append({"name": name.decode() if isinstance(name, bytes) else str(name),
                        "memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(h).total), "clock_mhz": clock})
        return out
    finally:
        pynvml.nvmlShutdown()


def framework(backend: str) -> str:
    names = [f"{d} {_version(d)}" for d in FRAMEWORK_PACKAGES.get(backend, ()) if _version(d)]
    label = {"llamacpp": "llama.cpp", "hf": "PyTorch", "fakequant": "PyTorch", "openai": "OpenAI-compatible server",
             "null": "none (null backend: no model)"}.get(backend, backend)
    return f"{label} ({', '.join(names)})" if names else label


def system_description(division: str, submitter: str, system_name: str, backend: str,
                       storage_path: str, status: str, system_type: str) -> dict[str, Any]:
    env = environment()
    sockets, mhz = _cpuinfo()
    cores = env.get("cpu_count_physical")
    devices = gpus()
    accel: dict[str, Any]
    if devices:
        first = devices[0]
        accel = {
            "accelerators_per_node": str(len(devices)),
            "accelerator_model_name": first["name"],
            "accelerator_memory_capacity": _gb(first["memory_bytes"]),
            "accelerator_frequency": f"{first['clock_mhz']} MHz" if first["clock_mhz"] else f"{TO_FILL}: MHz",
            "accelerator_host_interconnect": f"{TO_FILL}: e.g. PCIe Gen5 x16",
            "accelerator_interconnect": f"{TO_FILL}: e.g. NVLink, or {NOT_APPLICABLE}",
            "accelerator_interconnect_topology": f"{TO_FILL}: e.g. fully connected, or {NOT_APPLICABLE}",
            "accelerator_memory_configuration": f"{TO_FILL}: e.g. HBM3e",
            "accelerator_on-chip_memories": f"{TO_FILL}: e.g. L2 per GPU",
        }
    else:
        accel = {"accelerators_per_node": "0", "accelerator_model_name": NOT_APPLICABLE,
                 "accelerator_memory_capacity": NOT_APPLICABLE, "accelerator_frequency": NOT_APPLICABLE,
                 "accelerator_host_interconnect": NOT_APPLICABLE, "accelerator_interconnect": NOT_APPLICABLE,
                 "accelerator_interconnect_topology": NOT_APPLICABLE,
                 "accelerator_memory_configuration": NOT_APPLICABLE, "accelerator_on-chip_memories": NOT_APPLICABLE}
    packages = env.get("packages") or {}
    stack = [f"Python {env.get('python')}"] + [f"{k} {v}" for k, v in packages.items() if v]
    desc = {
        "division": division,
        "submitter": submitter,
        "status": status,
        "system_name": system_name,
        "number_of_nodes": "1",
        "host_processor_model_name": env.get("cpu_model") or f"{TO_FILL}: CPU model",
        "host_processors_per_node": str(sockets) if sockets else f"{TO_FILL}: sockets",
        "host_processor_core_count": str(cores // (sockets or 1)) if cores else f"{TO_FILL}: cores per socket",
        "host_processor_frequency": mhz or f"{TO_FILL}: MHz",
        "host_processor_caches": _cpu_caches() or f"{TO_FILL}: e.g. L1d 48K, L2 2M, L3 96M",
        "host_processor_interconnect": f"{TO_FILL}: e.g. UPI, or {NOT_APPLICABLE} for one socket",
        "host_memory_capacity": _gb(env.get("ram_bytes")),
        "host_memory_configuration": f"{TO_FILL}: e.g. 16x 64GB DDR5-4800",
        "host_storage_capacity": _gb(shutil.disk_usage(storage_path).total),
        "host_storage_type": f"{TO_FILL}: e.g. NVMe SSD",
        "host_networking": f"{TO_FILL}: e.g. 1x 100 GbE, or {NOT_APPLICABLE}",
        "host_networking_topology": f"{TO_FILL}: e.g. {NOT_APPLICABLE}",
        "host_network_card_count": f"{TO_FILL}: e.g. 1",
        **accel,
        "framework": framework(backend),
        "operating_system": _os_name(),
        "other_software_stack": ", ".join(stack),
        "system_type": system_type,
        "system_type_detail": f"{TO_FILL}: e.g. on-premise server, cloud instance type",
        "cooling": f"{TO_FILL}: air or liquid",
        "hw_notes": "",
        "sw_notes": f"MLPerf-style LoadGen harness, backend {backend}, {os.cpu_count()} logical CPUs visible",
    }
    return {k: desc[k] for k in REQUIRED_FIELDS}


def measurements(backend: str, model_path: str | None, model_name: str, dtype: str,
                 quant_config: str | None) -> dict[str, str]:
    """measurements.json: how the weights got from the starting checkpoint to what ran."""
    weights = os.path.basename(model_path.rstrip("/")) if model_path else f"{model_name} (the embedded GGUF)"
    if backend == "hf":
        types, transform = dtype, "none" if dtype == "float32" else f"cast to {dtype}"
    elif backend == "fakequant":
        types, transform = f"{TO_FILL}: see {quant_config}", f"fake quantization ({quant_config})"
    elif backend == "llamacpp" and model_path is None:
        types, transform = "Q4_K_M (GGUF)", "quantization (llama.cpp Q4_K_M)"
    elif backend == "null":
        types, transform = NOT_APPLICABLE, "none (null backend: no model)"
    else:
        types, transform = f"{TO_FILL}: weight data types", f"{TO_FILL}: e.g. quantization, or none"
    return {"input_data_types": "int32", "retraining": "No", "starting_weights_filename": weights,
            "weight_data_types": types, "weight_transformations": transform}


def unfilled(obj: dict[str, Any], fields: tuple[str, ...], meaningful: tuple[str, ...] = ()) -> list[str]:
    """Fields missing, still 'TO FILL', or empty where a meaningful answer is required."""
    out = []
    for f in fields:
        v = obj.get(f)
        if v is None or TO_FILL in str(v) or (f in meaningful and not str(v).strip()):
            out.append(f)
    return out
