"""Sweeps in one call (issue 16 item 2): ``submit --array/--grid``, the batch
endpoint, an array's cap across workers, ``tasks --array``, ``wait`` and
``abort`` of an array; a real manager and real workers, except the store
tests, which drive a real SQLite store directly."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fleet.core.errors import NotFound
from fleet.core.home import Home
from fleet.core.models import ArraySpec, Script, TaskSpec, TaskStatus
from fleet.store import Store, open_store
from tests.conftest import Fleet
from tests.factories import live_worker

SHOW = "import os, sys; print('index', os.environ['FLEET_ARRAY_INDEX'], 'arg', sys.argv[1])"


# -- the store --------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(Home(tmp_path))
    s.create_queue("q", [], "test")
    return s


def _spec(n: int) -> TaskSpec:
    return TaskSpec(script=Script(command=["true", str(n)], working_dir="/"), name=f"t{n}")


def test_store_creates_a_batch_in_one_transaction_all_or_none(store: Store) -> None:
    ids = store.create_tasks([(_spec(n), "q") for n in range(5)], ArraySpec("a-" + "1" * 16, 2), "test")
    tasks = store.array_tasks("a-" + "1" * 16)
    assert [t.id for t in tasks] == ids
    assert [t.array_index for t in tasks] == [0, 1, 2, 3, 4]
    assert {t.status for t in tasks} == {TaskStatus.QUEUED}
    assert store.get_array("a-" + "1" * 16).counts == {"queued": 5}
    with pytest.raises(NotFound):  # the last spec's queue does not exist: nothing is written
        store.create_tasks([(_spec(0), "q"), (_spec(1), "nosuch")], ArraySpec("a-" + "2" * 16), "test")
    with pytest.raises(NotFound):
        store.get_array("a-" + "2" * 16)
    assert store.list_tasks()[1] == 5


def test_store_claim_skips_a_capped_array_and_takes_the_task_behind(store: Store) -> None:
    array = "a-" + "3" * 16
    store.create_tasks([(_spec(n), "q") for n in range(4)], ArraySpec(array, 2), "test")
    plain = store.create_task(_spec(99), "q", "test")
    workers = [live_worker(f"w{n}", None, ["q"]) for n in range(4)]
    claimed = [store.claim_next_task(w, ["q"], []) for w in workers[:3]]
    assert [t.array_id if t else None for t in claimed] == [array, array, None]
    assert claimed[2] is not None and claimed[2].id == plain.id  # held tasks do not block the queue
    assert store.claim_next_task(workers[3], ["q"], []) is None  # the array is at its cap
    held = store.array_tasks(array, [TaskStatus.QUEUED])[0]
    assert store.peek_tasks({"q": None}) == {}
    assert store.claim_task(held.id, workers[3], [], "w3:child") is None
    first = claimed[0]
    assert first is not None
    store.finish_task(first.id, TaskStatus.COMPLETED, exit_code=0, reason="", actor="test")
    again = store.claim_next_task(workers[3], ["q"], [])
    assert again is not None and again.array_id == array


def test_store_abort_array_stops_queued_and_flags_running(store: Store) -> None:
    array = "a-" + "4" * 16
    store.create_tasks([(_spec(n), "q") for n in range(3)], ArraySpec(array), "test")
    running = store.claim_next_task(live_worker("w", None, ["q"]), ["q"], [])
    assert running is not None
    changed = store.abort_array(array, "test", "enough")
    assert sorted(t.status.value for t in changed) == ["in_progress", "stopped", "stopped"]
    assert store.get_task(running.id).abort_requested == "enough"
    assert store.get_array(array).counts == {"in_progress": 1, "stopped": 2}


# -- through the CLI and the API ----------------------------------------------------------------
def _array_tasks(fleet: Fleet, array: str) -> list[dict[str, Any]]:
    with fleet.api() as api:
        answer = api.get("/tasks", params={"array": array, "limit": 1000})
    assert answer.status_code == 200, answer.text
    tasks: list[dict[str, Any]] = answer.json()["tasks"]
    return tasks


def test_array_runs_each_index_once_with_its_env_and_substitutions(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    array = fleet.ok(
        "submit", "--queue", "q", "--array", "0-4:2", "--name", "run-{index}", "--", "python", "-c", SHOW, "x{index}"
    ).strip()
    assert array.startswith("a-") and len(array) == 18
    assert fleet.cli("wait", array).returncode == 0
    tasks = _array_tasks(fleet, array)
    assert [t["name"] for t in tasks] == ["run-0", "run-2", "run-4"]
    assert [t["array_index"] for t in tasks] == [0, 1, 2]
    for task, index in zip(tasks, ("0", "2", "4"), strict=True):
        assert task["status"] == "completed"
        assert fleet.task(task["id"])["attempt"] == 1  # ran exactly once
        assert f"index {index} arg x{index}" in fleet.ok("logs", "--no-timestamps", task["id"])
        assert task["array_id"] == array
    listed = fleet.ok("tasks", "--array", array, "--wide")
    assert all(t["id"] in listed for t in tasks)
    shown = json.loads(fleet.ok("wait", array, "--json"))
    assert shown["counts"]["completed"] == 3 and shown["size"] == 3


def test_grid_is_the_cross_product_with_env_and_placeholders(fleet: Fleet) -> None:
    fleet.up("--gpus", "7", "--queue", "parking", "--create-queue")
    fleet.ok("queue", "create", "q")
    answer = json.loads(
        fleet.ok(
            "submit", "--queue", "q", "--json", "--grid", "lr=0.1,0.01", "bs=32,64", "--",
            "train", "--lr", "{lr}", "--bs={bs}", "{{lit}}",
        )
    )  # fmt: skip
    tasks = _array_tasks(fleet, answer["array"])
    assert [t["id"] for t in tasks] == answer["tasks"]
    combos = [(t["script"]["command"], fleet.task(t["id"])["env"]) for t in tasks]
    assert [c[0] for c in combos] == [
        ["train", "--lr", lr, f"--bs={bs}", "{lit}"] for lr in ("0.1", "0.01") for bs in ("32", "64")
    ]
    assert [(e["lr"], e["bs"], e["FLEET_ARRAY_INDEX"]) for _, e in combos] == [
        ("0.1", "32", "0"), ("0.1", "64", "1"), ("0.01", "32", "2"), ("0.01", "64", "3")
    ]  # fmt: skip
    assert {e["FLEET_ARRAY_ID"] for _, e in combos} == {answer["array"]}
    both = json.loads(fleet.ok("submit", "--queue", "q", "--json", "--array", "5-6", "--grid", "x=a,b", "--", "t"))
    envs = [fleet.task(t)["env"] for t in both["tasks"]]
    assert [(e["FLEET_ARRAY_INDEX"], e["x"]) for e in envs] == [("5", "a"), ("5", "b"), ("6", "a"), ("6", "b")]


def _iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _ready(fleet: Fleet, count: int) -> bool:
    with fleet.api() as api:
        workers = api.get("/workers").raise_for_status().json()["workers"]
    ready = sum(1 for w in workers if w["state"] == "idle" and w["state_reason"] != "starting")
    return ready >= count


def test_max_running_holds_across_workers_and_the_queue_goes_on(fleet: Fleet) -> None:
    for gpu in ("0", "1", "2"):
        fleet.up("--gpus", gpu, "--queue", "q", "--create-queue")
    fleet.wait_for(lambda: _ready(fleet, 3), what="3 workers waiting for work")
    array = fleet.ok("submit", "--queue", "q", "--array", "0-5%2", "--", "sleep", "1").strip()
    plain = fleet.submit("q", "true")  # behind the whole array in the queue
    assert fleet.cli("wait", array, timeout=120).returncode == 0
    assert fleet.cli("wait", plain).returncode == 0
    intervals = []
    for task in _array_tasks(fleet, array):
        attempts = fleet.task(task["id"])["attempts"]
        assert len(attempts) == 1
        intervals.append((_iso(attempts[0]["started_at"]), _iso(attempts[0]["finished_at"])))
    # the most attempts of the array in progress at any one moment (from the records, not a clock)
    peak = max(sum(1 for s, f in intervals if s <= start < f) for start, _ in intervals)
    assert peak <= 2, intervals
    # the third worker took the plain task while the array's tasks were held by the cap
    assert _iso(fleet.task(plain)["started_at"]) < max(s for s, _ in intervals)


def test_batch_is_all_or_nothing(fleet: Fleet) -> None:
    fleet.up("--gpus", "7", "--queue", "parking", "--create-queue")
    fleet.ok("queue", "create", "q")
    good = {"command": ["true"], "working_dir": "/", "queue": "q"}
    with fleet.api() as api:
        bad = api.post("/tasks/batch", json={"tasks": [good, {**good, "priority": "high"}], "array": None})
        assert bad.status_code == 422
        assert bad.json()["field"].startswith("tasks.1")
        missing = api.post("/tasks/batch", json={"tasks": [good, {**good, "queue": "nosuch"}]})
        assert missing.status_code == 404 and missing.json()["field"] == "queue"
        many = api.post("/tasks/batch", json={"tasks": [good] * 10_001})
        assert many.status_code in (413, 422), many.text
        other = api.post("/tasks/batch", json={"tasks": [good, {**good, "user": "mallory"}], "array": {}})
        assert other.status_code == 403 and other.json()["field"] == "tasks[1].user"
        assert api.get("/tasks", params={"queue": "q"}).json()["total"] == 0
        ok = api.post("/tasks/batch", json={"tasks": [good, good], "array": None})
        assert ok.status_code == 201 and ok.json()["array"] is None and len(ok.json()["tasks"]) == 2
        assert api.get("/arrays/a-0000000000000000").status_code == 404
        assert api.get("/arrays/nothex").status_code == 422


def test_wait_exits_1_when_any_task_of_the_array_failed(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    code = "import sys; sys.exit(int(sys.argv[1]) == 1)"
    array = fleet.ok("submit", "--queue", "q", "--array", "0-2", "--", "python", "-c", code, "{index}").strip()
    result = fleet.cli("wait", array)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2/3 done, 1 failed" in result.stdout


def test_abort_of_an_array_stops_queued_and_running(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    array = fleet.ok("submit", "--queue", "q", "--array", "0-4", "--", "sleep", "60").strip()
    fleet.wait_for(lambda: any(t["status"] == "in_progress" for t in _array_tasks(fleet, array)), what="a start")
    out = fleet.ok("abort", array)
    assert "4 stopped, 1 abort requested" in out
    assert fleet.cli("wait", array, timeout=60).returncode == 1
    statuses = sorted(t["status"] for t in _array_tasks(fleet, array))
    assert statuses == ["stopped"] * 5, statuses  # the running one too, by its worker


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("--array", "5-2"), "--array 5-2"),
        (("--array", "0-x"), "--array 0-x"),
        (("--array", "0-3%0"), "%0"),
        (("--grid", "lr="), "--grid lr="),
        (("--grid", "lr=1,2", "--max-running", "0"), "--max-running"),
        (("--array", "0-3"), "unknown {nosuch}"),
        (("--max-running", "2"), "--max-running: only with --array or --grid"),
        (("--array", "0-1", "--name", "run-{seed}", "--", "echo", "ok"), "--name 'run-{seed}': unknown {seed}"),
    ],
)
def test_bad_sweeps_exit_2_naming_the_value(tmp_path: Path, args: tuple[str, ...], names: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "FLEET_HOME": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleet.cli",
            "submit",
            "--queue",
            "q",
            *args,
            *(() if "--" in args else ("--", "echo", "{nosuch}")),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], lines
