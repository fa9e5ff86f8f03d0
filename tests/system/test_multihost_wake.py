"""Wake-ups, aborts and forces across hosts (LISTEN/NOTIFY on the shared
PostgreSQL store): three managers on this machine (the ``hosts`` fixture).

host1's workers poll only every 300 s (its own config file), so a task of
host1's that starts, or a worker of host1's that pauses, within seconds of a
change made on host0 can only have heard of it through the notice that
host0's manager announced and host1's manager passed on."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import CONFIG, Fleet

LONG_POLL_S = 300
PROMPT_S = 20  # "well before the poll": generous for a loaded 2-core machine, far below LONG_POLL_S


def _long_poll(host: Fleet) -> None:
    Path(host.env["FLEET_CONFIG_FILE"]).write_text(CONFIG.replace("poll_interval: 2", f"poll_interval: {LONG_POLL_S}"))


def _show(host: Fleet, task_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(host.ok("show", "--json", task_id))
    return data


def _ended(host: Fleet, task_id: str) -> Callable[[], bool]:
    return lambda: _show(host, task_id)["status"] == "completed"


def _at(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _worker(host: Fleet, worker_id: str) -> dict[str, Any]:
    with host.api() as api:
        data: dict[str, Any] = api.get(f"/workers/{worker_id}").raise_for_status().json()
        return data


def _ready(host: Fleet, worker_id: str) -> None:
    """Until the worker's process runs and waits for work (its first pull done)."""
    host.wait_for(
        lambda: _worker(host, worker_id)["state_reason"].startswith("waiting for tasks"), what=f"{worker_id} waiting"
    )


def _two_hosts(hosts: list[Fleet]) -> tuple[Fleet, Fleet]:
    """host0 serves queue ``a``; host1, polling every 300 s, serves ``b`` alone."""
    here, there = hosts[0], hosts[1]
    _long_poll(there)
    there.up("--queue", "b", "--cpu-only", "--create-queue")
    here.up("--queue", "a", "--cpu-only", "--create-queue")
    _ready(there, "host1:cpu")
    _ready(here, "host0:cpu")
    return here, there


def test_a_task_submitted_on_one_host_starts_at_once_on_the_host_that_serves_its_queue(hosts: list[Fleet]) -> None:
    here, _ = _two_hosts(hosts)
    for _ in range(3):  # each wait would be up to 300 s without the notice
        task_id = here.submit("b", "true")
        here.wait_for(_ended(here, task_id), timeout=PROMPT_S, what="completed")
        task = _show(here, task_id)
        assert (task["worker"], task["host"]) == ("host1:cpu", "host1")
        assert _at(task["started_at"]) - _at(task["queued_at"]) < PROMPT_S


def test_an_abort_on_one_host_stops_the_task_running_on_another(hosts: list[Fleet]) -> None:
    here, there = _two_hosts(hosts)
    task_id = there.submit("b", "sleep", "600")  # started by host1's own datagram: the abort is what is tried
    here.wait_for(lambda: _show(here, task_id)["status"] == "in_progress", timeout=PROMPT_S, what="running")
    here.wait_for(lambda: there.task_row(task_id)["pid"] is not None, what="its pid recorded")
    pid = there.task_row(task_id)["pid"]
    asked = time.time()
    here.ok("abort", task_id)
    here.wait_for(lambda: _show(here, task_id)["status"] == "stopped", timeout=PROMPT_S, what="stopped")
    task = _show(here, task_id)
    assert task["host"] == "host1" and "abort" in task["status_reason"]
    assert _at(task["finished_at"]) - asked < PROMPT_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"the aborted task's process {pid} still runs")


def test_a_force_off_and_a_queue_tag_on_one_host_pause_a_worker_of_another(hosts: list[Fleet]) -> None:
    here, _ = _two_hosts(hosts)
    here.ok("force", "host1:cpu", "off")
    here.wait_for(lambda: _worker(here, "host1:cpu")["state"] == "paused", timeout=PROMPT_S, what="paused by force")
    assert "force" in _worker(here, "host1:cpu")["state_reason"]
    here.ok("force", "host1:cpu", "clear")
    here.wait_for(lambda: _worker(here, "host1:cpu")["state"] == "idle", timeout=PROMPT_S, what="active again")

    here.ok("queue", "tag", "b", "force_workers:off")
    here.wait_for(lambda: _worker(here, "host1:cpu")["state"] == "paused", timeout=PROMPT_S, what="paused by a tag")
    waiting = here.submit("b", "true")
    here.ok("queue", "untag", "b", "force_workers:off")
    # active again, and the task that waited starts at once
    here.wait_for(lambda: _show(here, waiting)["status"] == "completed", timeout=PROMPT_S, what="the task ran")
    assert _show(here, waiting)["host"] == "host1"
