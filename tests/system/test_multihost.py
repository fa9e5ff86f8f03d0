"""Many hosts, one fleet: three managers on this machine (their own homes and
worker names) share one PostgreSQL store (the ``hosts`` fixture)."""

from __future__ import annotations

import json

from tests.conftest import Fleet


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
