"""Real GPUs: the checks of issue 17 against a real NVIDIA driver.

Every test here skips, with the reason, where NVML does not initialise (no driver,
no GPU: the machine CI runs on).  On a GPU machine run ``tests/real_gpu/run.sh``:
it prints what the driver reports and runs this module.  Nothing is a stand-in
here: the NVML is ``nvidia-ml-py`` over the real driver, and the task that checks
its devices asks the real CUDA driver (``libcuda``) which PCI device each of its
visible devices is.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import pytest

from fleet.core.gpuspec import format_gpus, is_mig
from fleet.core.nvml import Nvml, NvmlEvents
from tests.conftest import CONFIG, Fleet
from tests.taskview import reported


def _nvml() -> Nvml:
    nvml = Nvml()
    if not nvml.available:
        pytest.skip(f"NVML does not initialise here ({nvml.error}): no NVIDIA driver or GPU")
    return nvml


HOST = socket.gethostname()

# Run as a task: its CUDA devices as the CUDA driver numbers them, by PCI bus id.
CUDA_PROBE = r"""
import ctypes, json, os
out = {k: os.environ.get(k) for k in ("CUDA_DEVICE_ORDER", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")}
try:
    cuda = ctypes.CDLL("libcuda.so.1")
    assert cuda.cuInit(0) == 0
    count = ctypes.c_int()
    assert cuda.cuDeviceGetCount(ctypes.byref(count)) == 0
    buses = []
    for i in range(count.value):
        dev = ctypes.c_int()
        assert cuda.cuDeviceGet(ctypes.byref(dev), i) == 0
        buf = ctypes.create_string_buffer(64)
        assert cuda.cuDeviceGetPCIBusId(buf, 64, dev) == 0
        buses.append(buf.value.decode())
    out["cuda_buses"] = buses
except Exception as exc:
    out["cuda_error"] = repr(exc)
print("PROBE=" + json.dumps(out), flush=True)
"""


def _bus(text: Any) -> str:
    """``00000000:19:00.0`` (NVML) and ``0000:19:00.0`` (CUDA) alike: bus:device.function."""
    value = text.decode() if isinstance(text, bytes) else str(text)
    return value.lower().split(":", 1)[-1] if value.count(":") == 2 else value.lower()


def _probe(fleet: Fleet, task_id: str) -> dict[str, Any]:
    return reported(fleet, task_id, "PROBE=", timeout=120)


def test_nvml_lists_units_with_uuids_and_reads_health() -> None:
    nvml = _nvml()
    units = nvml.units()
    print("units:", [(format_gpus([u.unit]), u.uuid) for u in units])
    assert units, "NVML initialised but lists no GPU"
    for unit in units:
        assert unit.uuid.startswith("MIG-" if unit.mig else "GPU-"), unit
    assert len({u.uuid for u in units}) == len(units)
    health = nvml.health()
    print("health:", health)
    assert health == {}, f"a GPU here reads unhealthy: {health}"
    samples = nvml.sample()
    assert {s.index for s in samples} >= {u.gpu for u in units}
    assert all(s.memory_total_mb for s in samples if not is_mig(s.index))


def test_nvml_events_can_be_watched() -> None:
    events = NvmlEvents(_nvml())
    if not events.open():
        pytest.skip("this driver or GPU supports no critical Xid / double-bit ECC events")
    try:
        assert events.wait(200) is None  # a healthy GPU: the wait times out
    finally:
        events.close()


def test_a_task_on_all_gpus_sees_them_in_nvml_order_by_uuid(fleet: Fleet) -> None:
    nvml = _nvml()
    units = nvml.units()
    if len({u.mig for u in units}) > 1:
        pytest.skip("whole GPUs and MIG slices together: a static worker takes one kind")
    fleet.up("--gpus", "all", "--queue", "q", "--create-queue")
    task_id = fleet.submit("q", sys.executable, "-c", CUDA_PROBE, opts=("--gpus", str(len(units))))
    probe = _probe(fleet, task_id)
    task = fleet.task(task_id)
    uuids = [u.uuid for u in units]
    print("probe:", probe, "task gpus:", task["gpus"], task["gpu_uuids"])
    assert probe["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert task["gpu_uuids"] == uuids and probe["NVIDIA_VISIBLE_DEVICES"] == ",".join(uuids)
    if units[0].mig:
        assert probe["CUDA_VISIBLE_DEVICES"] == ",".join(uuids)
        return
    assert probe["CUDA_VISIBLE_DEVICES"] == ",".join(str(u.unit) for u in units)
    if "cuda_buses" not in probe:
        pytest.skip(f"the CUDA driver could not be asked: {probe.get('cuda_error')}")
    lib = nvml._lib
    nvml_buses = [_bus(lib.nvmlDeviceGetPciInfo(lib.nvmlDeviceGetHandleByIndex(u.unit)).busId) for u in units]
    assert [_bus(b) for b in probe["cuda_buses"]] == nvml_buses  # CUDA's device i is NVML's GPU i


def test_per_gpu_metrics_and_health_gauges(fleet: Fleet) -> None:
    units = _nvml().units()
    (fleet.root / "fleet.conf").write_text(CONFIG + "fleet.metrics.interval: 0.5\n")
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")

    def scrape() -> str:
        with fleet.api() as api:
            return api.get(fleet.url + "/metrics").text

    fleet.wait_for(lambda: "fleet_gpu_memory_total_bytes" in scrape(), what="GPU metrics")
    text = scrape()
    for unit in units:
        label = format_gpus([unit.unit])
        assert f'fleet_gpu_memory_total_bytes{{gpu="{label}"}}' in text, label
        assert f'fleet_gpu_healthy{{gpu="{label}",host="{HOST}"}} 1.0' in text, label
    with fleet.api() as api:
        current = api.get("/metrics/current").raise_for_status().json()
    assert current["nvml"] is True


def test_mig_instances_are_listed_and_handed_out(fleet: Fleet) -> None:
    units = _nvml().units()
    slices = [u for u in units if u.mig]
    if not slices:
        pytest.skip("no GPU here is in MIG mode (nvidia-smi -i 0 -mig 1 and a GPU instance to try it)")
    fleet.up("--gpus", format_gpus([slices[0].unit]), "--queue", "q", "--create-queue")
    listing = fleet.ok("gpu", "list")
    assert all(u.uuid in listing for u in slices)
    task_id = fleet.submit("q", sys.executable, "-c", CUDA_PROBE)
    probe = _probe(fleet, task_id)
    assert probe["CUDA_VISIBLE_DEVICES"] == slices[0].uuid and probe["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert fleet.task(task_id)["gpu_uuids"] == [slices[0].uuid]
