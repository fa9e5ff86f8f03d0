"""The web page in a real headless Chromium (Debian's ``chromium``, driven by playwright).

A real manager runs a real task that prints a line every 0.2 s.  The page
must show the busy worker and the running task, follow the log live, force
the worker off and on (checked through the API), tag a queue, and abort the
task with its button (checked through the API).  Screenshots go to the
test's tmp folder, and one copy to ``/tmp/fleet-page.png``.

Skipped only where Chromium or playwright is missing; ``tests/run.sh``
installs both, so CI runs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from tests.conftest import CONFIG, Fleet

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


def test_page_shows_live_state_and_its_buttons_work(fleet: Fleet, tmp_path: Path) -> None:
    (fleet.root / "fleet.conf").write_text(CONFIG + "fleet { metrics { interval: 0.5 } }\n")
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    task = fleet.submit("q", sys.executable, "-c", TICKER, opts=("--name", "ticker", "--env", "API_TOKEN=real-secret"))
    fleet.wait_for(lambda: fleet.task(task)["status"] == "in_progress", what="task running")
    expect = sync_api.expect

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(fleet.url + "/")

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

        page.screenshot(path=str(tmp_path / "fleet-page.png"), full_page=True)
        shutil.copyfile(tmp_path / "fleet-page.png", "/tmp/fleet-page.png")

        # abort from the task panel: the task ends stopped
        page.locator("#tp-abort").click()
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
        expect(page.locator("#log")).to_contain_text("edited real-secret yes")  # the hidden value was kept

        # the report view draws its charts
        page.locator('.tab[data-view="report"]').click()
        expect(page.locator("#chart-hours svg rect").first).to_be_attached()
        expect(page.locator("#report-table")).to_contain_text("total")
        page.screenshot(path=str(tmp_path / "fleet-report.png"), full_page=True)
        browser.close()
    assert errors == []
