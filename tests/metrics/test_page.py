"""The web page in a real headless Chromium (Debian's ``chromium``, driven by playwright).

A real manager runs a real task that prints a line every 0.2 s.  The page
must show the busy worker and the running task, follow the log live, force
the worker off and on (checked through the API), tag a queue, and abort the
task with its button only once the person confirms (Cancel aborts nothing;
checked through the API).  The clone form starts on the task's own queue.
Every time shown is the browser's local time with its zone.  At 800 px and
at 400 px (a phone) nothing scrolls sideways.  A dynamic pool shows its
per-task workers as rows under it, in the overview and in the report by
worker; the report's utilization chart says what it draws (GPU utilization
with NVML — the stand-in here —, else host CPU) and has one point per
roll-up interval.  An array (a sweep) is one row with its counts that
expands to its tasks; its abort asks first.  Screenshots of each view at 1400 px and 400 px go to the
test's tmp folder, and one copy to ``/tmp/fleet-page.png``.

Skipped only where Chromium or playwright is missing; ``tests/run.sh``
installs both, so CI runs it.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from fleet.metrics.storage import ROLLUP_S
from tests.conftest import CONFIG, Fleet
from tests.nvml_standin import use_standin

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} is not installed")

WORKER = f"{socket.gethostname()}:gpu0"
GPU = f"{socket.gethostname()}:0"
TICKER = "import time\nfor i in range(3000):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"


def _force(fleet: Fleet) -> object:
    with fleet.api() as api:
        return (
            api.get(f"/workers/{WORKER}").raise_for_status().json()["runtime_properties"].get("force", {}).get("value")
        )


def _drains(fleet: Fleet) -> dict[str, str]:
    with fleet.api() as api:
        return {d["name"]: d["reason"] for d in api.get("/gpus").raise_for_status().json()["drained"]}


HOST = socket.gethostname()
ZONE, ZONE_NAME, ZONE_OFFSET = "Asia/Kolkata", "GMT+5:30", timedelta(hours=5, minutes=30)  # no DST, not UTC


@contextmanager
def _browser() -> Iterator[tuple[Any, Any]]:
    """Chromium and a page in the zone ZONE (en-US); no script error may happen on the page."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1300, "height": 1000}, timezone_id=ZONE, locale="en-US")
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield browser, page
        browser.close()
    assert errors == []


def _fits(page: Any, width: int) -> None:
    """At ``width`` px the page does not scroll sideways (names what sticks out if it does)."""
    page.set_viewport_size({"width": width, "height": 900})
    wide, inner, culprits = page.evaluate(
        """() => [document.documentElement.scrollWidth, innerWidth,
            [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > innerWidth + 0.5)
              .slice(-5).map((e) => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className)]"""
    )
    assert wide <= inner, f"at {width} px the page is {wide} px wide: {culprits}"


def _shots(page: Any, folder: Path, name: str) -> None:
    """Screenshots of the current view at 1400 px and at 400 px (a phone), each checked for width."""
    for width in (1400, 400):
        _fits(page, width)
        # the report's charts are drawn again for the width they get
        page.wait_for_function(
            "() => document.getElementById('view-report').hidden"
            " || +document.querySelector('#chart-util svg').getAttribute('width') <= innerWidth"
        )
        page.screenshot(path=str(folder / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1300, "height": 1000})


def _chart_points(page: Any, series: str) -> list[int]:
    """The times (epoch seconds) of one series' points in the utilization chart; its line
    has a vertex for each of them."""
    path = page.locator(f'#chart-util path[data-series="{series}"]')
    vertices = len(re.findall(r"[ML]", path.get_attribute("d") or ""))
    index = page.locator("#chart-util path.line").evaluate_all(
        f"(paths) => paths.findIndex((p) => p.dataset.series === {json.dumps(series)})"
    )
    times = page.locator(f"#chart-util circle.c{index % 6}").evaluate_all("(dots) => dots.map((d) => +d.dataset.t)")
    assert vertices == len(times), (vertices, times)
    return [int(t) for t in times]


def _api_points(fleet: Fleet, kind: str, series: str) -> list[int]:
    with fleet.api() as api:
        answer = api.get("/metrics", params={"kind": kind, "since": "24h", "step": ROLLUP_S}).raise_for_status().json()
    return next([int(t) for t in s["t"]] for s in answer["series"] if s["id"] == series)


def _one_per_rollup(chart: list[int], api: list[int]) -> None:
    """The chart's points are the API's one-per-roll-up-interval series (the API, asked a
    moment later, may have one minute more)."""
    assert chart and all(t % ROLLUP_S == 0 for t in chart) and chart == sorted(set(chart)), chart
    assert api[: len(chart)] == chart and len(api) - len(chart) <= 1, (chart, api)


def test_page_shows_live_state_and_its_buttons_work(fleet: Fleet, tmp_path: Path) -> None:
    (fleet.root / "fleet.conf").write_text(CONFIG + "fleet { metrics { interval: 0.5 } }\n")
    # queue aaa is listed before q: the clone form must not just take the first queue
    fleet.up("--gpus", "0", "--queue", "aaa", "q", "--create-queue")
    task = fleet.submit("q", sys.executable, "-c", TICKER, opts=("--name", "ticker", "--env", "API_TOKEN=real-secret"))
    fleet.wait_for(lambda: fleet.task(task)["status"] == "in_progress", what="task running")
    expect = sync_api.expect

    with _browser() as (browser, page):
        # not logged in: the page's files load, the data does not, and it says what to do
        page.goto(fleet.url + "/")
        expect(page.locator("#login-bar")).to_be_visible()
        expect(page.locator("#login-bar")).to_contain_text("fleetctl page")
        expect(page.locator(f'#workers tr[data-worker="{WORKER}"]')).to_have_count(0)

        # the one-time link: the code is in the fragment, traded for an HttpOnly cookie,
        # then gone from the address bar and from history
        link = fleet.ok("page").strip()
        assert link.startswith(fleet.url + "/#login=")
        page.goto(link)
        expect(page.locator("#login-bar")).to_be_hidden()
        assert "login=" not in page.url
        assert "login=" not in str(page.evaluate("location.href + history.length + JSON.stringify(history.state)"))
        (cookie,) = page.context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.evaluate("document.cookie") == ""  # the page's script cannot read it

        # the same link a second time, in a fresh browser context: refused
        other = browser.new_context().new_page()
        other.goto(link)
        expect(other.locator("#status")).to_contain_text("used or expired")
        expect(other.locator("#login-bar")).to_be_visible()
        other.context.close()

        row = page.locator(f'#workers tr[data-worker="{WORKER}"]')
        expect(row.locator(".state")).to_contain_text("busy")
        expect(row.locator(".task")).to_contain_text(task[:12])
        expect(page.locator(f'#tasks tr[data-task="{task}"]')).to_contain_text("in_progress")
        expect(page.locator('#queues tr[data-queue="q"]')).to_contain_text("1")  # running

        # the log, live: more lines arrive while we watch
        page.locator(f'#tasks tr[data-task="{task}"] a').click()
        log = page.locator("#log")
        expect(log).to_contain_text("tick 1")
        seen = log.inner_text().count("tick")
        page.wait_for_function(
            f"document.getElementById('log').textContent.split('tick').length - 1 >= {seen + 5}", timeout=10_000
        )
        expect(page.locator('#tp-figures dd[data-figure="peak RSS"]')).to_contain_text("MB")

        # the log's UTC stamps are shown in the browser's local time, its zone named above the log
        expect(page.locator("#log-zone")).to_contain_text(ZONE_NAME)
        with fleet.api() as api:
            raw = api.get(f"/tasks/{task}/log").raise_for_status().text.splitlines()[0]
        stamp, rest = raw.split(" ", 1)
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(timezone(ZONE_OFFSET))
        shown = f"{at:%b} {at.day}, {at:%H:%M:%S}.{at.microsecond // 1000:03d} {rest}"
        assert log.inner_text().splitlines()[0] == shown, (raw, shown)

        # force the worker off, then on, then clear it: each checked through the API
        for action, value in (("force-off", "off"), ("force-on", "on"), ("force-clear", None)):
            row.locator(f'button[data-action="{action}"]').click()
            fleet.wait_for(lambda value=value: _force(fleet) == value, timeout=10, what=f"force {value}")  # type: ignore[misc]
            if value is not None:
                expect(row.locator(f'button[data-action="{action}"]')).to_have_class("on")

        # drain GPU 0 with a reason, then undrain it (issue 17): each checked through the API
        gpu = page.locator(f'#gpus tr[data-gpu="{GPU}"]')
        gpu.locator('input[data-field="drain-reason"]').fill("fan noise")
        gpu.locator('button[data-action="drain"]').click()
        fleet.wait_for(lambda: _drains(fleet) == {GPU: "fan noise"}, timeout=10, what="GPU 0 drained")
        expect(gpu.locator(".state")).to_contain_text("by hand: fan noise")
        gpu.locator('button[data-action="undrain"]').click()
        fleet.wait_for(lambda: _drains(fleet) == {}, timeout=10, what="GPU 0 undrained")

        # tag the queue
        tags = page.locator('#queues input[data-queue="q"]')
        tags.fill("team-a, nightly")
        page.locator('#queues tr[data-queue="q"] button[data-action="save-tags"]').click()
        fleet.wait_for(lambda: fleet.ok("queues", "--json").count("nightly") == 1, timeout=10, what="queue tagged")

        # a time for people: the browser's local time with its zone
        started = datetime.fromisoformat(fleet.task(task)["started_at"].replace("Z", "+00:00"))
        local = started.astimezone(timezone(ZONE_OFFSET))
        cell = page.locator(f'#tasks tr[data-task="{task}"] td.when')
        expect(cell).to_contain_text(ZONE_NAME)
        expect(cell).to_contain_text(local.strftime("%I:%M:%S"))
        expect(page.locator('#tp-figures dd[data-figure="started"]')).to_contain_text(ZONE_NAME)
        expect(page.locator("#status")).to_contain_text(ZONE_NAME)

        # the clone form starts on the task's own queue, not the first one listed
        assert page.locator("#tp-queue option").first.inner_text() == "aaa"
        expect(page.locator("#tp-queue")).to_have_value("q")

        page.screenshot(path=str(tmp_path / "fleet-page.png"), full_page=True)
        shutil.copyfile(tmp_path / "fleet-page.png", "/tmp/fleet-page.png")
        _shots(page, tmp_path, "overview")

        # abort asks first; Cancel (from the table's button) and Escape (from the panel's) abort nothing
        page.locator(f'#tasks tr[data-task="{task}"] button[data-action="abort"]').click()
        dialog = page.locator("#confirm")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text(f"Abort task {task[:12]} (ticker)?")
        _shots(page, tmp_path, "abort-confirm")
        dialog.locator('button[value="cancel"]').click()
        expect(dialog).to_be_hidden()
        expect(page.locator("#status")).to_contain_text("cancelled")
        page.locator("#tp-abort").click()
        expect(dialog).to_be_visible()
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(page.locator("#status")).to_contain_text("cancelled")
        after = fleet.task(task)
        assert after["status"] == "in_progress" and after["attempt"] == 1, after
        expect(log).to_contain_text(f"tick {seen + 10}")  # still running, still printing

        # abort, confirmed, from the task panel: the task ends stopped
        page.locator("#tp-abort").click()
        dialog.locator("#confirm-yes").click()
        fleet.wait_for(lambda: fleet.task(task)["status"] == "stopped", timeout=20, what="task stopped")
        expect(page.locator("#tp-status")).to_have_text("stopped")
        expect(row.locator(".state")).not_to_contain_text("busy")

        # clone it with edited arguments and environment, and enqueue the clone
        page.locator("#tp-edit summary").click()
        args = [sys.executable, "-c", "import os; print('edited', os.environ['API_TOKEN'], os.environ['EXTRA'])"]
        page.locator("#tp-args").fill("\n".join(args))
        env = page.locator("#tp-env")
        assert env.input_value() == "API_TOKEN=********"  # the page never sees the secret
        env.fill("API_TOKEN=********\nEXTRA=yes")
        page.locator("#tp-clone").click()
        expect(page.locator("#tp-id")).not_to_have_text(task)
        clone = page.locator("#tp-id").inner_text()
        fleet.wait_for(lambda: fleet.task(clone)["status"] == "completed", timeout=20, what="clone completed")
        assert fleet.task(clone)["script"]["command"] == args and fleet.task(clone)["parent"] == task
        assert fleet.task(clone)["queue"] == "q"
        expect(page.locator("#log")).to_contain_text("edited real-secret yes")  # the hidden value was kept
        for width in (800, 400):
            _fits(page, width)
        page.set_viewport_size({"width": 1300, "height": 1000})

        # the report view: by GPU first; no NVML here, so the chart is the host's CPU and says so
        page.locator('.tab[data-view="report"]').click()
        expect(page.locator("#report-by")).to_have_value("gpu")
        expect(page.locator("#chart-hours svg rect").first).to_be_attached()
        expect(page.locator(f'#report-table tr[data-key="{HOST}:gpu0"]')).to_be_visible()
        expect(page.locator("#report-table")).to_contain_text("total")
        expect(page.locator("#util-title")).to_contain_text("Host CPU")
        expect(page.locator("#util-title")).to_contain_text("no NVML")
        expect(page.locator("#util-title")).to_contain_text("one point per minute")
        chart = page.locator("#chart-util svg")
        assert chart.get_attribute("data-kind") == "host-cpu" and chart.get_attribute("data-step") == str(ROLLUP_S)
        expect(page.locator("#report-summary")).to_contain_text(ZONE_NAME)
        points = _chart_points(page, f"host CPU ({HOST})")
        _one_per_rollup(points, _api_points(fleet, "host", HOST))
        page.screenshot(path=str(tmp_path / "fleet-report.png"), full_page=True)
        _shots(page, tmp_path, "report")
        for width in (800, 400):
            _fits(page, width)


def test_a_pool_nests_its_task_workers_and_the_report_shows_gpu_utilization(fleet: Fleet, tmp_path: Path) -> None:
    """A dynamic pool over four GPUs (the STAND-IN NVML: this machine has no GPU)
    runs two tasks, each in its own per-task worker.  The overview shows the pool
    with both task links, separated, and a row for each per-task worker under it;
    the report by worker (page, API and ``fleetctl report``) nests them under the
    pool; the utilization chart is GPU utilization (70 % on GPU 0, as the stand-in
    says), one point per roll-up interval over at least two of them."""
    (fleet.root / "fleet.conf").write_text(CONFIG + "fleet { metrics { interval: 0.5 } }\n")
    use_standin(fleet, count=4, util={"0": 70})
    fleet.up("--gpus", "0-3", "--queue", "any=1", "--create-queue")
    pool = f"{HOST}:dgpu"
    tasks = [fleet.submit("any", sys.executable, "-c", TICKER, opts=("--name", f"t{i}")) for i in range(2)]
    fleet.wait_for(lambda: all(fleet.task(t)["status"] == "in_progress" for t in tasks), what="both tasks running")
    runs_as = {fleet.task(t)["worker"]: t for t in tasks}
    assert set(runs_as) == {f"{HOST}:gpu0", f"{HOST}:gpu1"}, runs_as
    expect = sync_api.expect

    # the report by worker, in the API and the CLI: the per-task workers under the pool
    with fleet.api() as api:
        answer = api.get("/report", params={"since": "1h", "by": "worker"}).raise_for_status().json()
        assert api.get("/report").raise_for_status().json()["by"] == "gpu"
    assert [r["key"] for r in answer["rows"]] == [pool], answer["rows"]
    assert [c["key"] for c in answer["rows"][0]["children"]] == sorted(runs_as)
    assert all(c["parent"] == pool for c in answer["rows"][0]["children"])
    table = fleet.ok("report", "--since", "1h", "--by", "worker")
    lines = [line.strip() for line in table.splitlines()]
    at = next(i for i, line in enumerate(lines) if line.startswith(pool))
    assert lines[at + 1].startswith(f"└ {HOST}:gpu0") and lines[at + 2].startswith(f"└ {HOST}:gpu1"), table
    assert json.loads(fleet.ok("report", "--json"))["by"] == "gpu"
    rows = csv.DictReader(io.StringIO(fleet.ok("report", "--since", "1h", "--by", "worker", "--csv")))
    nested = [(r["key"], r["parent"]) for r in rows]
    assert nested == [(pool, ""), (f"{HOST}:gpu0", pool), (f"{HOST}:gpu1", pool), ("total", "")], nested

    # at least two roll-up intervals of GPU samples, so the chart has a line to draw
    fleet.wait_for(lambda: len(_api_points(fleet, "gpu", "0")) >= 2, timeout=90, what="two minutes of GPU samples")

    with _browser() as (_, page):
        page.goto(fleet.ok("page").strip())

        cell = page.locator(f'#workers tr[data-worker="{pool}"] .task')
        expect(cell.locator("a")).to_have_count(2)
        expect(cell).to_have_text(re.compile(r"^[0-9a-f]{12}, [0-9a-f]{12}$"))
        assert {a[:12] for a in cell.inner_text().split(", ")} == {t[:12] for t in tasks}
        for worker, task in runs_as.items():
            child = page.locator(f'#workers tr.child[data-worker="{worker}"][data-parent="{pool}"]')
            expect(child).to_contain_text(task[:12])
            expect(child.locator(".state")).to_contain_text("busy")
        children = page.locator("#workers tbody tr").evaluate_all(
            "(rows) => rows.map((r) => r.dataset.worker || 'host ' + r.dataset.host)"
        )
        assert children == [f"host {HOST}", pool, f"{HOST}:gpu0", f"{HOST}:gpu1"], children  # under the pool
        _shots(page, tmp_path, "pool")

        page.locator('.tab[data-view="report"]').click()
        expect(page.locator("#util-title")).to_contain_text("GPU utilization")
        expect(page.locator("#util-title")).not_to_contain_text("CPU")
        chart = page.locator("#chart-util svg")
        expect(chart).to_have_attribute("data-kind", "gpu-util")
        name = f"GPU {HOST}:0 utilization"
        points = _chart_points(page, name)
        assert len(points) >= 2 and all(b - a == ROLLUP_S for a, b in itertools.pairwise(points)), points
        _one_per_rollup(points, _api_points(fleet, "gpu", "0"))
        d = page.locator(f'#chart-util path[data-series="{name}"]').get_attribute("d") or ""
        assert d.count("M") == 1 and d.count("L") == len(points) - 1, d  # one unbroken line
        with fleet.api() as api:
            gpu0 = api.get("/metrics", params={"kind": "gpu", "id": "0", "since": "1h"}).json()["series"][0]
        assert set(gpu0["values"]["util_percent"]) == {70.0}  # what the stand-in says, not the host's CPU

        page.locator("#report-by").select_option("worker")
        page.locator('#report-form button[type="submit"]').click()
        expect(page.locator(f'#report-table tr[data-key="{pool}"]')).to_be_visible()
        for worker in runs_as:
            nested = page.locator(f'#report-table tr.child[data-key="{worker}"][data-parent="{pool}"]')
            expect(nested).to_contain_text("└")
        keys = page.locator("#report-table tbody tr").evaluate_all("(rows) => rows.map((r) => r.dataset.key)")
        assert keys == [pool, f"{HOST}:gpu0", f"{HOST}:gpu1", "total"], keys
        _shots(page, tmp_path, "report-pool")


def test_an_array_is_one_row_that_expands_and_aborts_after_confirming(fleet: Fleet, tmp_path: Path) -> None:
    fleet.up("--gpus", "7", "--queue", "parking", "--create-queue")
    fleet.ok("queue", "create", "q")  # no worker serves q: the array waits
    array = fleet.ok("submit", "--queue", "q", "--array", "0-4", "--name", "sweep-{index}", "--", "true").strip()
    plain = fleet.submit("q", "true", opts=("--name", "plain"))
    expect = sync_api.expect
    with _browser() as (_, page):
        page.goto(fleet.ok("page").strip())
        row = page.locator(f'#tasks tr[data-array="{array}"]')
        expect(row).to_have_count(1)
        expect(row).to_contain_text("0/5 done · 0 failed · 0 running · 5 queued")
        expect(page.locator("#tasks tr.member")).to_have_count(0)  # folded: its tasks are not rows
        expect(page.locator(f'#tasks tr[data-task="{plain}"]')).to_have_count(1)
        _shots(page, tmp_path, "array-folded")
        row.locator('button[data-action="expand"]').click()
        members = page.locator("#tasks tr.member")
        expect(members).to_have_count(5)
        expect(members.first).to_contain_text("sweep-0")
        expect(row.locator('button[data-action="expand"]')).to_have_attribute("aria-expanded", "true")
        _shots(page, tmp_path, "array-open")
        row.locator('button[data-action="abort-array"]').click()
        dialog = page.locator("#confirm")
        expect(dialog).to_contain_text(f"Abort array {array} (5 tasks)?")
        dialog.locator('button[value="cancel"]').click()
        with fleet.api() as api:
            assert api.get(f"/arrays/{array}").raise_for_status().json()["counts"]["queued"] == 5
        row.locator('button[data-action="abort-array"]').click()
        dialog.locator("#confirm-yes").click()
        expect(row).to_contain_text("0/5 done · 5 failed · 0 running · 0 queued")
        expect(members).to_have_count(5)
        assert fleet.task(plain)["status"] == "queued"  # only the array was aborted
