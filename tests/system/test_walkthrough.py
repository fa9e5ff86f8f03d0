"""The issue's walkthrough, as a new user runs it on a machine with no GPU."""

from __future__ import annotations

import socket

from tests.conftest import TASK_KEYS, Fleet, alive


def test_walkthrough(fleet: Fleet) -> None:
    out = fleet.up("--gpus", "0-3", "--queue", "default", "--create-queue")
    host = socket.gethostname()
    assert f"{host}:gpu0,1,2,3" in out

    task_id = fleet.submit("default", "python", "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])")
    assert len(task_id) == 32

    wait = fleet.cli("wait", task_id)
    assert wait.returncode == 0, wait.stderr
    assert "completed" in wait.stdout

    logs = fleet.ok("logs", task_id, "--no-timestamps")
    assert "0,1,2,3" in logs.splitlines()

    status = fleet.ok("status")
    assert f"{host}:gpu0,1,2,3" in status
    line = next(li for li in status.splitlines() if li.startswith(f"{host}:gpu0,1,2,3"))
    assert "idle" in line and "default" in line

    manager_pid = fleet.manager_info()["pid"]
    worker_pids = [p.pid for p in fleet.processes() if "fleet.worker" in " ".join(p.cmdline())]
    assert len(worker_pids) == 1

    stop = fleet.cli("stop")
    assert stop.returncode == 0, stop.stderr
    assert not alive(manager_pid)
    assert not any(alive(pid) for pid in worker_pids)
    assert not (fleet.home / "manager.json").exists()
    assert fleet.processes() == []


def test_task_environment_and_json(fleet: Fleet) -> None:
    fleet.up("--gpus", "2,5", "--queue", "q", "--create-queue")
    script = "import os; print(*(os.environ.get(k) for k in ('CUDA_VISIBLE_DEVICES','NVIDIA_VISIBLE_DEVICES','FLEET_TASK_ID','FLEET_WORKER_ID','MY_VAR')), sep='|')"
    task_id = fleet.submit("q", "python", "-c", script, opts=("--env", "MY_VAR=hello world", "--name", "envcheck"))
    assert fleet.cli("wait", task_id).returncode == 0
    line = fleet.ok("logs", task_id, "--no-timestamps").splitlines()[1]
    host = socket.gethostname()
    assert line == f"2,5|2,5|{task_id}|{host}:gpu2,5|hello world"
    import json

    task = json.loads(fleet.ok("show", task_id, "--json"))
    for key in TASK_KEYS:
        assert key in task, key
    assert task["name"] == "envcheck"
    assert task["gpus"] == [2, 5]
    assert task["exit_code"] == 0
    assert task["status"] == "completed"
    assert task["created_at"].endswith("Z")
    assert task["script"]["working_dir"] == str(fleet.root)
