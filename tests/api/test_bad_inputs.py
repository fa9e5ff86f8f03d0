"""Bad command lines: exit 2, one line on stderr naming the bad value and what
was expected, and nothing changed.

Without a manager, a bad ``up`` must not leave one running (nor its
``manager.json``).  With a manager, every refused command leaves workers,
queues and tasks exactly as they were, and the manager keeps running.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fleet.core.nvml import Nvml
from tests.conftest import Fleet, alive

YARN_CONFIG = "agent { package_manager { type: yarn } }\n"
PORT_CONFIG = 'fleet { api { port: "x" } }\n'


@dataclass(frozen=True)
class Bad:
    """One bad command line and the words its one error line must contain:
    the bad value, and a word of what was expected."""

    args: tuple[str, ...]
    names: tuple[str, ...]


def usage_problem(result: subprocess.CompletedProcess[str], names: tuple[str, ...]) -> str | None:
    """What is wrong with the answer to a bad command line, or None."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode != 2:
        return f"exit {result.returncode}, expected 2; stderr={result.stderr!r} stdout={result.stdout!r}"
    if len(lines) != 1:
        return f"expected one line on stderr, got {len(lines)}: {result.stderr!r}"
    missing = [n for n in names if n.lower() not in lines[0].lower()]
    if missing:
        return f"the error line does not name {missing}: {lines[0]!r}"
    return None


def nvml_available() -> bool:
    return Nvml().available


# --- without a manager: nothing may be started ---------------------------------------

WITHOUT_MANAGER = {
    "gpus-descending": Bad(("up", "--gpus", "3-1", "--queue", "q"), ("'3-1'", "1-3")),
    "gpus-letter": Bad(("up", "--gpus", "a", "--queue", "q"), ("'a'", "indices")),
    "gpus-twice": Bad(("up", "--gpus", "0,0", "--queue", "q"), ("'0,0'", "twice")),
    "gpus-empty": Bad(("up", "--gpus", "", "--queue", "q"), ("''", "indices")),
    "gpus-negative": Bad(("up", "--gpus", "-1", "--queue", "q"), ("'-1'", "indices")),
    "gpus-all-without-nvml": Bad(("up", "--gpus", "all", "--queue", "q"), ("all", "NVML", "explicit indices")),
    "cpu-only-and-gpus": Bad(("up", "--cpu-only", "--gpus", "0", "--queue", "q"), ("--cpu-only", "--gpus", "exclude")),
    "queue-bad-name": Bad(("up", "--gpus", "0", "--queue", "bad name!"), ("'bad name!'", "letters")),
    "queue-twice": Bad(("up", "--gpus", "0", "--queue", "a", "a"), ("'a'", "twice")),
    "queue-missing-option": Bad(("up", "--gpus", "0"), ("--queue", "expected")),
    "queue-does-not-exist": Bad(
        ("up", "--gpus", "0", "--queue", "nosuch", "--port", "0"), ("nosuch", "--create-queue")
    ),
    "config-package-manager": Bad(
        ("--config", "{config}", "up", "--gpus", "0", "--queue", "q", "--port", "0"),
        ("agent.package_manager.type", "'yarn'", "pip"),
    ),
    "config-port": Bad(
        ("--config", "{config}", "up", "--gpus", "0", "--queue", "q"), ("fleet.api.port", "'x'", "integer")
    ),
}
CONFIGS = {"config-package-manager": YARN_CONFIG, "config-port": PORT_CONFIG}


@pytest.mark.parametrize("case", list(WITHOUT_MANAGER), ids=list(WITHOUT_MANAGER))
def test_bad_up_without_a_manager_starts_nothing(fleet: Fleet, case: str) -> None:
    bad = WITHOUT_MANAGER[case]
    if case == "gpus-all-without-nvml" and nvml_available():
        pytest.skip("NVML is available here: --gpus all is valid")
    args = bad.args
    if case in CONFIGS:
        config = fleet.root / f"{case}.conf"
        config.write_text(CONFIGS[case])
        args = tuple(str(config) if a == "{config}" else a for a in args)
    result = fleet.cli(*args, timeout=60)
    problem = usage_problem(result, bad.names)
    assert problem is None, f"fleetctl {' '.join(args)}: {problem}"
    assert not (fleet.home / "manager.json").exists(), "a failed `up` left manager.json behind"
    assert fleet.processes() == [], "a failed `up` left a manager or worker running"


def test_bad_config_through_the_environment_names_the_key(fleet: Fleet) -> None:
    """The same check when the config comes from FLEET_CONFIG_FILE (the fixture's file)."""
    (fleet.root / "fleet.conf").write_text(YARN_CONFIG + PORT_CONFIG)
    for args in (("up", "--gpus", "0", "--queue", "q", "--port", "0"), ("submit", "--queue", "q", "--", "true")):
        result = fleet.cli(*args)
        problem = usage_problem(result, ("agent.package_manager.type", "yarn"))
        assert problem is None, f"fleetctl {' '.join(args)}: {problem}"
    assert fleet.processes() == []
    assert not (fleet.home / "manager.json").exists()


def test_huge_gpu_range_is_refused_at_once(fleet: Fleet) -> None:
    """A range is checked against the limit before it is expanded."""
    result = fleet.cli("up", "--gpus", "0-99999999", "--queue", "q", timeout=3)
    assert usage_problem(result, ("0-99999999", "1024")) is None
    assert fleet.processes() == []


# --- with a manager: nothing may change ----------------------------------------------

WORKER_KEYS = ("id", "host", "gpus", "queues", "mode", "state", "pid", "tasks", "order_fairness")


def snapshot(fleet: Fleet) -> dict[str, Any]:
    """Workers, queues and tasks as the API shows them (less heartbeat times)."""
    # a connection per request: a kept-alive one waits ~40 ms per answer (tests/api/test_api.py)
    with fleet.api(limits=httpx.Limits(max_keepalive_connections=0)) as api:
        workers = api.get("/workers", params={"all": True}).raise_for_status().json()["workers"]
        queues = api.get("/queues").raise_for_status().json()["queues"]
        tasks = api.get("/tasks", params={"limit": 10_000}).raise_for_status().json()["tasks"]
    return {
        "workers": [{k: w[k] for k in WORKER_KEYS} for w in workers],
        "queues": queues,
        "tasks": tasks,
    }


def test_bad_usage_with_a_manager_changes_nothing(fleet: Fleet) -> None:
    fleet.up("--gpus", "0,1", "--queue", "q", "--create-queue")
    done = fleet.submit("q", "python", "-c", "print('done')")
    assert fleet.cli("wait", done).returncode == 0
    fleet.ok("queue", "create", "held")
    held = fleet.submit("held", "python", "-c", "pass")  # no worker pulls `held`: it stays queued
    with fleet.api() as api:
        (worker,) = api.get("/workers").json()["workers"]
    owner = str(worker["id"])
    fleet.wait_for(lambda: fleet.task(held)["status"] == "queued", what="the held task to be queued")
    manager_pid = int(fleet.manager_info()["pid"])
    unknown = "0123456789abcdef0123456789abcdef"
    bad_config = fleet.root / "bad.conf"
    bad_config.write_text(YARN_CONFIG)

    cases = [
        Bad(("submit", "--", "true"), ("--queue", "missing")),
        Bad(("submit", "--queue", "nosuch", "--", "true"), ("nosuch", "does not exist")),
        Bad(("submit", "--queue", "bad name!", "--", "true"), ("bad name!", "letters")),
        Bad(("submit", "--queue", "q", "--env", "NOEQUALS", "--", "true"), ("NOEQUALS", "not set")),
        Bad(("submit", "--queue", "q", "--env", "1BAD=x", "--", "true"), ("1BAD", "expected")),
        Bad(("submit", "--queue", "q", "--priority", "x", "--", "true"), ("'x'", "integer")),
        Bad(("submit", "--queue", "q", "--timeout", "-1", "--", "true"), ("--timeout", "'-1'", "a number over 0")),
        Bad(("submit", "--queue", "q", "--retries", "-1", "--", "true"), ("--retries", "'-1'", "from 0 to 1000")),
        *(Bad((command, "xyz!"), ("xyz!", "hex")) for command in ("wait", "show", "logs", "abort")),
        *(Bad((command, unknown), (unknown, "does not exist")) for command in ("wait", "show", "logs", "abort")),
        Bad(("logs", "--follow", unknown), (unknown, "does not exist")),
        Bad(("enqueue", done, "--queue", "nosuch"), ("nosuch", "does not exist")),
        Bad(("enqueue", held, "--queue", "bad name!"), ("bad name!", "letters")),
        Bad(("dequeue", done), (done, "not queued")),
        Bad(("queue", "delete", "held"), ("held", "queued", "force")),
        Bad(("queue", "delete", "nosuch"), ("nosuch", "does not exist")),
        Bad(("queue", "create", "q"), ("'q'", "already exists")),
        Bad(("queue", "create", "bad name!"), ("bad name!", "letters")),
        Bad(("tasks", "--status", "bogus"), ("bogus", "expected one of")),
        Bad(("tasks", "--queue", "bad!"), ("bad!", "letters")),
        Bad(("tasks", "--worker", "bad!"), ("bad!", "letters")),
        Bad(("up", "--gpus", "1,2", "--queue", "q"), (owner, "claimed", "GPU 1")),
        Bad(("up", "--gpus", "0,1", "--queue", "held"), (owner, "already runs", "stop")),
        Bad(("up", "--gpus", "5", "--queue", "nosuch"), ("nosuch", "--create-queue")),
        Bad(("up", "--gpus", "3-1", "--queue", "q"), ("'3-1'", "1-3")),
        Bad(("stop", "nosuch"), ("nosuch", "does not exist")),
        Bad(("stop", "bad!id"), ("bad!id", "letters")),
        Bad(
            ("--config", str(bad_config), "submit", "--queue", "q", "--", "true"),
            ("agent.package_manager.type", "yarn"),
        ),
        Bad(("--config", str(bad_config), "up", "--gpus", "4", "--queue", "q"), ("agent.package_manager.type", "yarn")),
    ]
    before = snapshot(fleet)
    failures = []
    for bad in cases:
        result = fleet.cli(*bad.args)
        problem = usage_problem(result, bad.names)
        if problem is None and not alive(manager_pid):
            problem = "the manager is no longer running"
        if problem is None:
            after = snapshot(fleet)
            if after != before:
                problem = f"the state changed:\nbefore={before}\nafter={after}"
        if problem is not None:
            failures.append(f"fleetctl {' '.join(bad.args)}: {problem}")
    assert not failures, "\n".join(failures)

    # abort of a task that ended is a failure (1), not bad usage, and names its state
    ended = fleet.cli("abort", done)
    assert ended.returncode == 1 and done in ended.stderr and "is completed" in ended.stderr, ended
    assert snapshot(fleet) == before

    assert fleet.task(done)["status"] == "completed"
    assert fleet.task(held)["status"] == "queued" and fleet.task(held)["queue"] == "held"

    # `up` of a worker that exists with the same spec succeeds and changes nothing.
    again = fleet.cli("up", "--gpus", "0,1", "--queue", "q")
    assert again.returncode == 0, again.stderr
    assert owner in again.stdout
    assert snapshot(fleet) == before
    assert int(fleet.manager_info()["pid"]) == manager_pid
