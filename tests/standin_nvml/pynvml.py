"""A STAND-IN for NVIDIA's ``pynvml`` (nvidia-ml-py): the one thing these tests cannot
have for real, as this machine has no GPU.  It is not fleet code and is never installed.

Put first on ``PYTHONPATH`` (see :func:`tests.nvml_standin.use_standin`), it answers
fleet's single NVML module (``fleet/core/nvml.py``) in every process of a test's fleet
(manager, workers, pools) with the hardware written in the JSON file named by
``$FAKE_NVML_STATE``, read again on every call, so a test changes the hardware by
rewriting the file:

    {"count": 2,                       # GPUs 0..count-1
     "mig": {"0": 3},                  # GPU 0 in MIG mode with 3 instances (slots 0-2)
     "busy": {"1": [{"pid": 123, "mb": 5000}]},   # compute processes per GPU
     "util": {"0": 70},                # utilization % per GPU (default 0)
     "health": {"1": {"retired_pending": 1, "remap": [0, 0, 1, 0], "ecc_uncorrected": 2}},
     "lost": [2],                      # GPUs fallen off the bus: health reads raise GPU_IS_LOST
     "events": [{"gpu": 1, "type": "xid", "data": 79}, {"gpu": 0, "type": "dbe"}]}

Calls and constants are named and shaped as in nvidia-ml-py (``nvmlDeviceGetMigMode``
returns ``(current, pending)``, ``nvmlDeviceGetRemappedRows`` a 4-tuple,
``nvmlEventSetWait_v2`` an object with ``device``, ``eventType``, ``eventData`` and
raises ``NVMLError`` with ``value == NVML_ERROR_TIMEOUT`` when nothing came).  Each
event in ``events`` is delivered once per process that waits for events (the manager).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

NVML_TEMPERATURE_GPU = 0
NVML_P2P_CAPS_INDEX_NVLINK = 2
NVML_P2P_STATUS_OK = 0
NVML_DEVICE_MIG_ENABLE = 1
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_GPU_IS_LOST = 15
nvmlEventTypeSingleBitEccError = 0x1
nvmlEventTypeDoubleBitEccError = 0x2
nvmlEventTypeXidCriticalError = 0x8
MB = 1024 * 1024


class NVMLError(Exception):
    def __init__(self, value: int, text: str = "") -> None:
        super().__init__(text or f"NVML error {value}")
        self.value = value


class _Handle:
    """A device handle: a GPU (slot None) or one of its MIG instances."""

    def __init__(self, gpu: int, slot: int | None = None) -> None:
        self.gpu, self.slot = gpu, slot

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Handle) and (self.gpu, self.slot) == (other.gpu, other.slot)

    def __hash__(self) -> int:
        return hash((self.gpu, self.slot))


class _Obj:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def __getattr__(self, name: str) -> Any:  # for mypy: fields are whatever was given
        raise AttributeError(name)


def _state() -> dict[str, Any]:
    with open(os.environ["FAKE_NVML_STATE"]) as fh:
        state: dict[str, Any] = json.load(fh)
    return state


def nvmlInit() -> None:
    _state()


def nvmlShutdown() -> None:
    pass


def nvmlDeviceGetCount() -> int:
    return int(_state()["count"])


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    if not 0 <= index < nvmlDeviceGetCount():
        raise NVMLError(2, "Invalid Argument")
    return _Handle(index)


def nvmlDeviceGetIndex(handle: _Handle) -> int:
    return handle.gpu


def nvmlDeviceGetName(handle: _Handle) -> str:
    return "Stand-in H100" if handle.slot is None else "Stand-in MIG 1g.10gb"


def nvmlDeviceGetUUID(handle: _Handle) -> str:
    if handle.slot is not None:
        return f"MIG-standin-{handle.gpu}-{handle.slot}"
    if handle.gpu in _state().get("lost", []):
        raise NVMLError(NVML_ERROR_GPU_IS_LOST, "GPU is lost")
    return f"GPU-standin-{handle.gpu:04d}"


def nvmlDeviceGetMemoryInfo(handle: _Handle) -> _Obj:
    total = (80 * 1024 if handle.slot is None else 10 * 1024) * MB
    return _Obj(total=total, used=0, free=total)


def nvmlDeviceGetUtilizationRates(handle: _Handle) -> _Obj:
    if handle.slot is not None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED, "Not Supported")
    return _Obj(gpu=int(_state().get("util", {}).get(str(handle.gpu), 0)), memory=0)


def nvmlDeviceGetTemperature(handle: _Handle, sensor: int) -> int:
    return 40


def nvmlDeviceGetPowerUsage(handle: _Handle) -> int:
    return 100_000


def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[_Obj]:
    key = str(handle.gpu) if handle.slot is None else f"{handle.gpu}:{handle.slot}"
    return [_Obj(pid=p["pid"], usedGpuMemory=p["mb"] * MB) for p in _state().get("busy", {}).get(key, [])]


def nvmlDeviceGetGraphicsRunningProcesses(handle: _Handle) -> list[_Obj]:
    return []


def nvmlDeviceGetTopologyCommonAncestor(a: _Handle, b: _Handle) -> int:
    return 30


def nvmlDeviceGetP2PStatus(a: _Handle, b: _Handle, index: int) -> int:
    return 1


# -- MIG ---------------------------------------------------------------------------------
def _mig_count(gpu: int) -> int:
    return int(_state().get("mig", {}).get(str(gpu), 0))


def nvmlDeviceGetMigMode(handle: _Handle) -> tuple[int, int]:
    enabled = NVML_DEVICE_MIG_ENABLE if _mig_count(handle.gpu) else 0
    return (enabled, enabled)


def nvmlDeviceGetMaxMigDeviceCount(handle: _Handle) -> int:
    return 7 if _mig_count(handle.gpu) else 0


def nvmlDeviceGetMigDeviceHandleByIndex(handle: _Handle, index: int) -> _Handle:
    if index >= _mig_count(handle.gpu):
        raise NVMLError(NVML_ERROR_NOT_FOUND, "Not Found")
    return _Handle(handle.gpu, index)


# -- health counters -----------------------------------------------------------------------
def _health(handle: _Handle) -> dict[str, Any]:
    state = _state()
    if handle.gpu in state.get("lost", []):
        raise NVMLError(NVML_ERROR_GPU_IS_LOST, "GPU is lost")
    found: dict[str, Any] = state.get("health", {}).get(str(handle.gpu), {})
    return found


def nvmlDeviceGetRetiredPagesPendingStatus(handle: _Handle) -> int:
    return int(_health(handle).get("retired_pending", 0))


def nvmlDeviceGetRemappedRows(handle: _Handle) -> tuple[int, ...]:
    return tuple(_health(handle).get("remap", [0, 0, 0, 0]))


def nvmlDeviceGetTotalEccErrors(handle: _Handle, error_type: int, counter_type: int) -> int:
    return int(_health(handle).get("ecc_uncorrected", 0))


# -- events --------------------------------------------------------------------------------
_delivered = 0


def nvmlEventSetCreate() -> _Obj:
    return _Obj(registered={})


def nvmlDeviceGetSupportedEventTypes(handle: _Handle) -> int:
    return nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError | nvmlEventTypeXidCriticalError


def nvmlDeviceRegisterEvents(handle: _Handle, event_types: int, event_set: _Obj) -> None:
    event_set.registered[handle.gpu] = event_types


def nvmlEventSetWait_v2(event_set: _Obj, timeoutms: int) -> _Obj:
    global _delivered
    deadline = time.monotonic() + timeoutms / 1000
    while True:
        events = _state().get("events", [])
        if len(events) > _delivered:
            event = events[_delivered]
            _delivered += 1
            kind = nvmlEventTypeXidCriticalError if event["type"] == "xid" else nvmlEventTypeDoubleBitEccError
            if event_set.registered.get(event["gpu"], 0) & kind:
                return _Obj(
                    device=_Handle(event["gpu"]),
                    eventType=kind,
                    eventData=event.get("data", 0),
                    gpuInstanceId=0xFFFFFFFF,
                    computeInstanceId=0xFFFFFFFF,
                )
            continue
        if time.monotonic() >= deadline:
            raise NVMLError(NVML_ERROR_TIMEOUT, "Timeout")
        time.sleep(0.05)


def nvmlEventSetFree(event_set: _Obj) -> None:
    pass


def __getattr__(name: str) -> Callable[..., Any]:
    if name.startswith("nvml"):

        def missing(*args: Any) -> Any:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED, f"{name}: not in the stand-in")

        return missing
    raise AttributeError(name)
