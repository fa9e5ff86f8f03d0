"""Fleet-wide views (issue 14 item 8): three hosts on one PostgreSQL store,
each running a task of its own queue.  ``status`` and ``tasks`` on host0 show
every host's workers and tasks, ``--host host1`` only host1's, an unknown host
is refused naming the known ones; ``report --by host`` gives each host's
figures (CPU-only workers: no GPU-hours, their tasks' wall time in
task-hours); each host's sampler writes its own rows, each carrying its host;
the page groups the workers by host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import CONFIG, Fleet

HOSTS = ("host0", "host1", "host2")
FAST_SAMPLES = CONFIG + "fleet { metrics { interval: 0.5 } }\n"


def _start(hosts: list[Fleet], gate: Path) -> list[str]:
    """Each host serves its own queue ``q<i>`` with a CPU-only worker; one task each, submitted
    from host0, waits for ``gate`` and then sleeps ``4 i`` seconds, so that no host's figure in the
    report could pass for another's (they start a second or so apart, in host order)."""
    for i, host in enumerate(hosts):
        (host.root / "fleet.conf").write_text(FAST_SAMPLES)
        host.up("--queue", f"q{i}", "--cpu-only", "--create-queue")
    ids = [
        hosts[0].submit(f"q{i}", "sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done; sleep {4 * i}")
        for i in range(len(hosts))
    ]
    hosts[0].wait_for(
        lambda: all(hosts[0].task_row(t)["status"] == "in_progress" for t in ids), timeout=60, what="three tasks run"
    )
    return ids


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as pg:
        return list(pg.execute(sql).fetchall())


def test_status_tasks_and_report_cover_every_host_and_filter_one(hosts: list[Fleet], tmp_path: Path) -> None:
    gate = tmp_path / "go"
    ids = _start(hosts, gate)
    ran_on = {t: hosts[0].task_row(t)["host"] for t in ids}
    assert list(ran_on.values()) == list(HOSTS), ran_on  # queue q<i> is served by host<i> alone

    # every host's workers and tasks, from host0 (and from host2: any host sees the fleet)
    for viewer in (hosts[0], hosts[2]):
        status = viewer.ok("status", "--wide")
        hosts_part = status.split("Hosts", 1)[1].split("Workers", 1)[0]
        for name in HOSTS:
            assert f"{name}:cpu" in status, status
            line = next(li for li in hosts_part.splitlines() if li.startswith(name))
            assert line.split() == [name, "1", "1", "0", "1"], line  # 1 worker, busy, no GPU, 1 task
        for task in ids:
            assert task in status, status
        listed = json.loads(viewer.ok("tasks", "--json"))
        assert {t["id"]: t["host"] for t in listed["tasks"]} == ran_on

    # one host
    one = hosts[0].ok("status", "--host", "host1", "--wide")
    assert "host1:cpu" in one and "host0:cpu" not in one and "host2:cpu" not in one, one
    assert ids[1] in one and ids[0] not in one and ids[2] not in one
    workers = json.loads(hosts[0].ok("status", "--host", "host1", "--json"))["workers"]
    assert [w["id"] for w in workers] == ["host1:cpu"]
    only = json.loads(hosts[0].ok("tasks", "--host", "host1", "--json"))
    assert [t["id"] for t in only["tasks"]] == [ids[1]] and only["total"] == 1
    text = hosts[0].ok("tasks", "--host", "host1", "--wide")
    assert ids[1] in text and ids[0] not in text and ids[2] not in text

    # an unknown host: exit 2, one line naming the known hosts; the API's 404 names its field
    for command in ("status", "tasks", "report"):
        bad = hosts[0].cli(command, "--host", "host9")
        assert bad.returncode == 2, (command, bad.stdout, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert "host9" in bad.stderr and "host0, host1, host2" in bad.stderr, bad.stderr
    with hosts[1].api() as api:
        for path in ("/tasks", "/workers", "/report", "/metrics"):
            answer = api.get(path, params={"host": "host9"})
            assert answer.status_code == 404, (path, answer.text)
            assert answer.json()["field"] == "host" and "host0, host1, host2" in answer.json()["error"]

    # samples: each host's sampler writes its own workers' and tasks' rows, each with its host
    url = hosts[0].store_url

    def sampled() -> bool:
        found = _rows(url, "SELECT DISTINCT host FROM metrics_task")
        return sorted(h for (h,) in found) == list(HOSTS)

    hosts[0].wait_for(sampled, timeout=30, what="every host's task samples")
    for worker, host in _rows(url, "SELECT DISTINCT worker, host FROM metrics_worker"):
        assert worker == f"{host}:cpu", (worker, host)  # never another host's worker
    for task, host in _rows(url, "SELECT DISTINCT task, host FROM metrics_task"):
        assert ran_on[task] == host, (task, host)  # a pid is measured on its own host only
    with hosts[2].api() as api:
        series = api.get("/metrics", params={"kind": "worker", "since": "10m", "host": "host1"}).json()["series"]
        assert [s["id"] for s in series] == ["host1:cpu"] and series[0]["labels"]["host"] == "host1"

    # the tasks end; the report, from host1, by host
    gate.touch()
    hosts[0].wait_for(
        lambda: all(hosts[0].task_row(t)["status"] == "completed" for t in ids), timeout=60, what="three tasks done"
    )
    answer = json.loads(hosts[1].ok("report", "--by", "host", "--since", "1h", "--json"))
    rows = {r["key"]: r for r in answer["rows"]}
    assert sorted(rows) == list(HOSTS)
    for task in ids:
        row, t = rows[ran_on[task]], hosts[0].task_row(task)
        assert row["task_hours"] == pytest.approx((t["finished_at"] - t["started_at"]) / 3600, abs=1e-4), row
        assert (row["completed"], row["failed"], row["busy_gpu_hours"], row["idle_gpu_hours"]) == (1, 0, 0, 0), row
    ran = sorted((hosts[0].task_row(t)["finished_at"] - hosts[0].task_row(t)["started_at"]) / 3600 for t in ids)
    assert ran[1] - ran[0] > 3e-4 and ran[2] - ran[1] > 3e-4, ran  # the check above tells the hosts apart
    assert answer["totals"]["task_hours"] == pytest.approx(sum(r["task_hours"] for r in rows.values()), abs=2e-4)
    text = hosts[1].ok("report", "--by", "host", "--since", "1h")
    assert all(any(li.startswith(name) for li in text.splitlines()) for name in HOSTS), text
    one_host = json.loads(hosts[1].ok("report", "--by", "queue", "--host", "host2", "--since", "1h", "--json"))
    assert [r["key"] for r in one_host["rows"]] == ["q2"] and one_host["host"] == "host2"
    assert one_host["totals"]["task_hours"] == rows["host2"]["task_hours"]
