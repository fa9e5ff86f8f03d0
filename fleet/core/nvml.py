"""The one place fleet talks to NVML (``nvidia-ml-py``).

Every call degrades cleanly: when ``nvmlInit()`` raises (no driver, no GPU, no
library) the module reports NVML as unavailable once and callers fall back to
logical GPUs without metrics.  :meth:`Nvml.sample` reads what the metrics
sampler needs; a reading a GPU does not support (power on many consumer cards,
the process list in some containers) is ``None``, never an exception.

A GPU in MIG mode is listed by its MIG instances (:meth:`Nvml.units`, with
their own ``MIG-...`` UUIDs; see :mod:`fleet.core.gpuspec` for how a unit is
numbered).  :meth:`Nvml.health` reads the counters that make a GPU unfit
(pending page retirement, pending row remapping or a failed one, a GPU that
fell off the bus) and :class:`NvmlEvents` waits for critical Xid and
double-bit ECC events (:mod:`fleet.metrics.health` acts on both).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fleet.core.gpuspec import is_mig, mig_unit

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
class GpuUnit:
    """What fleet hands out: a whole GPU, or one MIG instance of a GPU in MIG mode."""

    unit: int  # the NVML index, or fleet.gpus.mig_unit(gpu, slice)
    gpu: int  # the physical GPU's NVML index
    uuid: str  # GPU-... or MIG-...
    mig: bool


@dataclass(frozen=True)
class HealthEvent:
    """A critical NVML event on GPU ``gpu``: what it was, in words (with the Xid code)."""

    gpu: int
    reason: str


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

    def units(self) -> list[GpuUnit]:
        """Every allocatable unit: each GPU, or each MIG instance of a GPU in MIG
        mode (a GPU in MIG mode with no instance yields nothing).  Empty without NVML."""
        return [unit for unit, _ in self._unit_handles()]

    def uuids(self, units: list[int]) -> list[str]:
        """The UUIDs of ``units`` in that order; empty without NVML or when one is unknown."""
        known = {u.unit: u.uuid for u in self.units() if u.uuid}
        if not units or any(u not in known for u in units):
            return []
        return [known[u] for u in units]

    def _unit_handles(self) -> list[tuple[GpuUnit, Any]]:
        if not self.available:
            return []
        lib = self._lib
        out: list[tuple[GpuUnit, Any]] = []
        for index in range(int(self._read(-1, "count", lib.nvmlDeviceGetCount) or 0)):
            handle = self._read(index, "handle", lib.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                continue
            if self._mig_enabled(index, handle):
                out.extend(self._mig_instances(index, handle))
                continue
            uuid = self._read(index, "uuid", lib.nvmlDeviceGetUUID, handle)
            out.append((GpuUnit(index, index, str(uuid or ""), False), handle))
        return out

    def _mig_enabled(self, index: int, handle: Any) -> bool:
        lib = self._lib
        try:
            current, _pending = lib.nvmlDeviceGetMigMode(handle)
        except Exception:  # NotSupported: a GPU without MIG
            return False
        return bool(current == getattr(lib, "NVML_DEVICE_MIG_ENABLE", 1))

    def _mig_instances(self, index: int, handle: Any) -> list[tuple[GpuUnit, Any]]:
        lib = self._lib
        out: list[tuple[GpuUnit, Any]] = []
        for slot in range(int(self._read(index, "MIG device count", lib.nvmlDeviceGetMaxMigDeviceCount, handle) or 0)):
            try:
                mig = lib.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except Exception:  # NotFound: an empty slot
                continue
            uuid = self._read(index, "MIG uuid", lib.nvmlDeviceGetUUID, mig)
            out.append((GpuUnit(mig_unit(index, slot), index, str(uuid or ""), True), mig))
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
            if self._mig_enabled(index, handle):
                out.extend(self._sample_instance(unit, mig) for unit, mig in self._mig_instances(index, handle))
        return out

    def _sample_instance(self, unit: GpuUnit, handle: Any) -> GpuSample:
        """What NVML gives per MIG instance: memory and processes (utilization,
        temperature and power are the parent GPU's, and NotSupported here)."""
        memory = self._read(unit.unit, "memory", self._lib.nvmlDeviceGetMemoryInfo, handle)
        return GpuSample(
            index=unit.unit,
            uuid=unit.uuid,
            utilization_percent=None,
            memory_used_mb=int(memory.used) / MB if memory is not None else None,
            memory_total_mb=int(memory.total) / MB if memory is not None else None,
            temperature_c=None,
            power_w=None,
            processes=self._processes(unit.unit, handle),
        )

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
            self._note(index, what, exc)
            return None

    def _note(self, index: int, what: str, exc: BaseException) -> None:
        """Log a failed reading once per GPU and reading."""
        key = (index, what)
        if key not in self._failed:
            self._failed.add(key)
            log.info("NVML: GPU %d: cannot read %s (%s)", index, what, exc or type(exc).__name__)

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
        for unit, handle in self._unit_handles():
            index = unit.unit
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
        indices = [i for i in indices if not is_mig(i)]  # MIG slices: no topology between them
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

    # -- health ------------------------------------------------------------------
    def health(self) -> dict[int, str]:
        """GPU index -> why it is unfit, for each GPU a counter condemns: fallen off
        the bus (``NVML_ERROR_GPU_IS_LOST``), pages waiting to be retired, a row
        remapping pending or failed, uncorrected (double-bit) ECC errors since the
        driver loaded.  A counter a GPU does not support says nothing.  Empty
        without NVML."""
        if not self.available:
            return {}
        lib = self._lib
        out: dict[int, str] = {}
        for index in range(int(self._read(-1, "count", lib.nvmlDeviceGetCount) or 0)):
            try:
                handle = lib.nvmlDeviceGetHandleByIndex(index)
                why = self._condemned(handle)
            except Exception as exc:
                if not _is_lost(lib, exc):
                    self._note(index, "health", exc)
                    continue
                why = "GPU is lost (NVML_ERROR_GPU_IS_LOST: fallen off the bus)"
            if why:
                out[index] = why
        return out

    def _condemned(self, handle: Any) -> str:
        """The first counter that condemns a GPU, in words; "" when none does.
        Raises only when the GPU is lost."""
        lib = self._lib
        checks: list[tuple[str, Callable[[], Any], Callable[[Any], bool]]] = [
            ("retired pages pending", lambda: lib.nvmlDeviceGetRetiredPagesPendingStatus(handle), lambda v: bool(v)),
            ("row remapping pending", lambda: lib.nvmlDeviceGetRemappedRows(handle), lambda v: bool(v[2])),
            ("row remapping failed", lambda: lib.nvmlDeviceGetRemappedRows(handle), lambda v: bool(v[3])),
            (
                "uncorrected (double-bit) ECC errors",
                lambda: lib.nvmlDeviceGetTotalEccErrors(
                    handle, getattr(lib, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1), getattr(lib, "NVML_VOLATILE_ECC", 0)
                ),
                lambda v: int(v) > 0,
            ),
        ]
        for what, read, bad in checks:
            try:
                value = read()
            except Exception as exc:
                if _is_lost(lib, exc):
                    raise
                continue  # NotSupported (consumer cards, ECC off): says nothing
            if bad(value):
                return f"{what} ({value})" if what.startswith("uncorrected") else what
        return ""

    def _nvlink(self, a: Any, b: Any) -> bool:
        lib = self._lib
        try:
            status = lib.nvmlDeviceGetP2PStatus(a, b, lib.NVML_P2P_CAPS_INDEX_NVLINK)
            return bool(status == lib.NVML_P2P_STATUS_OK)
        except Exception:  # older drivers and non-NVLink boards
            return False


# Xids that mean the hardware (not the task's code) is at fault, after NVIDIA's Xid
# catalogue and DCGM's health watches: 48 double-bit ECC, 61/62 internal
# micro-controller errors, 63/64 row remapping, 74 NVLink, 79 fallen off the bus,
# 92 high single-bit ECC rate, 95 uncontained ECC, 119/120 GSP, 140 unrecovered ECC.
# Xids a program causes (13, 31, 43, 45, 68 ...) leave the GPU in service.
HARDWARE_XIDS = frozenset({48, 61, 62, 63, 64, 74, 79, 92, 95, 119, 120, 140})


class NvmlEvents:
    """NVML's event set: critical Xid and double-bit ECC events of every GPU.

    :meth:`wait` blocks up to ``timeout_ms`` (one thread does it) and answers
    the next event that condemns a GPU, else None.  Without NVML, or where the
    driver supports no such event, :meth:`open` is False and nothing waits."""

    def __init__(self, nvml: Nvml) -> None:
        self.nvml = nvml
        self._set: Any = None
        self._index: dict[Any, int] = {}

    def open(self) -> bool:
        if not self.nvml.available:
            return False
        lib = self.nvml._lib
        try:  # an old nvidia-ml-py without these names is a driver without events to us
            wanted = int(lib.nvmlEventTypeXidCriticalError) | int(lib.nvmlEventTypeDoubleBitEccError)
            self._set = lib.nvmlEventSetCreate()
        except Exception as exc:
            log.info("NVML: no GPU events (%s); health comes from the counters only", exc or type(exc).__name__)
            return False
        registered = 0
        for index in range(self.nvml.device_count()):
            try:
                handle = lib.nvmlDeviceGetHandleByIndex(index)
                supported = int(lib.nvmlDeviceGetSupportedEventTypes(handle))
                if supported & wanted:
                    lib.nvmlDeviceRegisterEvents(handle, supported & wanted, self._set)
                    self._index[_key(handle)] = index
                    registered += 1
            except Exception as exc:
                log.info("NVML: GPU %d: no events (%s)", index, exc or type(exc).__name__)
        return registered > 0

    def wait(self, timeout_ms: int) -> HealthEvent | None:
        lib = self.nvml._lib
        try:
            data = lib.nvmlEventSetWait_v2(self._set, timeout_ms)
        except Exception as exc:
            if getattr(exc, "value", None) != getattr(lib, "NVML_ERROR_TIMEOUT", 10):
                log.info("NVML: waiting for events: %s", exc or type(exc).__name__)
                time.sleep(timeout_ms / 1000)  # never spin on a broken event set
            return None
        index = self._index.get(_key(data.device))
        if index is None:
            try:
                index = int(lib.nvmlDeviceGetIndex(data.device))
            except Exception:
                return None
        kind = int(data.eventType)
        if kind & int(lib.nvmlEventTypeDoubleBitEccError):
            return HealthEvent(index, "double-bit ECC error (NVML event)")
        xid = int(data.eventData)
        if xid not in HARDWARE_XIDS:
            log.info("NVML: GPU %d: Xid %d (a program's error; the GPU stays in service)", index, xid)
            return None
        return HealthEvent(index, f"Xid {xid} (NVML critical Xid event)")

    def close(self) -> None:
        if self._set is not None:
            try:
                self.nvml._lib.nvmlEventSetFree(self._set)
            except Exception:  # the driver is going away anyway
                pass
            self._set = None


def _key(handle: Any) -> Any:
    """A hashable identity for an NVML handle (a ctypes pointer, or the stand-in's value)."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (ctypes.ArgumentError, TypeError):
        return handle


def _is_lost(lib: Any, exc: BaseException) -> bool:
    return getattr(exc, "value", None) == getattr(lib, "NVML_ERROR_GPU_IS_LOST", 15)


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:  # gone, or in another pid namespace
        return None
