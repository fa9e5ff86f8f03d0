"""Task and worker lifecycles end to end: order, fairness, priorities, abort,
timeout, retries, stop modes and a crashing worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import psutil

from tests.conftest import Fleet, alive

HOST = socket.gethostname()


def _run_order(fleet: Fleet, task_ids: list[str]) -> list[str]:
    tasks = [fleet.task(t) for t in task_ids]
    assert all(t["status"] == "completed" for t in tasks), [t["status_reason"] for t in tasks]
    return [t["id"] for t in sorted(tasks, key=lambda t: t["started_at"])]


def _prepare_queues(fleet: Fleet, *queues: str) -> None:
    """A manager with a worker elsewhere, so tasks can wait in ``queues``."""
    fleet.up("--gpus", "7", "--queue", "parking", "--create-queue")
    for q in queues:
        fleet.ok("queue", "create", q)


def test_queues_pulled_in_given_order(fleet: Fleet) -> None:
    _prepare_queues(fleet, "high", "low")
    low = [fleet.submit("low", "true") for _ in range(3)]
    high = [fleet.submit("high", "true") for _ in range(3)]
    fleet.up("--gpus", "0", "--queue", "high", "low")
    assert fleet.cli("wait", *low, *high).returncode == 0
    assert _run_order(fleet, low + high) == high + low


def test_order_fairness_takes_turns(fleet: Fleet) -> None:
    _prepare_queues(fleet, "a", "b")
    a = [fleet.submit("a", "true") for _ in range(3)]
    b = [fleet.submit("b", "true") for _ in range(3)]
    fleet.up("--gpus", "0", "--queue", "a", "b", "--order-fairness")
    assert fleet.cli("wait", *a, *b).returncode == 0
    assert _run_order(fleet, a + b) == [a[0], b[0], a[1], b[1], a[2], b[2]]


def test_priorities_then_fifo(fleet: Fleet) -> None:
    _prepare_queues(fleet, "q")
    first = fleet.submit("q", "true", opts=("--priority", "0"))
    mid = fleet.submit("q", "true", opts=("--priority", "5"))
    second = fleet.submit("q", "true", opts=("--priority", "0"))
    top = fleet.submit("q", "true", opts=("--priority", "10"))
    fleet.up("--gpus", "0", "--queue", "q")
    assert fleet.cli("wait", first, mid, second, top).returncode == 0
    assert _run_order(fleet, [first, mid, second, top]) == [top, mid, first, second]


def test_static_worker_takes_only_tasks_that_fit(fleet: Fleet) -> None:
    _prepare_queues(fleet, "q")
    big = fleet.submit("q", "true", opts=("--gpus", "4"))
    small = fleet.submit("q", "true", opts=("--gpus", "2"))
    fleet.up("--gpus", "0,1", "--queue", "q")
    assert fleet.cli("wait", small, "--timeout", "30").returncode == 0
    time.sleep(0.5)
    assert fleet.task(big)["status"] == "queued"


def test_abort_kills_the_whole_process_group(fleet: Fleet, tmp_path: Path) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $! >> {pids}; sleep 300 & echo $! >> {pids}; python -c 'import time; time.sleep(300)'"
    task_id = fleet.submit("q", "bash", "-c", script)
    fleet.wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, what="grandchildren")
    fleet.wait_for(lambda: fleet.task(task_id)["status"] == "in_progress", what="start")
    leader = fleet.task(task_id)
    grandchildren = [int(p) for p in pids.read_text().split()]
    assert all(alive(p) for p in grandchildren)

    assert fleet.cli("abort", task_id).returncode == 0
    fleet.wait_for(lambda: fleet.task(task_id)["status"] == "stopped", timeout=10, what="stopped")
    assert not any(alive(p) for p in grandchildren)
    task = fleet.task(task_id)
    assert "aborted" in task["status_reason"]
    assert task["exit_code"] == -signal.SIGTERM
    assert leader["status"] == "in_progress"
    assert fleet.cli("wait", task_id).returncode == 1


def test_abort_of_queued_task_stops_it_at_once(fleet: Fleet) -> None:
    _prepare_queues(fleet, "q")
    task_id = fleet.submit("q", "true")
    assert fleet.cli("abort", task_id).returncode == 0
    task = fleet.task(task_id)
    assert task["status"] == "stopped" and task["attempt"] == 0


def test_timeout_fails_the_task_even_if_it_ignores_sigterm(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(300)"
    task_id = fleet.submit("q", "python", "-c", code, opts=("--timeout", "1"))
    result = fleet.cli("wait", task_id, "--timeout", "30")
    assert result.returncode == 1
    task = fleet.task(task_id)
    assert task["status"] == "failed"
    assert task["status_reason"] == "timeout"
    assert task["exit_code"] == -signal.SIGKILL  # grace period (2 s in the test config) ran out
    log = fleet.ok("logs", task_id, "--no-timestamps")
    assert "ready" in log and "SIGKILL" in log


def test_retries_keep_every_attempt(fleet: Fleet, tmp_path: Path) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    always = fleet.submit("q", "python", "-c", "import sys; print('boom'); sys.exit(3)", opts=("--retries", "2"))
    assert fleet.cli("wait", always).returncode == 1
    task = fleet.task(always)
    assert task["status"] == "failed" and task["attempt"] == 3 and task["exit_code"] == 3
    assert task["status_reason"].startswith("exit code 3") and "boom" in task["status_reason"]
    assert [a["status"] for a in task["attempts"]] == ["failed"] * 3

    counter = tmp_path / "count"
    flaky = (
        f"import sys, pathlib; p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) if p.exists() else 0;"
        " p.write_text(str(n + 1)); sys.exit(0 if n >= 1 else 1)"
    )
    task_id = fleet.submit("q", "python", "-c", flaky, opts=("--retries", "3"))
    assert fleet.cli("wait", task_id).returncode == 0
    task = fleet.task(task_id)
    assert task["status"] == "completed" and task["attempt"] == 2
    assert [a["status"] for a in task["attempts"]] == ["failed", "completed"]


def test_failed_command_not_found(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    task_id = fleet.submit("q", "no-such-program-here")
    assert fleet.cli("wait", task_id).returncode == 1
    task = fleet.task(task_id)
    assert task["status"] == "failed" and "no-such-program-here" in task["status_reason"]


def _running_sleep(fleet: Fleet) -> str:
    """One worker on GPU 0 serving queue q, running ``sleep 300``: the task's id."""
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    task_id = fleet.submit("q", "sleep", "300")
    fleet.wait_for(lambda: fleet.task(task_id)["status"] == "in_progress", what="start")
    return task_id


def test_stop_default_stops_running_tasks(fleet: Fleet) -> None:
    task_id = _running_sleep(fleet)
    with fleet.api() as api:
        pid = api.get(f"/tasks/{task_id}").json()
    stop = fleet.cli("stop", "--timeout", "30")
    assert stop.returncode == 0, stop.stderr
    db_task = fleet.task_row(task_id)
    assert db_task["status"] == "stopped"
    assert pid["status"] == "in_progress"
    assert fleet.processes() == []


def test_stop_drain_lets_running_tasks_finish(fleet: Fleet, tmp_path: Path) -> None:
    import subprocess
    import sys

    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    go = tmp_path / "go"
    code = f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)\nprint('done')"
    task_id = fleet.submit("q", "python", "-c", code)
    fleet.wait_for(lambda: fleet.task(task_id)["status"] == "in_progress", what="start")
    waiting = fleet.submit("q", "true")
    draining = subprocess.Popen(
        [sys.executable, "-m", "fleet.cli", "stop", "--drain"], env=fleet.env, stdout=subprocess.PIPE, text=True
    )
    fleet.wait_for(lambda: "draining" in fleet.ok("status"), what="draining")
    go.touch()  # only now may the running task finish
    out, _ = draining.communicate(timeout=60)
    assert draining.returncode == 0, out
    assert fleet.task_row(task_id)["status"] == "completed"
    assert fleet.task_row(waiting)["status"] == "queued"  # drained workers pull nothing new


def test_stop_requeue_puts_tasks_back_at_the_head(fleet: Fleet) -> None:
    running = _running_sleep(fleet)
    behind = fleet.submit("q", "true")
    assert fleet.cli("stop", "--requeue", "--timeout", "30").returncode == 0
    assert fleet.task_row(running)["status"] == "queued"
    # A new manager runs the requeued task first, as attempt 2.
    fleet.up("--gpus", "0", "--queue", "q")
    fleet.wait_for(lambda: fleet.task(running)["status"] == "in_progress", what="restart")
    task = fleet.task(running)
    assert task["attempt"] == 2
    assert [a["status"] for a in task["attempts"]] == ["stopped", "in_progress"]
    assert fleet.task(behind)["status"] == "queued"
    fleet.ok("abort", running)
    assert fleet.cli("wait", behind).returncode == 0


def test_stop_one_worker_keeps_the_others(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    fleet.up("--gpus", "1", "--queue", "q")
    fleet.ok("stop", f"{HOST}:gpu0", "--timeout", "30")
    workers = json.loads(fleet.ok("status", "--json"))["workers"]
    assert [w["id"] for w in workers] == [f"{HOST}:gpu1"]
    task_id = fleet.submit("q", "true")
    assert fleet.cli("wait", task_id).returncode == 0
    assert fleet.task(task_id)["worker"] == f"{HOST}:gpu1"


def test_up_is_idempotent_and_refuses_claimed_gpus(fleet: Fleet) -> None:
    fleet.up("--gpus", "0-3", "--queue", "q", "--create-queue")
    before = json.loads(fleet.ok("status", "--json"))["workers"]
    fleet.up("--gpus", "0-3", "--queue", "q")
    after = json.loads(fleet.ok("status", "--json"))["workers"]
    assert [(w["id"], w["pid"]) for w in before] == [(w["id"], w["pid"]) for w in after]

    clash = fleet.cli("up", "--gpus", "3-4", "--queue", "q")
    assert clash.returncode == 2
    assert f"GPU 3 is already claimed by worker {HOST}:gpu0,1,2,3" in clash.stderr
    fleet.up("--cpu-only", "--queue", "q")
    fleet.up("--cpu-only", "--queue", "q")  # the same CPU worker again: no change
    fleet.ok("queue", "create", "other")
    fleet.up("--cpu-only", "--queue", "other")
    ids = sorted(w["id"] for w in json.loads(fleet.ok("status", "--json"))["workers"])
    assert ids == sorted([f"{HOST}:gpu0,1,2,3", f"{HOST}:cpu", f"{HOST}:cpu:1"])


def test_cpu_worker_hides_gpus(fleet: Fleet) -> None:
    fleet.up("--cpu-only", "--queue", "cpu", "--create-queue")
    code = "import os; print(repr(os.environ['CUDA_VISIBLE_DEVICES']), os.environ['NVIDIA_VISIBLE_DEVICES'])"
    task_id = fleet.submit("cpu", "python", "-c", code)
    assert fleet.cli("wait", task_id).returncode == 0
    assert "'' none" in fleet.ok("logs", task_id, "--no-timestamps")


def test_crashed_worker_fails_its_task_and_is_restarted(fleet: Fleet) -> None:
    task_id = _running_sleep(fleet)
    with fleet.api() as api:
        worker = api.get(f"/workers/{HOST}:gpu0").json()
    fleet.wait_for(lambda: bool(fleet.task_row(task_id)["pid"]), what="task process recorded")
    task_pid = fleet.task_row(task_id)["pid"]
    assert alive(task_pid)

    os.kill(worker["pid"], signal.SIGKILL)
    fleet.wait_for(lambda: fleet.task(task_id)["status"] == "failed", timeout=10, what="task failed")
    assert fleet.task(task_id)["status_reason"] == "worker died"
    assert not alive(task_pid)

    def restarted() -> bool:
        with fleet.api() as api:
            w = api.get(f"/workers/{HOST}:gpu0").json()
        return bool(w["state"] == "idle" and w["pid"] != worker["pid"] and w["pid"] and alive(w["pid"]))

    fleet.wait_for(restarted, timeout=15, what="worker restart")
    again = fleet.submit("q", "true")
    assert fleet.cli("wait", again).returncode == 0


def test_logs_follow_streams_until_the_end(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    code = "import time\nfor i in range(5):\n    print('line', i)\n    time.sleep(0.2)"
    task_id = fleet.submit("q", "python", "-c", code)
    out = fleet.ok("logs", task_id, "--follow", "--no-timestamps", timeout=30)
    lines = [li for li in out.splitlines() if li.startswith("line")]
    assert lines == [f"line {i}" for i in range(5)]
    assert "ended: completed" in out


def test_manager_kill9_keeps_running_tasks(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    task_id = fleet.submit("q", "python", "-c", "import time; time.sleep(2); print('survived')")
    fleet.wait_for(lambda: fleet.task(task_id)["status"] == "in_progress", what="start")
    manager_pid = fleet.manager_info()["pid"]
    worker_pid = next(p.pid for p in fleet.processes() if "fleet.worker" in " ".join(p.cmdline()))
    os.kill(manager_pid, signal.SIGKILL)
    fleet.wait_for(lambda: not alive(manager_pid), what="manager gone")
    # The worker and its task go on without the manager and record the result.
    fleet.wait_for(lambda: fleet.task_row(task_id)["status"] == "completed", timeout=15, what="completed")
    assert alive(worker_pid)
    # A new manager adopts the running worker instead of starting another.
    fleet.up("--gpus", "0", "--queue", "q")
    with fleet.api() as api:
        assert api.get(f"/workers/{HOST}:gpu0").json()["pid"] == worker_pid
    assert "survived" in fleet.ok("logs", task_id)
    again = fleet.submit("q", "true")
    assert fleet.cli("wait", again).returncode == 0
    assert psutil.pid_exists(worker_pid)


def test_second_stop_forces_a_draining_stop(fleet: Fleet) -> None:
    import subprocess
    import sys

    task_id = _running_sleep(fleet)
    draining = subprocess.Popen(
        [sys.executable, "-m", "fleet.cli", "stop", "--drain"], env=fleet.env, stdout=subprocess.PIPE, text=True
    )
    fleet.wait_for(lambda: "draining" in fleet.ok("status"), what="draining")
    assert fleet.task(task_id)["status"] == "in_progress"
    fleet.ok("stop", "--timeout", "30")
    out, _ = draining.communicate(timeout=30)
    assert draining.returncode == 0, out
    assert fleet.task_row(task_id)["status"] == "stopped"
