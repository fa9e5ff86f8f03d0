"""Working hours end to end, with a real manager and the real clock:
schedules, force on/off with expiry, queue tags, and ClearML's two calls."""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
from typing import Any

from tests.conftest import CONFIG, Fleet

HOST = socket.gethostname()
WORKER = f"{HOST}:gpu0"
DAYS = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]


def _window_now() -> str:
    """A two-hour span that covers the present local time (at least an hour left)."""
    now = dt.datetime.now().astimezone()
    return f"{now.hour:02d}-{(now.hour + 2) % 24:02d} {DAYS[now.weekday()]}"


def _worker(fleet: Fleet) -> dict[str, Any]:
    with fleet.api() as api:
        data: dict[str, Any] = api.get(f"/workers/{WORKER}").raise_for_status().json()
        return data


def test_downtime_pauses_force_overrides_and_expires(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue", "--downtime", _window_now())
    fleet.wait_for(lambda: _worker(fleet)["state"] == "paused", what="paused")
    worker = _worker(fleet)
    assert worker["state_reason"].startswith("downtime until ")
    assert worker["schedule"] == {"kind": "downtime", "specs": [_window_now()]}
    assert worker["next_change"] is not None

    waiting = fleet.submit("q", "echo", "ran")
    time.sleep(1)
    assert fleet.task(waiting)["status"] == "queued"  # paused: pulls nothing

    fleet.ok("force", WORKER, "on", "--expiry", "8")  # long enough for a loaded machine's CLI to see it
    assert fleet.cli("wait", waiting, "--timeout", "30").returncode == 0
    props = _worker(fleet)["runtime_properties"]
    assert props["force"]["value"] == "on"
    expires = dt.datetime.fromisoformat(props["force"]["expires_at"].replace("Z", "+00:00")).timestamp()

    fleet.wait_for(lambda: _worker(fleet)["state"] == "paused", timeout=20, what="paused again")
    assert time.time() - expires < 10  # applied when due, not at the 30 s resync
    assert _worker(fleet)["runtime_properties"] == {}
    later = fleet.submit("q", "echo", "later")
    time.sleep(1)
    assert fleet.task(later)["status"] == "queued"

    # A force without expiry persists across a manager restart.
    fleet.ok("force", WORKER, "on")
    assert fleet.cli("wait", later, "--timeout", "10").returncode == 0
    fleet.ok("stop")
    fleet.up("--gpus", "0", "--queue", "q", "--downtime", _window_now())
    assert _worker(fleet)["runtime_properties"]["force"]["value"] == "on"
    fleet.wait_for(lambda: _worker(fleet)["state"] == "idle", what="idle under force")
    fleet.ok("force", WORKER, "clear")
    fleet.wait_for(lambda: _worker(fleet)["state"] == "paused", what="paused after clear")


def test_queue_tag_beats_force(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "other", "--create-queue")
    fleet.ok("force", WORKER, "on")
    fleet.ok("queue", "tag", "q", "force_workers:off")
    fleet.wait_for(lambda: "q" in _worker(fleet)["paused_queues"], what="q paused")
    blocked = fleet.submit("q", "echo", "blocked")
    free = fleet.submit("other", "echo", "free")
    assert fleet.cli("wait", free, "--timeout", "10").returncode == 0
    time.sleep(0.5)
    assert fleet.task(blocked)["status"] == "queued"
    worker = _worker(fleet)
    assert worker["state"] == "idle"
    assert worker["paused_queues"]["q"] == "queue tag force_workers:off on q"

    # force off pauses the worker, but a force_workers:on tag keeps its queue going.
    fleet.ok("queue", "untag", "q", "force_workers:off")
    fleet.ok("force", WORKER, "off")
    fleet.ok("queue", "tag", "q", "force_workers:on")
    assert fleet.cli("wait", blocked, "--timeout", "10").returncode == 0
    assert "other" in _worker(fleet)["paused_queues"]


def test_clearml_calls_work_as_documented(fleet: Fleet) -> None:
    (fleet.root / "fleet.conf").write_text(CONFIG + 'fleet { api { access_key: "key", secret_key: "secret" } }\n')
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue", "--uptime", "03-04 SUN")
    body: dict[str, Any] = {"worker": WORKER, "runtime_properties": [{"key": "force", "value": "on", "expiry": 86400}]}
    with fleet.api(prefix="", auth=False) as curl, fleet.api(prefix="") as api:
        # The documented curl sends basic auth: ClearML's key:secret, as configured.
        answer = curl.post("/workers.set_runtime_properties", json=body, auth=("key", "secret"))
        assert answer.status_code == 200
        assert answer.json()["meta"]["result_code"] == 200
        props = _worker(fleet)["runtime_properties"]
        assert props["force"]["value"] == "on" and props["force"]["expires_at"] is not None
        fleet.wait_for(lambda: _worker(fleet)["state"] == "idle", what="forced on")

        body["runtime_properties"][0]["expiry"] = 0  # expiry 0 deletes
        assert api.post("/workers.set_runtime_properties", json=body).json()["meta"]["result_code"] == 200
        assert _worker(fleet)["runtime_properties"] == {}

        queue_id = json.loads(fleet.ok("queues", "--json"))[0]["id"]
        answer = api.post("/queues.update", json={"queue": queue_id, "tags": ["force_workers:on"]})
        assert answer.status_code == 200
        assert answer.json()["data"] == {"updated": 1, "fields": {"tags": ["force_workers:on"]}}
        task = fleet.submit("q", "echo", "tagged on")
        assert fleet.cli("wait", task, "--timeout", "10").returncode == 0

        bad = api.post("/workers.set_runtime_properties", json={"worker": "nobody:gpu9", "runtime_properties": []})
        assert bad.status_code == 404 and bad.json()["meta"]["result_code"] == 404
        bad = api.post("/queues.update", content=b"not json", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and "JSON" in bad.json()["meta"]["result_msg"]


def test_bad_schedules_are_refused(fleet: Fleet) -> None:
    for args, text in (
        (("--uptime", "25-08 MON"), "25"),
        (("--uptime", "8-20 FUNDAY"), "FUNDAY"),
        (("--downtime", "8-20"), "8-20"),
        (("--uptime", "8-20 MON", "--downtime", "1-2 TUE"), "--downtime"),
    ):
        result = fleet.cli("up", "--port", "0", "--gpus", "0", "--queue", "q", "--create-queue", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert text in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    (fleet.root / "fleet.conf").write_text('agent { uptime: ["8-20 MON", "7-9 BLURSDAY"] }')
    result = fleet.cli("up", "--port", "0", "--gpus", "0", "--queue", "q", "--create-queue")
    assert result.returncode == 2 and "agent.uptime" in result.stderr and "BLURSDAY" in result.stderr
    assert not (fleet.home / "manager.json").exists()
    force = fleet.cli("force", WORKER, "sideways")
    assert force.returncode == 2
