"""The REST API against a real manager: resources, paging and filters, logs,
clone and state round trips, masked secrets, and bad requests (4xx naming the
field, never a 500, and nothing changed)."""

from __future__ import annotations

import http.client
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from tests.conftest import TASK_KEYS, Fleet

PY = sys.executable
ENDED = {"completed", "failed", "stopped"}
MASK = "********"
WORKER_KEYS = (
    "id",
    "host",
    "gpus",
    "queues",
    "mode",
    "state",
    "state_reason",
    "tasks",
    "schedule",
    "runtime_properties",
    "pid",
    "last_seen",
)


def quick_api(fleet: Fleet) -> httpx.Client:
    """A client that opens a connection per request: on a kept-alive connection
    every answer waits ~40 ms (see test_keep_alive_answers_are_quick)."""
    return fleet.api(limits=httpx.Limits(max_keepalive_connections=0))


def create_task(api: httpx.Client, fleet: Fleet, command: list[str], **body: Any) -> dict[str, Any]:
    answer = api.post("/tasks", json={"command": command, "working_dir": str(fleet.root), **body})
    assert answer.status_code == 201, answer.text
    task: dict[str, Any] = answer.json()
    return task


def wait_status(api: httpx.Client, task_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = api.get(f"/tasks/{task_id}").raise_for_status().json()
        if task["status"] in statuses:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} is still {task['status']}, expected one of {sorted(statuses)}")
        time.sleep(0.05)


def ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [t["id"] for t in answer.json()["tasks"]]


def test_workers_queues_and_docs(fleet: Fleet) -> None:
    fleet.up("--gpus", "0,1", "--queue", "q", "--create-queue")
    with fleet.api() as api:
        (worker,) = api.get("/workers").raise_for_status().json()["workers"]
        for key in WORKER_KEYS:
            assert key in worker, key
        assert worker["gpus"] == [0, 1] and worker["queues"] == ["q"] and worker["mode"] == "static"
        assert worker["id"].endswith(":gpu0,1")
        assert api.get(f"/workers/{quote(worker['id'], safe='')}").raise_for_status().json()["id"] == worker["id"]

        # create = `up`: a CPU worker on a new queue; asking again changes nothing
        spec = {"queues": ["cpuq"], "cpu_only": True, "create_queue": True}
        first = api.post("/workers", json=spec)
        assert first.status_code == 201, first.text
        (cpu,) = first.json()["workers"]
        assert cpu["gpus"] == [] and cpu["queues"] == ["cpuq"] and cpu["id"].endswith(":cpu")
        again = api.post("/workers", json=spec)
        assert again.status_code == 201, again.text
        assert [w["id"] for w in again.json()["workers"]] == [cpu["id"]]
        assert sorted(w["id"] for w in api.get("/workers").json()["workers"]) == sorted([worker["id"], cpu["id"]])

        # a missing queue without create_queue: refused, and not created
        missing = api.post("/workers", json={"queues": ["nosuch"], "gpus": "4"})
        assert missing.status_code == 404 and missing.json()["field"] == "queues", missing.text
        assert "nosuch" not in {q["name"] for q in api.get("/queues").json()["queues"]}

        # queues: list, create, get by name and by id, tags, delete
        assert {q["name"] for q in api.get("/queues").json()["queues"]} == {"q", "cpuq"}
        made = api.post("/queues", json={"name": "extra", "tags": ["a"]})
        assert made.status_code == 201, made.text
        queue = made.json()
        assert queue["name"] == "extra" and queue["tags"] == ["a"] and queue["pending"] == 0
        assert api.get("/queues/extra").json() == queue
        assert api.get(f"/queues/{queue['id']}").json() == queue
        tagged = api.patch("/queues/extra", json={"tags": ["b", "c"]})
        assert tagged.status_code == 200 and tagged.json()["tags"] == ["b", "c"], tagged.text
        assert api.delete("/queues/extra").json() == {"deleted": "extra"}
        gone = api.get("/queues/extra")
        assert gone.status_code == 404 and gone.json()["field"] == "queue"

        # delete = `stop` one worker; the other keeps running
        stopped = api.delete(f"/workers/{quote(cpu['id'], safe='')}")
        assert stopped.status_code == 202, stopped.text
        fleet.wait_for(
            lambda: api.get(f"/workers/{quote(cpu['id'], safe='')}").json()["state"] == "dead",
            what="the CPU worker to stop",
        )
        assert [w["id"] for w in api.get("/workers").json()["workers"]] == [worker["id"]]
        assert cpu["id"] in [w["id"] for w in api.get("/workers", params={"all": True}).json()["workers"]]

        health = api.get("/health").raise_for_status().json()
        assert health["status"] == "ok" and health["pid"] == fleet.manager_info()["pid"]

    with fleet.api(prefix="") as root:
        docs = root.get("/docs")
        spec_doc = root.get("/openapi.json")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert spec_doc.status_code == 200
    assert "/api/v1/tasks" in spec_doc.json()["paths"]


def test_tasks_lists_logs_clone_and_round_trips(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    fleet.ok("queue", "create", "held")  # no worker pulls it
    with fleet.api() as api:
        (worker,) = api.get("/workers").json()["workers"]
        ok = create_task(api, fleet, [PY, "-c", "print('line one'); print('line two')"], queue="q", name="ok")
        assert ok["status"] == "queued" and ok["queue"] == "q" and ok["name"] == "ok"
        for key in TASK_KEYS:
            assert key in ok, key
        bad = create_task(api, fleet, [PY, "-c", "import sys; sys.exit(3)"], queue="q", name="bad")
        assert wait_status(api, ok["id"], ENDED)["status"] == "completed"
        failed = wait_status(api, bad["id"], ENDED)
        assert failed["status"] == "failed" and failed["exit_code"] == 3 and failed["worker"] == worker["id"]
        held1 = create_task(api, fleet, ["true"], queue="held", priority=5)
        held2 = create_task(api, fleet, ["true"], queue="held")
        draft = create_task(api, fleet, ["true"])
        assert draft["status"] == "created" and draft["queue"] is None
        assert api.get(f"/tasks/{ok['id'][:8]}").json()["id"] == ok["id"]  # a unique prefix works

        # paging: pages of 2 add up to the whole list, newest first; total is the full count
        whole = api.get("/tasks").json()
        assert whole["total"] == 5 and len(whole["tasks"]) == 5
        assert ids(api.get("/tasks"))[0] == draft["id"]
        pages = []
        for offset in (0, 2, 4):
            page = api.get("/tasks", params={"limit": 2, "offset": offset}).json()
            assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == offset
            pages += [t["id"] for t in page["tasks"]]
        assert pages == [t["id"] for t in whole["tasks"]]
        past = api.get("/tasks", params={"offset": 10}).json()
        assert past["tasks"] == [] and past["total"] == 5

        # filters
        assert set(ids(api.get("/tasks", params={"queue": "held"}))) == {held1["id"], held2["id"]}
        assert set(ids(api.get("/tasks", params={"queue": "q"}))) == {ok["id"], bad["id"]}
        assert set(ids(api.get("/tasks", params={"status": "completed,failed"}))) == {ok["id"], bad["id"]}
        assert ids(api.get("/tasks", params={"status": "created"})) == [draft["id"]]
        assert set(ids(api.get("/tasks", params={"worker": worker["id"]}))) == {ok["id"], bad["id"]}
        assert ids(api.get("/tasks", params={"queue": "q", "status": "failed"})) == [bad["id"]]
        nosuch = api.get("/tasks", params={"queue": "cpuq"})  # no such queue here: a typo is an error
        assert nosuch.status_code == 404 and nosuch.json()["field"] == "queue", nosuch.text
        assert api.post("/queues", json={"name": "empty"}).status_code == 201
        assert api.get("/tasks", params={"queue": "empty"}).json() == {
            "tasks": [],
            "total": 0,
            "limit": 100,
            "offset": 0,
            "truncated": False,
            "next_offset": None,
        }

        # log with offset and X-Next-Offset
        log = api.get(f"/tasks/{ok['id']}/log")
        assert log.status_code == 200 and log.headers["content-type"].startswith("text/plain")
        content = log.content
        assert b"line one\n" in content and b"line two\n" in content
        assert int(log.headers["X-Next-Offset"]) == len(content)
        rest = api.get(f"/tasks/{ok['id']}/log", params={"offset": len(content)})
        assert rest.content == b"" and int(rest.headers["X-Next-Offset"]) == len(content)
        middle = content.index(b"line two")
        part = api.get(f"/tasks/{ok['id']}/log", params={"offset": middle})
        assert part.content == content[middle:] and int(part.headers["X-Next-Offset"]) == len(content)
        assert api.get(f"/tasks/{draft['id']}/log").content == b""  # no log yet

        # clone: a new id with its parent; queued when a queue is given
        clone = api.post(f"/tasks/{ok['id']}/clone", json={"queue": "held"})
        assert clone.status_code == 201, clone.text
        copy = clone.json()
        assert copy["id"] != ok["id"] and copy["parent"] == ok["id"]
        assert copy["status"] == "queued" and copy["queue"] == "held"
        assert copy["script"]["command"] == ok["script"]["command"] and copy["attempt"] in (0, 1)
        plain = api.post(f"/tasks/{ok['id']}/clone")
        assert plain.status_code == 201, plain.text
        assert plain.json()["status"] == "created" and plain.json()["queue"] is None
        assert plain.json()["parent"] == ok["id"]

        # enqueue / dequeue / abort round trips
        queued = api.post(f"/tasks/{draft['id']}/enqueue", json={"queue": "held"})
        assert queued.status_code == 200 and queued.json()["status"] == "queued", queued.text
        assert queued.json()["queue"] == "held"
        back = api.post(f"/tasks/{draft['id']}/dequeue")
        assert back.status_code == 200 and back.json()["status"] == "created", back.text
        again = api.post(f"/tasks/{draft['id']}/enqueue", json={"queue": "held", "head": True})
        assert again.json()["status"] == "queued", again.text
        aborted = api.post(f"/tasks/{draft['id']}/abort", json={"reason": "not needed"})
        assert aborted.status_code == 200 and aborted.json()["status"] == "stopped", aborted.text
        rerun = api.post(f"/tasks/{bad['id']}/enqueue", json={"queue": "held"})
        assert rerun.status_code == 200 and rerun.json()["status"] == "queued", rerun.text

        # abort a running task: it ends stopped
        sleeper = create_task(api, fleet, [PY, "-c", "import time; time.sleep(60)"], queue="q")
        wait_status(api, sleeper["id"], {"in_progress"})
        asked = api.post(f"/tasks/{sleeper['id']}/abort")
        assert asked.status_code == 200, asked.text
        assert wait_status(api, sleeper["id"], ENDED)["status"] == "stopped"

        # follow streams the log until the task ends
        script = "import time\nfor i in range(5):\n    print('tick', i, flush=True)\n    time.sleep(0.2)"
        ticker = create_task(api, fleet, [PY, "-c", script], queue="q")
        chunks: list[bytes] = []
        status_at_first_chunk = ""
        with api.stream("GET", f"/tasks/{ticker['id']}/log", params={"follow": True}) as stream:
            assert stream.status_code == 200
            for chunk in stream.iter_bytes():
                if not chunks:
                    with quick_api(fleet) as other:
                        status_at_first_chunk = other.get(f"/tasks/{ticker['id']}").json()["status"]
                chunks.append(chunk)
        streamed = b"".join(chunks)
        assert status_at_first_chunk == "in_progress"  # it streamed while the task ran
        assert api.get(f"/tasks/{ticker['id']}").json()["status"] == "completed"
        for i in range(5):
            assert f"tick {i}\n".encode() in streamed
        assert streamed == api.get(f"/tasks/{ticker['id']}/log").content


def test_secret_env_values_are_masked(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    secrets = {"MY_PASSWORD": "hunter2-pw", "API_TOKEN": "tok-123-abc", "AWS_SECRET_ACCESS_KEY": "aws-456-def"}
    env = {**secrets, "PLAIN_VALUE": "visible"}
    # the task prints each value reversed: proof that it got the real value, without
    # putting the secret itself in its log
    names = (*secrets, "PLAIN_VALUE")
    script = f"import os; print(*(os.environ[k][::-1] for k in {names!r}), sep='|')"
    expected_line = "|".join(env[k][::-1] for k in names)
    answers: list[httpx.Response] = []

    def check(answer: httpx.Response) -> httpx.Response:
        answers.append(answer)
        return answer

    with fleet.api() as api:
        created = check(
            api.post("/tasks", json={"command": [PY, "-c", script], "working_dir": str(fleet.root), "env": env})
        )
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        check(api.post(f"/tasks/{task_id}/enqueue", json={"queue": "q"}))
        assert wait_status(api, task_id, ENDED)["status"] == "completed"
        check(api.get(f"/tasks/{task_id}"))
        check(api.get("/tasks"))
        check(api.get("/tasks", params={"status": "completed"}))
        check(api.get(f"/tasks/{task_id}/events"))
        log = check(api.get(f"/tasks/{task_id}/log")).text
        clone = check(api.post(f"/tasks/{task_id}/clone", json={"queue": "q"}))
        assert clone.status_code == 201, clone.text
        clone_id = clone.json()["id"]
        assert wait_status(api, clone_id, ENDED)["status"] == "completed"
        check(api.get(f"/tasks/{clone_id}"))
        clone_log = check(api.get(f"/tasks/{clone_id}/log")).text
        queued_clone = check(api.post(f"/tasks/{task_id}/clone", json={"queue": "q"}))
        check(api.get("/workers"))

    for answer in answers:
        for value in secrets.values():
            assert value not in answer.text, f"{answer.request.method} {answer.request.url} shows a secret"
        body = answer.json() if answer.headers["content-type"].startswith("application/json") else None
        expected = {**{k: MASK for k in secrets}, "PLAIN_VALUE": "visible"}
        if isinstance(body, dict) and "env" in body:
            assert not body["env"] or body["env"] == expected
        for task in (body or {}).get("tasks", []):  # list answers name the variables, without values
            assert not task["env"] or task["env"] == dict.fromkeys(expected)
    # the processes got the real values, the clones too (a clone copies values, not masks)
    assert any(line.endswith(expected_line) for line in log.splitlines()), log
    assert any(line.endswith(expected_line) for line in clone_log.splitlines())
    assert queued_clone.json()["env"]["MY_PASSWORD"] == MASK
    shown = fleet.ok("show", task_id, "--json")
    assert all(value not in shown for value in secrets.values())
    assert json.loads(shown)["env"]["API_TOKEN"] == MASK


@dataclass(frozen=True)
class BadRequest:
    what: str
    method: str
    path: str
    expect_field: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    raw: bool = False  # send the path exactly as written (no client-side normalisation)


def send_raw(fleet: Fleet, method: str, path: str) -> tuple[int, bytes]:
    """One request with ``path`` sent verbatim (httpx would resolve ``..``)."""
    url = urlsplit(fleet.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        conn.request(method, path, headers=fleet.headers())
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def store_state(api: httpx.Client) -> dict[str, Any]:
    workers = api.get("/workers", params={"all": True}).raise_for_status().json()["workers"]
    return {
        "workers": [{k: w[k] for k in ("id", "gpus", "queues", "mode", "state", "pid", "tasks")} for w in workers],
        "queues": api.get("/queues").raise_for_status().json()["queues"],
        "tasks": api.get("/tasks", params={"limit": 10_000}).raise_for_status().json()["tasks"],
    }


def test_malformed_requests_get_4xx_naming_the_field(fleet: Fleet) -> None:
    fleet.up("--gpus", "0,1", "--queue", "q", "--create-queue")
    fleet.ok("queue", "create", "held")
    with quick_api(fleet) as api:
        done = create_task(api, fleet, ["true"], queue="q")
        wait_status(api, done["id"], ENDED)
        held = create_task(api, fleet, ["true"], queue="held")
        (worker,) = api.get("/workers").json()["workers"]
        fleet.wait_for(lambda: api.get("/workers").json()["workers"][0]["pid"] is not None, what="the worker's pid")
        task = {"command": ["echo", "hi"], "working_dir": "/tmp"}
        unknown = "0123456789abcdef0123456789abcdef"
        as_json = {"content-type": "application/json"}
        cases = [
            BadRequest("non-JSON body", "POST", "/tasks", "body", content=b"{not json", headers=as_json),
            BadRequest("plain text body", "POST", "/tasks", "body", content=b"hello"),
            BadRequest("body not UTF-8", "POST", "/tasks", "body", content=b'{"command": ["\xff"]}', headers=as_json),
            BadRequest("JSON array instead of object", "POST", "/tasks", "body", json=[task]),
            BadRequest("empty body", "POST", "/tasks", "body", content=b"", headers=as_json),
            BadRequest("missing command", "POST", "/tasks", "command", json={"working_dir": "/tmp"}),
            BadRequest("empty command", "POST", "/tasks", "command", json={**task, "command": []}),
            BadRequest("command not a list", "POST", "/tasks", "command", json={**task, "command": "echo hi"}),
            BadRequest("command with an empty argument", "POST", "/tasks", "command.0", json={**task, "command": [""]}),
            BadRequest("missing working_dir", "POST", "/tasks", "working_dir", json={"command": ["true"]}),
            BadRequest("relative working_dir", "POST", "/tasks", "working_dir", json={**task, "working_dir": "rel"}),
            BadRequest("priority as a word", "POST", "/tasks", "priority", json={**task, "priority": "high"}),
            BadRequest("priority as a numeric string", "POST", "/tasks", "priority", json={**task, "priority": "5"}),
            BadRequest("priority as a boolean", "POST", "/tasks", "priority", json={**task, "priority": True}),
            BadRequest("priority fractional", "POST", "/tasks", "priority", json={**task, "priority": 1.5}),
            BadRequest("timeout 0", "POST", "/tasks", "timeout", json={**task, "timeout": 0}),
            BadRequest("timeout negative", "POST", "/tasks", "timeout", json={**task, "timeout": -1}),
            BadRequest(
                "timeout NaN",
                "POST",
                "/tasks",
                "timeout",
                content=b'{"command": ["true"], "working_dir": "/tmp", "timeout": NaN}',
                headers=as_json,
            ),
            BadRequest("retries -1", "POST", "/tasks", "retries", json={**task, "retries": -1}),
            BadRequest("gpus -1", "POST", "/tasks", "gpus", json={**task, "gpus": -1}),
            BadRequest("unknown extra field", "POST", "/tasks", "bogus", json={**task, "bogus": 1}),
            BadRequest("bad env var name", "POST", "/tasks", "env", json={**task, "env": {"1BAD": "x"}}),
            BadRequest("env value not a string", "POST", "/tasks", "env.A", json={**task, "env": {"A": 1}}),
            BadRequest("env value with NUL", "POST", "/tasks", "env", json={**task, "env": {"A": "a\u0000b"}}),
            BadRequest("bad queue name in body", "POST", "/tasks", "queue", json={**task, "queue": "bad name!"}),
            BadRequest("missing queue in body", "POST", "/tasks", "queue", json={**task, "queue": "nosuch"}),
            BadRequest("bad queue name in query", "GET", "/tasks", "queue", params={"queue": "bad name!"}),
            BadRequest("unknown status", "GET", "/tasks", "status", params={"status": "queued,bogus"}),
            BadRequest("empty status in list", "GET", "/tasks", "status", params={"status": "queued,,"}),
            BadRequest("bad worker in query", "GET", "/tasks", "worker", params={"worker": "bad id!"}),
            BadRequest("limit=0", "GET", "/tasks", "limit", params={"limit": "0"}),
            BadRequest("limit not a number", "GET", "/tasks", "limit", params={"limit": "ten"}),
            BadRequest("offset=-1", "GET", "/tasks", "offset", params={"offset": "-1"}),
            BadRequest("offset past 64 bits", "GET", "/tasks", "offset", params={"offset": str(2**64)}),
            BadRequest("task id walking out", "GET", "/api/v1/tasks/../../etc", "task_id", raw=True),
            BadRequest("task id walking out, encoded", "GET", "/tasks/..%2F..%2Fetc", "task_id"),
            BadRequest("task id not hex", "GET", "/tasks/xyz!", "task_id"),
            BadRequest("unknown task", "GET", f"/tasks/{unknown}", "task"),
            BadRequest("unknown task's log", "GET", f"/tasks/{unknown}/log", "task"),
            BadRequest("log offset=-1", "GET", f"/tasks/{done['id']}/log", "offset", params={"offset": "-1"}),
            BadRequest(
                "log offset past 64 bits", "GET", f"/tasks/{done['id']}/log", "offset", params={"offset": str(2**64)}
            ),
            BadRequest("follow not a boolean", "GET", f"/tasks/{done['id']}/log", "follow", params={"follow": "maybe"}),
            BadRequest(
                "enqueue, bad queue name", "POST", f"/tasks/{held['id']}/enqueue", "queue", json={"queue": "a b"}
            ),
            BadRequest(
                "enqueue, missing queue", "POST", f"/tasks/{done['id']}/enqueue", "queue", json={"queue": "nosuch"}
            ),
            BadRequest("enqueue, no body", "POST", f"/tasks/{done['id']}/enqueue", "body"),
            BadRequest("dequeue a completed task", "POST", f"/tasks/{done['id']}/dequeue", "task"),
            BadRequest(
                "abort with a non-JSON body",
                "POST",
                f"/tasks/{held['id']}/abort",
                "body",
                content=b"x",
                headers=as_json,
            ),
            BadRequest("clone with an array body", "POST", f"/tasks/{done['id']}/clone", "body", json=["q"]),
            BadRequest(
                "clone into a missing queue", "POST", f"/tasks/{done['id']}/clone", "queue", json={"queue": "nosuch"}
            ),
            BadRequest("workers: gpus 3-1", "POST", "/workers", "gpus", json={"queues": ["q"], "gpus": "3-1"}),
            BadRequest("workers: gpus empty", "POST", "/workers", "gpus", json={"queues": ["q"], "gpus": ""}),
            BadRequest("workers: queues []", "POST", "/workers", "queues", json={"queues": []}),
            BadRequest("workers: queues a string", "POST", "/workers", "queues", json={"queues": "q"}),
            BadRequest("workers: bad queue name", "POST", "/workers", "queues", json={"queues": ["bad name!"]}),
            BadRequest("workers: queue twice", "POST", "/workers", "queues", json={"queues": ["q", "q"], "gpus": "5"}),
            BadRequest(
                "workers: missing queue", "POST", "/workers", "queues", json={"queues": ["nosuch"], "gpus": "5"}
            ),
            BadRequest("workers: GPU claimed", "POST", "/workers", "gpus", json={"queues": ["q"], "gpus": "1,2"}),
            BadRequest(
                "workers: cpu_only and gpus",
                "POST",
                "/workers",
                "gpus",
                json={"queues": ["q"], "cpu_only": True, "gpus": "0"},
            ),
            BadRequest(
                "workers: cpu_only a string", "POST", "/workers", "cpu_only", json={"queues": ["q"], "cpu_only": "yes"}
            ),
            BadRequest("bad worker id in path", "GET", "/workers/bad%20id!", "worker_id"),
            BadRequest("unknown worker", "GET", "/workers/nosuch", "worker"),
            BadRequest("stop an unknown worker", "DELETE", "/workers/nosuch", "worker"),
            BadRequest("queues: bad name", "POST", "/queues", "name", json={"name": "bad name!"}),
            BadRequest("queues: exists", "POST", "/queues", "name", json={"name": "q"}),
            BadRequest("queues: empty tag", "POST", "/queues", "tags.0", json={"name": "fresh", "tags": [""]}),
            BadRequest("queues: tags not a list", "PATCH", "/queues/q", "tags", json={"tags": "x"}),
            BadRequest("queues: bad name in path", "GET", "/queues/bad!", "queue"),
            BadRequest("queues: delete with queued tasks", "DELETE", "/queues/held", "queue"),
            BadRequest("queues: force not a boolean", "DELETE", "/queues/held", "force", params={"force": "maybe"}),
            BadRequest("shutdown: drain not a boolean", "POST", "/shutdown", "drain", json={"drain": "maybe"}),
        ]
        before = store_state(api)
        failures = []
        for case in cases:
            if case.raw:
                status, raw_body = send_raw(fleet, case.method, case.path)
            else:
                answer = api.request(
                    case.method,
                    case.path,
                    json=case.json,
                    content=case.content,
                    headers=case.headers,
                    params=case.params,
                )
                status, raw_body = answer.status_code, answer.content
            try:
                body = json.loads(raw_body)
            except ValueError:
                body = None
            if not 400 <= status < 500:
                failures.append(f"{case.what}: HTTP {status}, expected 4xx: {raw_body[:300]!r}")
            elif not isinstance(body, dict) or not isinstance(body.get("error"), str) or not body["error"]:
                failures.append(f"{case.what}: no JSON error: {raw_body[:300]!r}")
            elif body.get("field") != case.expect_field:
                failures.append(
                    f"{case.what}: field {body.get('field')!r}, expected {case.expect_field!r}: {body['error']}"
                )
            elif store_state(api) != before:
                failures.append(f"{case.what}: the store changed")
        assert not failures, "\n".join(failures)
        assert store_state(api) == before
        assert api.get(f"/workers/{quote(worker['id'], safe='')}").json()["state"] != "dead"
        assert api.get("/health").json()["status"] == "ok"


def test_conflicts_name_the_task(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    with fleet.api() as api:
        done = create_task(api, fleet, ["true"], queue="q")
        wait_status(api, done["id"], ENDED)
        running = create_task(api, fleet, [PY, "-c", "import time; time.sleep(30)"], queue="q")
        wait_status(api, running["id"], {"in_progress"})
        try:
            abort = api.post(f"/tasks/{done['id']}/abort")
            enqueue = api.post(f"/tasks/{running['id']}/enqueue", json={"queue": "q"})
        finally:
            api.post(f"/tasks/{running['id']}/abort")
            wait_status(api, running["id"], ENDED)
    unnamed = [a.text for a in (abort, enqueue) if a.status_code != 409 or a.json().get("field") != "task"]
    assert not unnamed, unnamed
