"""GPU specs: ``0``, ``0,1``, ``0-7``, ``0-3,6`` and ``all``.

Explicit indices work as logical GPUs on a machine without an NVIDIA driver
(tasks still get ``CUDA_VISIBLE_DEVICES``); ``all`` needs NVML to know what
"all" is.
"""

from __future__ import annotations

import logging
import re

from fleet.errors import UsageError
from fleet.nvml import Nvml

log = logging.getLogger(__name__)

_PART = re.compile(r"^(\d+)(?:-(\d+))?$")
MAX_GPUS = 1024
EXPECTED = "expected GPU indices like 0, 0,1, 0-7, 0-3,6 or all"


def parse_gpu_list(spec: str) -> list[int]:
    """Parse explicit indices; refuse descending ranges and duplicates."""
    text = spec.strip()
    if not text:
        raise UsageError(f"--gpus {spec!r}: {EXPECTED}", field="gpus")
    out: list[int] = []
    seen: set[int] = set()
    for part in text.split(","):
        match = _PART.match(part.strip())
        if not match:
            raise UsageError(f"--gpus {spec!r}: {part.strip()!r} is not an index or range; {EXPECTED}", field="gpus")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise UsageError(f"--gpus {spec!r}: range {part.strip()} goes down; write it as {hi}-{lo}", field="gpus")
        if len(out) + hi - lo + 1 > MAX_GPUS:
            raise UsageError(f"--gpus {spec!r}: more than {MAX_GPUS} GPUs", field="gpus")
        for index in range(lo, hi + 1):
            if index in seen:
                raise UsageError(f"--gpus {spec!r}: GPU {index} is given twice", field="gpus")
            seen.add(index)
            out.append(index)
    return out


def resolve_gpus(spec: str, nvml: Nvml) -> tuple[list[int], list[str]]:
    """Turn a spec into indices; also return warnings for the user."""
    warnings: list[str] = []
    if spec.strip().lower() == "all":
        if not nvml.available:
            raise UsageError(
                "--gpus all: no NVIDIA driver here (NVML unavailable); give explicit indices such as 0-3 to use logical GPUs",
                field="gpus",
            )
        count = nvml.device_count()
        if count == 0:
            raise UsageError("--gpus all: NVML reports no GPUs", field="gpus")
        return list(range(count)), warnings
    indices = parse_gpu_list(spec)
    if nvml.available:
        count = nvml.device_count()
        missing = [i for i in indices if i >= count]
        if missing:
            raise UsageError(
                f"--gpus {spec!r}: this host has {count} GPU(s) (0-{count - 1}); no GPU {missing[0]}", field="gpus"
            )
    else:
        warnings.append(
            f"no NVIDIA driver: GPUs {format_gpus(indices)} are logical (tasks get CUDA_VISIBLE_DEVICES); no GPU metrics are available"
        )
    return indices, warnings


def format_gpus(indices: list[int] | None) -> str:
    return ",".join(str(i) for i in indices) if indices else ""
