"""Many hosts, one fleet: three managers on this machine (their own homes and
worker names) share one PostgreSQL store (the ``hosts`` fixture)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import Fleet, alive


def test_a_queue_served_by_three_hosts_runs_each_task_once_spread_over_them(hosts: list[Fleet]) -> None:
    for host in hosts:
        host.up("--queue", "q", "--cpu-only", "--create-queue")
    # a second each: every worker polls (or is woken) well within the nine seconds the queue lasts
    ids = [hosts[i % 3].submit("q", "sh", "-c", "sleep 1").strip() for i in range(9)]
    ended = {"completed", "failed", "aborted"}

    def rows() -> list[dict[str, object]]:
        return [json.loads(hosts[0].ok("show", "--json", task_id)) for task_id in ids]

    hosts[0].wait_for(lambda: all(r["status"] in ended for r in rows()), timeout=60, what="all nine tasks ended")
    done = rows()
    assert [r["status"] for r in done] == ["completed"] * 9
    assert all(r["attempt"] == 1 for r in done), "a task ran more than once"
    assert {r["host"] for r in done} == {"host0", "host1", "host2"}
    # every host sees the same fleet: each one's workers and tasks
    for host in hosts:
        status = host.ok("status")
        assert all(f"host{i}:cpu" in status for i in range(3)), status


# -- host scoping: a manager acts on its own host's workers only ----------------------------------


def _worker_row(host: Fleet, worker_id: str) -> dict[str, Any]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(host.store_url, row_factory=dict_row) as pg:
        found = pg.execute("SELECT * FROM workers WHERE id = %s", (worker_id,)).fetchone()
        assert found is not None, f"no worker {worker_id}"
        return dict(found)


def _host_row(host: Fleet, name: str) -> dict[str, Any] | None:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(host.store_url, row_factory=dict_row) as pg:
        found = pg.execute("SELECT * FROM hosts WHERE name = %s", (name,)).fetchone()
        return None if found is None else dict(found)


def _running_on(host: Fleet, task_id: str, name: str) -> bool:
    row = host.task_row(task_id)
    return bool(row["status"] == "in_progress" and row["host"] == name and row["pid"])


def _kill_manager(host: Fleet) -> None:
    pid = int(host.manager_info()["pid"])
    os.kill(pid, signal.SIGKILL)
    host.wait_for(lambda: not alive(pid), timeout=30, what=f"manager {pid} gone")


def test_stop_and_a_restart_on_one_host_leave_the_other_hosts_workers_and_tasks_alone(hosts: list[Fleet]) -> None:
    one, zero = hosts[1], hosts[0]
    one.up("--queue", "q", "--cpu-only", "--create-queue")
    task_id = one.submit("q", "sleep", "300")
    one.wait_for(lambda: _running_on(one, task_id, "host1"), timeout=60, what="the task running on host1")
    zero.up("--queue", "q", "--cpu-only")
    assert _worker_row(zero, "host0:cpu")["state"] == "idle"

    # `fleetctl stop` on host0: host0's worker stops, host1's and its task do not
    zero.ok("stop", "--timeout", "60")
    assert _worker_row(zero, "host0:cpu")["state"] == "dead"
    mine = _worker_row(one, "host1:cpu")
    assert (mine["state"], mine["stop_request"]) == ("busy", None)
    assert _running_on(one, task_id, "host1")

    # host0 again, then its manager and worker die (kill -9): its row still says idle,
    # with a pid that no longer runs (on its own machine, its next manager recovers it)
    zero.up("--queue", "q", "--cpu-only")
    _kill_manager(zero)
    for proc in zero.processes():
        proc.send_signal(signal.SIGKILL)
    zero.wait_for(lambda: not zero.processes(), timeout=30, what="host0's processes gone")
    before = _worker_row(zero, "host0:cpu")
    assert before["state"] == "idle" and before["pid"] and not alive(int(before["pid"]))

    # host1's manager restarts: it adopts its own worker and leaves host0's row as it is
    _kill_manager(one)
    one.up("--queue", "q", "--cpu-only")
    one.wait_for(lambda: "host1:cpu" in one.ok("status"), timeout=60, what="host1's manager back")
    after = _worker_row(zero, "host0:cpu")
    assert (after["state"], after["state_reason"], after["pid"]) == (
        before["state"],
        before["state_reason"],
        before["pid"],
    )
    assert _running_on(one, task_id, "host1") and one.task_row(task_id)["attempt"] == 1
    assert _worker_row(one, "host1:cpu")["state"] == "busy"
    one.ok("abort", task_id)


# -- a host frozen past its lease: its task moves on exactly once, and its stale copy records nothing --


def test_a_frozen_host_loses_its_task_to_another_host_and_its_stale_copy_records_nothing(
    hosts: list[Fleet], tmp_path: Path
) -> None:
    frozen = hosts[1]
    config = frozen.root / "fleet.conf"
    config.write_text(config.read_text() + "\nfleet.host_lease_seconds: 3\n")
    runs = tmp_path / "runs"
    frozen.up("--queue", "q", "--cpu-only", "--create-queue")
    # the first run is still running long after the freeze; the second ends soon
    script = f"if [ -e {runs} ]; then t=2; else t=300; fi; echo start >> {runs}; sleep $t; echo end >> {runs}"
    task_id = frozen.submit("q", "sh", "-c", script, opts=("--retries", "1"))
    frozen.wait_for(lambda: _running_on(frozen, task_id, "host1"), timeout=60, what="the task running on host1")
    for other in (hosts[0], hosts[2]):
        other.up("--queue", "q", "--cpu-only")
    stale = frozen.task_row(task_id)
    procs = frozen.processes()
    assert int(stale["pid"]) in {p.pid for p in procs}, "the task is one of host1's processes"
    task_procs = [p for p in procs if p.pid == int(stale["pid"]) or p.ppid() == int(stale["pid"])]
    for proc in procs:  # manager, worker, task: the whole host stops
        proc.send_signal(signal.SIGSTOP)
    try:
        hosts[0].wait_for(
            lambda: hosts[0].task_row(task_id)["attempt"] == 2, timeout=120, what="the task taken from host1"
        )
        lost = _host_row(hosts[0], "host1")
        assert lost is not None and lost["state"] == "lost" and lost["lost_by"] in ("host0", "host2")
        assert _worker_row(hosts[0], "host1:cpu")["state"] == "lost"
        moved = hosts[0].task_row(task_id)
        assert moved["host"] in ("host0", "host2")
        hosts[0].wait_for(
            lambda: hosts[0].task_row(task_id)["status"] == "completed", timeout=120, what="the second attempt done"
        )
    finally:
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGCONT)
    # the stale copy is killed at once, and host1 comes back in a new epoch with its worker
    frozen.wait_for(
        lambda: not any(alive(p.pid) for p in task_procs), timeout=60, what="host1's stale copy of the task killed"
    )
    frozen.wait_for(
        lambda: (_host_row(frozen, "host1") or {}).get("state") == "up", timeout=60, what="host1 registered again"
    )
    frozen.wait_for(
        lambda: _worker_row(frozen, "host1:cpu")["state"] in ("idle", "busy"), timeout=60, what="host1's worker back"
    )
    assert int((_host_row(frozen, "host1") or {})["epoch"]) == 2
    done = frozen.task_row(task_id)
    assert (done["status"], done["attempt"], done["exit_code"], done["host"]) == (
        "completed",
        2,
        0,
        moved["host"],
    )
    shown = json.loads(frozen.ok("show", "--json", task_id))
    assert shown["status"] == "completed" and shown["attempt"] == 2
    attempts = _attempts(frozen, task_id)
    assert [(a["attempt"], a["status"], a["host"], a["reason"]) for a in attempts] == [
        (1, "failed", "host1", "host host1 lost"),
        (2, "completed", moved["host"], ""),
    ]
    # host1's worker recorded nothing after the claim: no event of its on the task
    assert [e["new"] for e in _events(frozen, task_id) if e["actor"] == "worker:host1:cpu"] == ["in_progress"]
    # ran twice, completed once: the stale copy never reached its end
    assert runs.read_text().split() == ["start", "start", "end"]


def _attempts(host: Fleet, task_id: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(host.store_url, row_factory=dict_row) as pg:
        rows = pg.execute("SELECT * FROM task_attempts WHERE task_id = %s ORDER BY attempt", (task_id,)).fetchall()
        return [dict(r) for r in rows]


def _events(host: Fleet, task_id: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(host.store_url, row_factory=dict_row) as pg:
        rows = pg.execute(
            "SELECT * FROM events WHERE kind = 'task' AND subject = %s ORDER BY id", (task_id,)
        ).fetchall()
        return [dict(r) for r in rows]
