"""API fuzzing: schemathesis against the manager's own OpenAPI document."""

from __future__ import annotations

from collections import Counter
from typing import Any

import hypothesis
import hypothesis.errors
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.schemas import BaseSchema

from tests.conftest import Fleet

# Operations that could stop the manager or give it workers that run tasks.
EXCLUDED = (
    ("POST", "/api/v1/shutdown"),
    ("POST", "/api/v1/workers"),
    ("DELETE", "/api/v1/workers/{worker_id}"),
    ("POST", "/api/v1/workers/{worker_id}/stop"),
)
MAX_EXAMPLES = 25
MB = 2**20
DEEP = b"[" * 100_000 + b"]" * 100_000


def hostile(fleet: Fleet, worker: str, task: str) -> list[tuple[str, str, bytes]]:
    """Requests that once made a 500, bricked the manager or grew it without
    limit (issue 12), pinned so that every run sends them: method, path (a
    path under the root is a ClearML-compatible call) and raw body."""
    prop = b'{"worker": "%s", "runtime_properties": [{"key": "force", "value": "on", "expiry": %s}]}'
    task_body = b'{"command": ["true"], "working_dir": "%s", "queue": "fuzz-a", %s}'
    root = str(fleet.root).encode()
    out = [
        ("POST", "/workers.set_runtime_properties", prop % (worker.encode(), value))
        for value in (b"1e300", b"-1e300", b"NaN", b"Infinity", b"1" + b"0" * 400, b"315360001")
    ]
    out += [
        ("PUT", f"/api/v1/workers/{worker}/runtime-properties/force", b'{"value": "on", "expiry": 1e300}'),
        ("POST", "/queues.update", b'{"queue": "fuzz-b", "tags": ' + DEEP + b"}"),
        ("PATCH", "/api/v1/queues/fuzz-b", b'{"tags": ' + DEEP + b"}"),
        ("POST", "/api/v1/tasks", task_body % (root, b'"env": {"BIG": "' + b"x" * (3 * MB) + b'"}')),
        ("POST", "/api/v1/tasks", task_body % (root, b'"env": {"V": "' + b"x" * (64 * 1024 + 1) + b'"}')),
        ("POST", "/api/v1/tasks", task_body % (root, b'"name": "a\\u0000b"')),
        ("POST", "/api/v1/tasks", task_body % (root, b'"user": "a\\u0000b"')),
        ("POST", "/api/v1/tasks", task_body % (root, b'"priority": 1e300')),
        ("POST", "/api/v1/tasks", task_body % (root, b'"timeout": 1e300')),
        ("POST", "/api/v1/tasks", task_body % (root, b'"retries": 100000000000000000000')),
        ("POST", "/api/v1/tasks", task_body % (root, b'"gpus": 100000000000000000000')),
        ("GET", "/api/v1/tasks?limit=100000000000000000000", b""),
        ("GET", f"/api/v1/tasks/{task}/log?offset=100000000000000000000", b""),
        ("GET", "/api/v1/metrics?kind=gpu&id=" + "1" * 5000, b""),
        ("GET", "/api/v1/metrics?step=100000000000000000000", b""),
        ("GET", "/api/v1/metrics?since=1e300", b""),
        ("GET", "/api/v1/report?since=-1e300", b""),
    ]
    return out


NEVER_RAN = {"created", "queued", "stopped"}  # stopped: aborted while it waited
SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests on every run
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


def test_fuzzed_requests_never_get_a_server_error(fleet: Fleet) -> None:
    """Every operation in ``/openapi.json`` except the excluded ones gets up to
    ``MAX_EXAMPLES`` generated requests in each of three passes: valid input
    (``positive``), invalid input (``negative``; skipped where nothing can be
    made invalid), and valid input aimed at real objects (``pinned``: path ids
    of a task, queue and worker that exist, bodies with an absolute
    ``working_dir`` and a queue no worker serves).  No answer may be 5xx
    (schemathesis's ``not_a_server_error``); 4xx for bad input is fine.
    Then the :func:`hostile` requests, each pinned, must get a 4xx.
    Afterwards the manager must still be healthy.

    The only worker is a CPU-only one on the queue ``parking``; generated
    tasks go to other queues, so they are created or queued but never run
    by it (the remote-executor routes may mark one started or ended under a
    made-up executor id; nothing runs here for that).
    Excluded from fuzzing, so that generated requests can neither stop the
    manager nor add (or restart) workers that run tasks:
    ``POST /api/v1/shutdown``, ``POST /api/v1/workers``,
    ``DELETE /api/v1/workers/{worker_id}`` and
    ``POST /api/v1/workers/{worker_id}/stop``.
    """
    fleet.up("--cpu-only", "--queue", "parking", "--create-queue")
    base_url, headers = fleet.url, fleet.headers()
    with fleet.api() as api:
        for queue in ("fuzz-a", "fuzz-b"):
            api.post("/queues", json={"name": queue}).raise_for_status()
        body = {"command": ["true"], "working_dir": str(fleet.root), "queue": "fuzz-a"}
        task = api.post("/tasks", json=body).raise_for_status().json()
        worker = api.get("/workers").raise_for_status().json()["workers"][0]
    pins = {"task_id": task["id"], "queue": "fuzz-b", "worker_id": worker["id"]}

    def aim(case: Any) -> Any:
        if isinstance(case.body, dict):
            if "working_dir" in case.body:
                case.body["working_dir"] = str(fleet.root)
            if "queue" in case.body:
                case.body["queue"] = "fuzz-a"
        return case

    statuses: dict[str, Counter[int]] = {}
    failures: list[str] = []

    def fuzz(label: str, strategy: SearchStrategy[Any]) -> None:
        seen = statuses.setdefault(label, Counter())

        @SETTINGS
        @hypothesis.given(case=strategy)
        def check(case: Any) -> None:
            response = case.call_and_validate(
                base_url=base_url, headers=headers, checks=[not_a_server_error], timeout=30
            )
            seen[response.status_code] += 1

        try:
            check()
        except hypothesis.errors.Unsatisfiable:
            # nothing in this operation can be made invalid (e.g. only free-form strings)
            assert label.endswith(" negative"), f"{label}: no request could be generated"
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{label}: {exc}")

    schema: BaseSchema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", headers=headers)
    for method, path in EXCLUDED:
        schema = schema.exclude(method=method, path=path)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    labels = {operation.label for operation in operations}
    assert not labels & {f"{method} {path}" for method, path in EXCLUDED}
    assert {"GET /api/v1/health", "POST /api/v1/tasks", "PATCH /api/v1/queues/{queue}"} <= labels

    for operation in operations:
        pinned = {name: value for name, value in pins.items() if "{" + name + "}" in operation.path}
        fuzz(f"{operation.label} positive", operation.as_strategy(generation_mode=GenerationMode("positive")))
        fuzz(f"{operation.label} negative", operation.as_strategy(generation_mode=GenerationMode("negative")))
        fuzz(f"{operation.label} pinned", operation.as_strategy(path_parameters=pinned).map(aim))

    with fleet.api() as api:
        for method, path, raw in hostile(fleet, worker["id"], task["id"]):
            url = fleet.url + path if not path.startswith("/api/v1/") else path.removeprefix("/api/v1")
            answer = api.request(method, url, content=raw or None, headers={"content-type": "application/json"})
            seen = statuses.setdefault(f"{method} {path[:60]} hostile", Counter())
            seen[answer.status_code] += 1
            if not 400 <= answer.status_code < 500:
                failures.append(f"hostile {method} {path[:80]}: HTTP {answer.status_code}, expected 4xx")

    log = fleet.home / "logs" / "manager.log"
    assert not failures, "\n\n".join(failures) + f"\n\nmanager log:\n{log.read_text() if log.exists() else ''}"
    assert statuses["POST /api/v1/tasks pinned"][201] > 0, statuses  # the fuzz did reach real objects

    with fleet.api() as api:
        assert api.get("/health").status_code == 200
        workers = api.get("/workers").raise_for_status().json()["workers"]
        tasks = api.get("/tasks", params={"limit": 10_000}).raise_for_status().json()["tasks"]
    assert [w["id"] for w in workers] == [worker["id"]]
    ran = [
        (t["id"], t["status"], t["queue"], t["status_reason"], t["worker"])
        for t in tasks
        # the remote-executor routes (start/finish) move a task without running anything here
        if (t["status"] not in NEVER_RAN and t["worker"] == worker["id"]) or t["queue"] == "parking"
    ]
    assert not ran, ran
