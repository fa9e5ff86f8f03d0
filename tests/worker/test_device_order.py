"""Device order and GPU UUIDs (issue 17, part 1).

Every task gets ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (plain, prepared and docker), so
CUDA's GPU N is NVML's GPU N.  With NVML each attempt records its GPUs' UUIDs and
names the devices by UUID to other programs (``NVIDIA_VISIBLE_DEVICES``, docker's
``DeviceRequest``).  Where NVML must "exist" the tests use the STAND-IN ``pynvml``
(tests/standin_nvml): this machine has no GPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fleet.core.config import parse_config_string
from fleet.core.home import Home
from fleet.core.models import DockerMode, Script
from fleet.worker.docker.container import device_requests
from fleet.worker.docker.run import build_spec
from tests.conftest import Fleet
from tests.factories import running_task
from tests.nvml_standin import use_standin
from tests.taskview import reported

PRINT_ENV = (
    "import json, os; print('ENV=' + json.dumps({k: os.environ.get(k) for k in "
    "('CUDA_DEVICE_ORDER', 'CUDA_VISIBLE_DEVICES', 'NVIDIA_VISIBLE_DEVICES')}))"
)


def _env_of(fleet: Fleet, task_id: str) -> dict[str, str]:
    return {k: str(v) for k, v in reported(fleet, task_id, "ENV=").items()}


def test_plain_and_prepared_tasks_get_pci_bus_order_without_nvml(fleet: Fleet, tmp_path: Path) -> None:
    """No NVML (this machine): logical GPUs, no UUIDs, the order variable all the same."""
    fleet.up("--gpus", "2,3", "--queue", "q", "--create-queue")
    plain = fleet.submit("q", sys.executable, "-c", PRINT_ENV)
    setup = tmp_path / "setup.sh"
    setup.write_text("echo prepared\n")
    prepared = fleet.submit("q", sys.executable, "-c", PRINT_ENV, opts=("--setup-script", str(setup)))
    for task_id in (plain, prepared):
        env = _env_of(fleet, task_id)
        assert env == {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": "2,3",
            "NVIDIA_VISIBLE_DEVICES": "2,3",
        }
        task = fleet.task(task_id)
        assert task["gpus"] == [2, 3] and task["gpu_uuids"] == []
    assert "prepared" in fleet.ok("logs", prepared, "--no-timestamps")  # it did go through preparation


def test_uuids_are_recorded_per_attempt_and_name_the_devices(fleet: Fleet) -> None:
    """With the STAND-IN NVML (2 GPUs): the attempt's UUIDs are on the task, its
    attempts and ``show``; NVIDIA_VISIBLE_DEVICES names the GPUs by UUID."""
    use_standin(fleet, count=2)
    fleet.up("--gpus", "0,1", "--queue", "q", "--create-queue")
    task_id = fleet.submit("q", sys.executable, "-c", PRINT_ENV, opts=("--gpus", "2"))
    env = _env_of(fleet, task_id)
    uuids = ["GPU-standin-0000", "GPU-standin-0001"]
    assert env == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "NVIDIA_VISIBLE_DEVICES": ",".join(uuids),
    }
    task = json.loads(fleet.ok("show", task_id, "--json"))
    assert task["gpu_uuids"] == uuids
    assert task["attempts"][0]["gpu_uuids"] == uuids
    shown = fleet.ok("show", task_id)
    assert "GPU-standin-0000,GPU-standin-0001" in shown
    assert "GPU-standin-0000" in fleet.ok("logs", task_id)  # the attempt line names them too


def test_docker_container_gets_the_order_and_uuid_device_requests(tmp_path: Path) -> None:
    """The container spec (what the docker engine is given): order variable, UUIDs in
    NVIDIA_VISIBLE_DEVICES and in the DeviceRequest; indices where no UUID is known."""
    config = parse_config_string("", tmp_path / "fleet.conf")
    home = Home(tmp_path / "home")
    script = Script(["python3", "x.py"], str(tmp_path))
    with_uuids = running_task(script, gpus=[2, 3], gpu_uuids=["GPU-a", "GPU-b"], docker=DockerMode("img:1"))
    spec = build_spec(with_uuids, "h:gpu2,3", "", config, home, tmp_path, [tmp_path], tmp_path / "run", rand="r" * 32)
    assert spec.environment["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert spec.environment["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert spec.environment["NVIDIA_VISIBLE_DEVICES"] == "GPU-a,GPU-b"
    (request,) = device_requests(spec.gpus)
    assert request["DeviceIDs"] == ["GPU-a", "GPU-b"]
    assert "--gpus device=GPU-a,GPU-b" in spec.shown()
    logical = running_task(script, gpus=[1], docker=DockerMode("img:1"))
    spec = build_spec(logical, "h:gpu1", "", config, home, tmp_path, [tmp_path], tmp_path / "run", rand="r" * 32)
    assert spec.environment["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert device_requests(spec.gpus)[0]["DeviceIDs"] == ["1"]
    cpu = running_task(script, docker=DockerMode("img:1"))
    spec = build_spec(cpu, "h:cpu", "", config, home, tmp_path, [tmp_path], tmp_path / "run", rand="r" * 32)
    assert spec.environment["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert spec.environment["NVIDIA_VISIBLE_DEVICES"] == "none" and device_requests(spec.gpus) == []
