"""The one place fleet talks to NVML (``nvidia-ml-py``).

Every call degrades cleanly: when ``nvmlInit()`` raises (no driver, no GPU, no
library) the module reports NVML as unavailable once and callers fall back to
logical GPUs without metrics.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_total_mb: int


class Nvml:
    """A lazily initialised NVML session; ``available`` is False without a driver."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: bool | None = None
        self.error = ""

    @property
    def available(self) -> bool:
        with self._lock:
            if self._state is None:
                self._state = self._init()
            return self._state

    def _init(self) -> bool:
        try:
            import pynvml  # provided by nvidia-ml-py

            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError, ImportError, OSError: all mean "no NVML"
            self.error = str(exc) or type(exc).__name__
            log.info("NVML not available (%s): GPUs are logical, no GPU metrics", self.error)
            return False
        return True

    def device_count(self) -> int:
        if not self.available:
            return 0
        import pynvml

        return int(pynvml.nvmlDeviceGetCount())

    def devices(self) -> list[GpuInfo]:
        if not self.available:
            return []
        import pynvml

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
