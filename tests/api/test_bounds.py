"""Bounds everywhere: no request can brick the manager, grow it without limit
or get a 500 (issue 12, items 2, 7 and 8).

Each test sends the hostile request to a real manager first, then checks
that the manager refused it with a 4xx naming the body or the field, that
nothing was stored, and that everything else still works.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fleet.api.bounds import (
    ENV_MAX_ENTRIES,
    ENV_NAME_MAX,
    ENV_VALUE_MAX,
    EXPIRY_MAX_S,
    MAX_JSON_DEPTH,
    MAX_LIST_BYTES,
)
from fleet.api.guards import too_deep
from tests.conftest import TASK_KEYS, Fleet

AS_JSON = {"content-type": "application/json"}
MB = 2**20


def _up(fleet: Fleet) -> str:
    """A CPU-only worker on ``parking``; tasks sent to ``held`` never run."""
    fleet.up("--cpu-only", "--queue", "parking", "--create-queue")
    fleet.ok("queue", "create", "held")
    with fleet.api() as api:
        worker: str = api.get("/workers").raise_for_status().json()["workers"][0]["id"]
    return worker


def _clearml(api: httpx.Client, fleet: Fleet, call: str, **kwargs: Any) -> httpx.Response:
    """A ClearML-compatible call (served at the root, not under /api/v1)."""
    return api.post(f"{fleet.url}/{call}", **kwargs)


def _everything_works(fleet: Fleet, worker: str) -> None:
    """``status``, GET workers, PATCH queue and ``up`` all answer."""
    fleet.ok("status")
    with fleet.api() as api:
        assert api.get("/workers").status_code == 200, api.get("/workers").text
        assert api.get(f"/workers/{worker}").status_code == 200
        answer = api.patch("/queues/parking", json={"tags": ["t"]})
        assert answer.status_code == 200, answer.text
    fleet.up("--cpu-only", "--queue", "parking")  # already running: answers, changes nothing


@pytest.mark.parametrize(
    "expiry",
    ["1e300", "-1", str(EXPIRY_MAX_S + 1), "NaN", "Infinity", "-Infinity", "1" + "0" * 400],
    ids=["1e300", "negative", "above-max", "nan", "inf", "-inf", "10**400"],
)
def test_clearml_expiry_out_of_range_is_refused_and_nothing_stored(fleet: Fleet, expiry: str) -> None:
    worker = _up(fleet)
    prop = '{"key": "force", "value": "on", "expiry": ' + expiry + "}"
    body = f'{{"worker": "{worker}", "runtime_properties": [{prop}]}}'
    with fleet.api() as api:
        answer = _clearml(api, fleet, "workers.set_runtime_properties", content=body.encode(), headers=AS_JSON)
        assert 400 <= answer.status_code < 500, answer.text
        assert "expiry" in answer.json()["meta"]["result_msg"], answer.text
        assert api.get(f"/workers/{worker}").json()["runtime_properties"] == {}
        # the REST route refuses the same values
        rest = api.put(
            f"/workers/{worker}/runtime-properties/force",
            content=b'{"value": "on", "expiry": %s}' % expiry.encode(),
            headers=AS_JSON,
        )
        assert rest.status_code == 422 and rest.json()["field"] == "expiry", rest.text
    _everything_works(fleet, worker)


def test_clearml_expiry_at_the_bound_is_taken(fleet: Fleet) -> None:
    worker = _up(fleet)
    body = {"worker": worker, "runtime_properties": [{"key": "force", "value": "on", "expiry": EXPIRY_MAX_S}]}
    with fleet.api() as api:
        answer = _clearml(api, fleet, "workers.set_runtime_properties", json=body)
        assert answer.status_code == 200, answer.text
        assert api.get(f"/workers/{worker}").json()["runtime_properties"]["force"]["expires_at"]
    _everything_works(fleet, worker)


def _write_bad_expiries(fleet: Fleet, worker: str) -> None:
    """What an older version let through, written straight into the database."""
    with sqlite3.connect(fleet.home / "fleet.db") as db:
        rows = [
            (worker, "force", "on", 1e300),
            (worker, "huge", "x", float("inf")),
            (worker, "text", "x", "tomorrow"),
            (worker, "blob", "x", b"\x00\x01"),
        ]
        db.executemany(
            "INSERT OR REPLACE INTO runtime_properties (worker, key, value, expires_at, set_at) VALUES (?,?,?,?,?)",
            [(*row, time.time()) for row in rows],
        )


def test_a_bad_stored_expiry_is_ignored_and_never_fatal(fleet: Fleet) -> None:
    worker = _up(fleet)
    _write_bad_expiries(fleet, worker)
    _everything_works(fleet, worker)  # the running manager
    with fleet.api() as api:
        assert api.get(f"/workers/{worker}").json()["runtime_properties"] == {}
    fleet.ok("stop", "--timeout", "30")
    _up_again = fleet.up("--cpu-only", "--queue", "parking")  # a manager starting over the bad rows
    assert _up_again
    _everything_works(fleet, worker)
    log = (fleet.home / "logs" / "manager.log").read_text()
    assert "runtime property force" in log and "ignored" in log, log[-3000:]
    # a good property set afterwards is used as usual
    fleet.ok("force", worker, "off")
    with fleet.api() as api:
        assert api.get(f"/workers/{worker}").json()["runtime_properties"]["force"]["value"] == "off"


def _task(fleet: Fleet, **extra: Any) -> dict[str, Any]:
    return {"command": ["true"], "working_dir": str(fleet.root), "queue": "held", **extra}


def _db_size(fleet: Fleet) -> int:
    return sum(p.stat().st_size for p in fleet.home.glob("fleet.db*"))


def test_a_body_above_the_limit_is_refused_before_it_is_read(fleet: Fleet) -> None:
    _up(fleet)
    big = json.dumps(_task(fleet, env={"BIG": "x" * (3 * MB)})).encode()
    before = _db_size(fleet)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    with fleet.api() as api:
        sized = api.post("/tasks", content=big, headers=AS_JSON)
        assert sized.status_code == 413 and sized.json()["field"] == "body", sized.text
        assert "fleet.api.max_body_mb" in sized.json()["error"]
        chunked = api.post("/tasks", content=chunks(), headers=AS_JSON)  # no Content-Length
        assert chunked.status_code == 413 and chunked.json()["field"] == "body", chunked.text
        clearml = _clearml(api, fleet, "queues.update", content=big, headers=AS_JSON)
        assert clearml.status_code == 413, clearml.text
        assert api.get("/tasks").json()["total"] == 0
        assert api.post("/tasks", json=_task(fleet, env={"SMALL": "x" * 1000})).status_code == 201
    assert _db_size(fleet) - before < MB


def test_deeply_nested_json_is_refused_naming_the_body(fleet: Fleet) -> None:
    _up(fleet)
    deep = b'{"queue": "parking", "tags": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    just_too_deep = b'{"tags": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}"
    with fleet.api() as api:
        for call in ("queues.update", "workers.set_runtime_properties"):
            answer = _clearml(api, fleet, call, content=deep, headers=AS_JSON)
            assert answer.status_code == 422 and answer.json()["field"] == "body", (call, answer.text)
        for body in (deep, just_too_deep):
            answer = api.patch("/queues/parking", content=body, headers=AS_JSON)
            assert answer.status_code == 422 and answer.json()["field"] == "body", answer.text
        # brackets inside strings are text, not nesting
        text = "{" * 1000 + "[" * 1000
        answer = api.post("/tasks", json=_task(fleet, name="deep", setup_script=text))
        assert answer.status_code == 201, answer.text


@pytest.mark.parametrize(
    ("env", "what"),
    [
        ({f"V{i}": "x" for i in range(ENV_MAX_ENTRIES + 1)}, "entries"),
        ({"N" * (ENV_NAME_MAX + 1): "x"}, "name"),
        ({"V": "x" * (ENV_VALUE_MAX + 1)}, "value"),
    ],
    ids=["entries", "name", "value"],
)
def test_env_entries_and_sizes_are_bounded(fleet: Fleet, env: dict[str, str], what: str) -> None:
    _up(fleet)
    with fleet.api() as api:
        created = api.post("/tasks", json=_task(fleet)).raise_for_status().json()
        for path, body in (("/tasks", _task(fleet, env=env)), (f"/tasks/{created['id']}/clone", {"env": env})):
            answer = api.post(path, json=body)
            assert answer.status_code == 422, answer.text
            assert answer.json()["field"].startswith("env"), answer.text
        assert api.get("/tasks").json()["total"] == 1
        at_bounds = {f"V{i}": "x" for i in range(ENV_MAX_ENTRIES - 1)} | {"N" * ENV_NAME_MAX: "x" * ENV_VALUE_MAX}
        assert api.post("/tasks", json=_task(fleet, env=at_bounds)).status_code == 201


@pytest.mark.parametrize("field", ["name", "user"])
def test_nul_is_refused_in_name_and_user(fleet: Fleet, field: str) -> None:
    _up(fleet)
    with fleet.api() as api:
        answer = api.post("/tasks", json=_task(fleet, **{field: "a\u0000b"}))
        assert answer.status_code == 422 and answer.json()["field"] == field, answer.text
        created = api.post("/tasks", json=_task(fleet)).raise_for_status().json()
        if field == "name":
            clone = api.post(f"/tasks/{created['id']}/clone", json={"name": "a\u0000b"})
            assert clone.status_code == 422 and clone.json()["field"] == "name", clone.text
        assert api.get("/tasks").json()["total"] == 1


def test_list_answers_are_bounded_in_bytes_and_leave_large_fields_out(fleet: Fleet) -> None:
    _up(fleet)
    # one task with a large env, setup script and requirements file (left out
    # of lists), then three with a 1.9 MB command each (kept in lists)
    extra = {
        "env": {f"V{i}": "v" * 60_000 for i in range(4)} | {"API_TOKEN": "s3cret"},
        "setup_script": "echo hi\n" * 20_000,
        "requirements": {"file": "numpy\n" * 30_000, "packages": ["torch"]},
    }
    command = ["echo", *["a" * 100_000] * 19]
    with fleet.api() as api:
        ids = [api.post("/tasks", json=_task(fleet, **extra)).raise_for_status().json()["id"]]
        ids += [api.post("/tasks", json=_task(fleet, command=command)).raise_for_status().json()["id"] for _ in "abc"]
        answer = api.get("/tasks", params={"limit": 100})
        assert answer.status_code == 200
        assert len(answer.content) <= MAX_LIST_BYTES
        page = answer.json()
        assert page["total"] == 4 and page["truncated"] is True, {k: v for k, v in page.items() if k != "tasks"}
        assert [t["id"] for t in page["tasks"]] == ids[:1:-1] and page["next_offset"] == 2
        assert page["tasks"][0]["script"]["command"] == command
        rest = api.get("/tasks", params={"limit": 100, "offset": page["next_offset"]}).json()
        assert rest["truncated"] is False and rest["next_offset"] is None
        listed = {t["id"]: t for t in page["tasks"] + rest["tasks"]}
        assert set(listed) == set(ids)
        summary = listed[ids[0]]
        assert set(TASK_KEYS) <= set(summary)
        assert summary["env"] == {"V0": None, "V1": None, "V2": None, "V3": None, "API_TOKEN": None}
        assert summary["requirements"] == {"file": True, "packages": ["torch"]}
        assert summary["script"]["setup_script"] is True
        full = api.get(f"/tasks/{ids[0]}").json()
        assert set(TASK_KEYS) <= set(full)
        assert full["env"]["V0"] == "v" * 60_000 and full["env"]["API_TOKEN"] == "********"
        assert full["requirements"]["file"] == "numpy\n" * 30_000
    # the CLI's table and --json still show what they show
    table = fleet.ok("tasks", "--limit", "100")
    assert all(task_id[:8] in table for task_id in ids[2:])
    assert "Tasks (2 of 4; the rest from --offset 2)" in table, table[:300]
    as_json = json.loads(fleet.ok("tasks", "--json"))
    assert {t["id"] for t in as_json["tasks"]} <= set(ids) and as_json["truncated"] is True


def test_a_log_path_that_cannot_be_read_is_an_error_with_its_cause(fleet: Fleet) -> None:
    _up(fleet)
    with fleet.api() as api:
        task = api.post("/tasks", json=_task(fleet)).raise_for_status().json()
        log = fleet.home / "logs" / "tasks" / f"{task['id']}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.mkdir()
        for params in ({}, {"follow": "true"}):
            answer = api.get(f"/tasks/{task['id']}/log", params=params)
            assert answer.status_code == 409, answer.text
            body = answer.json()
            assert body["field"] == "log" and "is a folder" in body["error"], body
        assert api.get("/health").status_code == 200


def _corrupt_task(fleet: Fleet, task_id: str) -> None:
    """A status this version does not know (as a newer version might write):
    reading the row raises, which nothing maps to a 4xx."""
    with sqlite3.connect(fleet.home / "fleet.db") as db:
        db.execute("UPDATE tasks SET status = 'from-the-future' WHERE id = ?", (task_id,))


def test_after_an_unexpected_error_the_connection_stays_usable(fleet: Fleet) -> None:
    _up(fleet)
    with fleet.api() as api:
        task = api.post("/tasks", json=_task(fleet)).raise_for_status().json()
        _corrupt_task(fleet, task["id"])
        broken = api.get(f"/tasks/{task['id']}")
        assert broken.status_code == 500, broken.text
        assert broken.json()["error"].startswith("internal error"), broken.text
        first = broken.extensions["network_stream"].get_extra_info("client_addr")
        fine = api.get("/health")
        assert fine.status_code == 200
        assert fine.extensions["network_stream"].get_extra_info("client_addr") == first  # the same connection


def test_depth_counts_brackets_outside_strings_only() -> None:
    limit = 3
    assert not too_deep(b'{"a": [[1]]}', limit)
    assert too_deep(b'{"a": [[[1]]]}', limit)
    assert not too_deep(b'{"a": "[[[[[[", "b": "\\"[[[[[[\\\\"}', limit)  # escaped quotes stay in the string
    assert too_deep(b'{"a": "\\\\", "b": [[[[1]]]]}', limit)  # a string ending in a backslash
    assert not too_deep(b'[["unterminated [[[[[[', limit)  # not JSON: the parser refuses it
    assert not too_deep(b"[]" * 100_000, limit)  # many, but shallow
    assert too_deep(b"[" * 1_000_000, MAX_JSON_DEPTH)
