"""The one place fleet talks to NVML (``nvidia-ml-py``).

Every call degrades cleanly: when ``nvmlInit()`` raises (no driver, no GPU, no
library) the module reports NVML as unavailable once and callers fall back to
logical GPUs without metrics.  :meth:`Nvml.sample` reads what the metrics
sampler needs; a reading a GPU does not support (power on many consumer cards,
the process list in some containers) is ``None``, never an exception.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
MB = 1024 * 1024


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_total_mb: int


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    memory_used_mb: float | None  # None where NVML cannot tell (some containers, MIG)


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one instant; a reading the GPU does not support is None."""

    index: int
    uuid: str | None
    utilization_percent: float | None
    memory_used_mb: float | None
    memory_total_mb: float | None
    temperature_c: float | None
    power_w: float | None
    processes: tuple[GpuProcess, ...] = field(default_factory=tuple)


class Nvml:
    """A lazily initialised NVML session; ``available`` is False without a driver.

    ``lib`` is the ``pynvml`` module (the default); tests pass a stand-in
    for hardware that cannot exist on the machine they run on."""

    def __init__(self, lib: Any = None) -> None:
        self._lock = threading.Lock()
        self._state: bool | None = None
        self._lib: Any = lib
        self._failed: set[tuple[int, str]] = set()
        self.error = ""

    @property
    def available(self) -> bool:
        with self._lock:
            if self._state is None:
                self._state = self._init()
            return self._state

    def _init(self) -> bool:
        try:
            if self._lib is None:
                import pynvml  # provided by nvidia-ml-py

                self._lib = pynvml
            self._lib.nvmlInit()
        except Exception as exc:  # NVMLError, ImportError, OSError: all mean "no NVML"
            self.error = str(exc) or type(exc).__name__
            log.info("NVML not available (%s): GPUs are logical, no GPU metrics", self.error)
            return False
        return True

    def device_count(self) -> int:
        if not self.available:
            return 0
        return int(self._lib.nvmlDeviceGetCount())

    def devices(self) -> list[GpuInfo]:
        if not self.available:
            return []
        pynvml = self._lib
        out = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append(
                GpuInfo(
                    index=index,
                    name=str(pynvml.nvmlDeviceGetName(handle)),
                    uuid=str(pynvml.nvmlDeviceGetUUID(handle)),
                    memory_total_mb=int(memory.total) // (1024 * 1024),
                )
            )
        return out

    def sample(self) -> list[GpuSample]:
        """Utilization, memory, temperature, power and processes of every GPU.

        Empty without NVML.  A GPU whose handle cannot be had is left out; a
        single reading that fails is None (logged once per GPU and reading)."""
        if not self.available:
            return []
        lib = self._lib
        count = self._read(-1, "count", lib.nvmlDeviceGetCount)
        out = []
        for index in range(int(count or 0)):
            handle = self._read(index, "handle", lib.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                continue
            util = self._read(index, "utilization", lib.nvmlDeviceGetUtilizationRates, handle)
            memory = self._read(index, "memory", lib.nvmlDeviceGetMemoryInfo, handle)
            temp = self._read(index, "temperature", lib.nvmlDeviceGetTemperature, handle, lib.NVML_TEMPERATURE_GPU)
            power = self._read(index, "power", lib.nvmlDeviceGetPowerUsage, handle)  # milliwatts
            uuid = self._read(index, "uuid", lib.nvmlDeviceGetUUID, handle)
            out.append(
                GpuSample(
                    index=index,
                    uuid=str(uuid) if uuid is not None else None,
                    utilization_percent=float(util.gpu) if util is not None else None,
                    memory_used_mb=int(memory.used) / MB if memory is not None else None,
                    memory_total_mb=int(memory.total) / MB if memory is not None else None,
                    temperature_c=float(temp) if temp is not None else None,
                    power_w=float(power) / 1000 if power is not None else None,
                    processes=self._processes(index, handle),
                )
            )
        return out

    def _processes(self, index: int, handle: Any) -> tuple[GpuProcess, ...]:
        lib = self._lib
        found: dict[int, float | None] = {}
        for what, call in (
            ("compute processes", lib.nvmlDeviceGetComputeRunningProcesses),
            ("graphics processes", lib.nvmlDeviceGetGraphicsRunningProcesses),
        ):
            for proc in self._read(index, what, call, handle) or []:
                used = getattr(proc, "usedGpuMemory", None)
                mb = int(used) / MB if isinstance(used, int) and used >= 0 else None
                previous = found.get(int(proc.pid))
                found[int(proc.pid)] = mb if previous is None else previous + (mb or 0.0)
        return tuple(GpuProcess(pid, mb) for pid, mb in sorted(found.items()))

    def _read(self, index: int, what: str, call: Callable[..., T], *args: Any) -> T | None:
        try:
            return call(*args)
        except Exception as exc:  # NVMLError_NotSupported, NoPermission, GpuIsLost ...
            key = (index, what)
            if key not in self._failed:
                self._failed.add(key)
                log.info("NVML: GPU %d: cannot read %s (%s)", index, what, exc or type(exc).__name__)
            return None

    # -- admission and placement (dynamic pools, static workers) -------------------
    def foreign_gpu_processes(self, our_pids: set[int]) -> dict[int, list[GpuProcess]]:
        """GPU index -> the compute processes on it that fleet did not start.

        A process is fleet's when its pid, or its session id, is in
        ``our_pids``: tasks run as session leaders, so passing their pids
        covers every process they spawn.  Empty without NVML."""
        if not self.available:
            return {}
        lib = self._lib
        out: dict[int, list[GpuProcess]] = {}
        for index in range(int(self._read(-1, "count", lib.nvmlDeviceGetCount) or 0)):
            handle = self._read(index, "handle", lib.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                continue
            found = []
            for proc in self._read(index, "compute processes", lib.nvmlDeviceGetComputeRunningProcesses, handle) or []:
                pid = int(proc.pid)
                if pid in our_pids or _session(pid) in our_pids:
                    continue
                used = getattr(proc, "usedGpuMemory", None)
                found.append(GpuProcess(pid, int(used) / MB if isinstance(used, int) and used >= 0 else None))
            out[index] = found
        return out

    def foreign_gpu_memory_mb(self, our_pids: set[int]) -> dict[int, int]:
        """GPU index -> MiB used by processes fleet did not start (see
        :meth:`foreign_gpu_processes`; a process whose usage NVML cannot tell
        counts 0).  Empty without NVML."""
        return {
            index: int(sum(p.memory_used_mb or 0 for p in procs))
            for index, procs in self.foreign_gpu_processes(our_pids).items()
        }

    def topology(self, indices: list[int]) -> dict[tuple[int, int], int] | None:
        """Distance between each pair of ``indices`` (a < b), lower is closer:
        0 on one board, 5 over NVLink, else NVML's common-ancestor level (10 one
        PCIe switch, 20 several, 30 host bridge, 40 NUMA node, 50 across
        sockets).  None without NVML or when a pair cannot be read."""
        if not self.available or len(indices) < 2:
            return None
        lib = self._lib
        try:
            handles = {i: lib.nvmlDeviceGetHandleByIndex(i) for i in indices}
            out: dict[tuple[int, int], int] = {}
            for a in indices:
                for b in indices:
                    if a < b:
                        level = int(lib.nvmlDeviceGetTopologyCommonAncestor(handles[a], handles[b]))
                        out[(a, b)] = level if level == 0 or not self._nvlink(handles[a], handles[b]) else 5
            return out
        except Exception as exc:  # NotSupported on some platforms (vGPU, WSL): fall back to indices
            log.info("NVML: no GPU topology (%s); GPUs are chosen by index", exc or type(exc).__name__)
            return None

    def _nvlink(self, a: Any, b: Any) -> bool:
        lib = self._lib
        try:
            status = lib.nvmlDeviceGetP2PStatus(a, b, lib.NVML_P2P_CAPS_INDEX_NVLINK)
            return bool(status == lib.NVML_P2P_STATUS_OK)
        except Exception:  # older drivers and non-NVLink boards
            return False


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:  # gone, or in another pid namespace
        return None
