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

from fleet.core.hosts import HostInfo
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
            line = next(li.split() for li in hosts_part.splitlines() if li.startswith(name))
            age, lease = line[2].split("s/")
            assert line[1] == "up" and 0 <= float(age) < float(lease.rstrip("s")) == 30, line  # registered, renewed
            assert line[3:] == ["1", "1", "0", "1"], line  # 1 worker, busy, no GPU, 1 task
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


def _register(url: str, name: str, *, lease: float, lost: bool) -> None:
    """A host registered in the store as its manager would register it; ``lost``: its
    lease is long past and another manager (here: host0's name) has declared it lost."""
    from fleet.store.postgres import PostgresStore

    store = PostgresStore(url)
    try:
        with psycopg.connect(url) as pg:
            (server_now,) = pg.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone() or (0.0,)
        at = server_now - 100 if lost else None
        store.register_host(name, HostInfo([0, 1], "test", "", 1), lease_seconds=lease, now=at)
        if lost:
            assert [h.name for h in store.declare_lost_hosts("host0")] == [name]
    finally:
        store.close()


def test_the_page_groups_workers_by_host_with_each_hosts_lease(hosts: list[Fleet], tmp_path: Path) -> None:
    """The page, from host0's manager: one heading row per host, each followed by its own
    workers (host1's a GPU worker on the stand-in NVML); a registered host shows its state
    and lease age, a lost one says lost (``status`` too); the report by host, and for one host.
    Screenshots at 1400 px and 400 px (nothing scrolls sideways)."""
    page_tools = pytest.importorskip("tests.metrics.test_page")
    from tests.nvml_standin import use_standin

    use_standin(hosts[1], count=1)
    gate = tmp_path / "go"
    for i, host in enumerate(hosts):
        (host.root / "fleet.conf").write_text(FAST_SAMPLES)
        host.up("--queue", f"q{i}", *(("--gpus", "0") if i == 1 else ("--cpu-only",)), "--create-queue")
    ids = [hosts[0].submit(f"q{i}", "sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done") for i in range(3)]
    hosts[0].wait_for(lambda: all(hosts[0].task_row(t)["status"] == "in_progress" for t in ids), timeout=60)
    _register(hosts[0].store_url, "host3", lease=300, lost=False)  # a host with no worker yet
    _register(hosts[0].store_url, "host4", lease=1, lost=True)
    status = hosts[2].ok("status", "--wide")
    lines = {li.split()[0]: li.split() for li in status.split("Hosts", 1)[1].split("Workers", 1)[0].splitlines()[2:]}
    assert lines["host3"][1] == "up" and float(lines["host3"][2].split("s/")[0]) < 300, status
    assert lines["host4"][1] == "lost" and float(lines["host4"][2].split("s/")[0]) > 1, status
    assert "host host4: lost" in status
    expect = page_tools.sync_api.expect
    workers = ["host0:cpu", "host1:gpu0", "host2:cpu"]

    with page_tools._browser() as (_, page):
        page.goto(hosts[0].ok("page").strip())
        for name in ("host0", "host1", "host2", "host3", "host4"):
            expect(page.locator(f'#workers tr.host[data-host="{name}"]')).to_be_visible()
        for worker, task in zip(workers, ids, strict=True):
            expect(page.locator(f'#workers tr[data-worker="{worker}"] .task')).to_contain_text(task[:12])
        order = page.locator("#workers tbody tr").evaluate_all(
            "(rows) => rows.map((r) => r.classList.contains('host') ? 'host ' + r.dataset.host : r.dataset.worker)"
        )
        assert order == [
            "host host0",
            "host0:cpu",
            "host host1",
            "host1:gpu0",
            "host host2",
            "host2:cpu",
            "host host3",
            "host host4",
        ], order
        for name in ("host0", "host1", "host2"):  # their managers registered them and renew their leases
            heading = page.locator(f'tr.host[data-host="{name}"]')
            expect(heading.locator(".badge")).to_have_text("up")
            assert 0 <= float(heading.locator(".lease").get_attribute("data-lease-age") or "nan") < 30
        expect(page.locator('tr.host[data-host="host1"]')).to_contain_text("1 GPU")
        expect(page.locator('tr.host[data-host="host0"]')).to_contain_text("CPU only")
        up = page.locator('tr.host[data-host="host3"]')
        expect(up.locator(".badge")).to_have_text("up")
        expect(up.locator(".lease")).to_contain_text("lease renewed")
        assert float(up.locator(".lease").get_attribute("data-lease-age") or "nan") < 300
        expect(page.locator('tr.host[data-host="host4"] .badge')).to_have_text("lost")
        expect(page.locator('tr.host[data-host="host4"] .lease')).to_contain_text("lease expired")
        expect(up).to_contain_text("2 GPUs")  # what the host registered, though no worker holds one
        page_tools._shots(page, tmp_path, "hosts")

        # the report by host, then for one host
        gate.touch()
        hosts[0].wait_for(lambda: all(hosts[0].task_row(t)["status"] == "completed" for t in ids), timeout=60)
        page.locator('.tab[data-view="report"]').click()
        page.locator("#report-by").select_option("host")
        page.locator('#report-form button[type="submit"]').click()
        for name in ("host0", "host1", "host2"):
            expect(page.locator(f'#report-table tr[data-key="{name}"]')).to_be_visible()
        page.locator("#report-host").select_option("host1")
        page.locator('#report-form button[type="submit"]').click()
        expect(page.locator('#report-table tr[data-key="host0"]')).to_have_count(0)
        expect(page.locator('#report-table tr[data-key="host1"]')).to_be_visible()
        expect(page.locator("#report-summary")).to_contain_text("host1")
        page_tools._shots(page, tmp_path, "hosts-report")
