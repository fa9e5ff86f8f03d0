"""Dynamic GPU pools on many hosts: a waiting task reserves GPUs on one host only.

Two hosts (the ``hosts`` fixture: their own managers, one PostgreSQL store),
each a pool over four stand-in GPUs (tests/standin_nvml: this machine has no
GPU).  A quad task waits behind duals on both: exactly one host holds GPUs
for it, the other keeps serving the duals, and the quad starts on its holder
as soon as four GPUs are free there.  Each task reports what it saw
(tests/taskview.py); the checks are made from that view and the store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import Fleet
from tests.nvml_standin import use_standin
from tests.taskview import VIEW, views_of


def _pool(fleet: Fleet, host: str) -> dict[str, Any]:
    """What the pool of ``host`` last published (read through ``fleet``'s API: any host shows every host)."""
    with fleet.api() as api:
        worker: dict[str, Any] = api.get(f"/workers/{host}:dgpu").raise_for_status().json()
    return worker["pool"] or {"children": [], "reservations": [], "waiting": {}}


def _show(fleet: Fleet, task_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fleet.ok("show", "--json", task_id))
    return data


def _store(fleet: Fleet, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(fleet.store_url) as pg:
        return list(pg.execute(sql, params).fetchall())


def test_a_waiting_quad_reserves_gpus_on_one_host_while_the_other_serves_duals(
    hosts: list[Fleet], tmp_path: Path
) -> None:
    pair = hosts[:2]
    for host in pair:
        use_standin(host, count=4)
        host.up("--gpus", "0-3", "--queue", "quad=4", "dual=2", "--create-queue")
    views = tmp_path / "views"

    def submit(queue: str, until: float | Path) -> str:
        return hosts[0].submit(queue, "python", "-c", VIEW, str(views), str(until))

    release = [tmp_path / f"release{i}" for i in range(4)]
    first = [submit("dual", r) for r in release]  # every GPU of both hosts, until released
    hosts[0].wait_for(
        lambda: all(_show(hosts[0], t)["status"] == "in_progress" for t in first), timeout=60, what="duals running"
    )
    on = {t: _show(hosts[0], t)["host"] for t in first}
    assert sorted(on.values()) == ["host0", "host0", "host1", "host1"]

    quad = submit("quad", 0.3)

    def holders() -> list[str]:
        return [h for h in ("host0", "host1") if any(r["task"] == quad for r in _pool(hosts[0], h)["reservations"])]

    hosts[0].wait_for(lambda: len(holders()) == 1, timeout=30, what="the quad reserved by one pool")
    holder = holders()[0]
    other = "host1" if holder == "host0" else "host0"
    hosts[0].wait_for(
        lambda: (
            _pool(hosts[0], other)["waiting"].get("quad", "").startswith(f"task {quad[:8]} is reserved on {holder}")
        ),
        timeout=30,
        what="the other pool seeing the reservation",
    )
    assert holders() == [holder]  # the other pool never took it over
    stream = [submit("dual", 0.5) for _ in range(4)]

    # two GPUs free on the host that does not hold the quad: they go to the duals, not held idle
    held_there = [t for t in first if on[t] == other]
    release[first.index(held_there[0])].touch()
    hosts[0].wait_for(
        lambda: any(_show(hosts[0], t)["status"] != "queued" for t in stream),
        timeout=30,
        what="a dual of the stream started on the other host",
    )
    # two GPUs free on the holder: held for the quad, not given to the duals behind it
    held_here = [t for t in first if on[t] == holder]
    release[first.index(held_here[0])].touch()
    hosts[0].wait_for(
        lambda: [len(r["gpus"]) for r in _pool(hosts[0], holder)["reservations"]] == [2],
        timeout=30,
        what="two GPUs held for the quad",
    )
    assert _show(hosts[0], quad)["status"] == "queued"
    release[first.index(held_here[1])].touch()  # four free on the holder: the quad starts there
    assert hosts[0].cli("wait", quad, "--timeout", "60").returncode == 0
    release[first.index(held_there[1])].touch()
    assert hosts[0].cli("wait", *first, *stream, "--timeout", "90").returncode == 0

    done = {t: _show(hosts[0], t) for t in [*first, *stream, quad]}
    assert all((d["status"], d["attempt"]) == ("completed", 1) for d in done.values())
    assert done[quad]["host"] == holder
    seen = views_of(views)
    assert set(seen) == set(done)
    # the quad was not starved: the holder started no dual of the stream before it, while
    # the other host did (it served the duals instead of holding GPUs for the quad too)
    assert all(seen[t]["start"] > seen[quad]["start"] for t in stream if done[t]["host"] == holder)
    assert any(seen[t]["start"] < seen[quad]["start"] for t in stream if done[t]["host"] == other)
    # one pool ever reserved it, and nothing is left reserved
    reserved = _store(hosts[0], "SELECT new FROM events WHERE kind = 'reservation' AND subject = %s", quad)
    assert reserved == [(f"{holder}:dgpu",)]
    assert _store(hosts[0], "SELECT task_id FROM gpu_reservations") == []
    # no GPU double-booked: tasks that overlapped in time on one host shared no GPU index
    items = list(seen.items())
    for i, (a, va) in enumerate(items):
        for b, vb in items[i + 1 :]:
            if done[a]["host"] == done[b]["host"] and va["start"] < vb["end"] and vb["start"] < va["end"]:
                assert not set(va["gpus"]) & set(vb["gpus"]), (done[a], done[b])
    attempts = _store(hosts[0], "SELECT task_id, host, gpus, started_at, finished_at FROM task_attempts")
    for i, (a, host_a, gpus_a, start_a, end_a) in enumerate(attempts):
        for b, host_b, gpus_b, start_b, end_b in attempts[i + 1 :]:
            if host_a == host_b and start_a < end_b and start_b < end_a:
                assert not set(json.loads(gpus_a)) & set(json.loads(gpus_b)), (a, b)
