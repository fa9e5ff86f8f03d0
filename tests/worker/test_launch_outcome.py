"""The launch record (fleet/worker/launch_outcome.py) and the runner's verdict
(fleet/worker/runner.py): a launcher's outcome reaches the runner as a typed
record, and the runner acts on its kind, never on exit codes or log text.

The preparing step runs for real here (``python -m fleet.worker.prepare``
against a real store), with ``free_space_threshold_gb`` above this disk's
free space, as tests/manager/test_faults.py does for a whole fleet.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.core.home import Home
from fleet.core.models import (
    Runner,
    Script,
    Task,
    TaskRequirements,
    TaskSpec,
    TaskStatus,
    Worker,
    WorkerMode,
    WorkerState,
)
from fleet.core.outcome import Outcome, StopCause
from fleet.store import open_store
from fleet.worker.launch_outcome import (
    Failure,
    LaunchedEnvironment,
    LaunchOutcome,
    Phase,
    failure_in,
    outcome_path,
    read_outcome,
    remove_outcome,
    write_outcome,
)
from fleet.worker.runner import NO_SPACE_BACKOFF_S, verdict
from tests.factories import running_task

ALL = [
    LaunchOutcome(Phase.TASK, True),
    LaunchOutcome(Phase.TASK, True, environment=LaunchedEnvironment(True, ["six==1.17.0"], "uv", "3.11.7")),
] + [
    LaunchOutcome(phase, False, failure, f'{failure.value} at {phase.value}: ünïcode | and, "quotes"')
    for phase in Phase
    for failure in Failure
]


@pytest.mark.parametrize("record", ALL, ids=lambda r: f"{r.phase.value}-{r.failure}")
def test_a_record_round_trips(record: LaunchOutcome, tmp_path: Path) -> None:
    assert LaunchOutcome.decode(record.encode()) == record
    path = outcome_path(tmp_path, "ab" * 16, 3)
    write_outcome(path, record)
    assert read_outcome(path) == record
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    remove_outcome(path)
    assert read_outcome(path) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"phase": "task", "ok": true}',  # no version
        b'{"v": 2, "phase": "task", "ok": true}',
        b'{"v": 1, "phase": "nowhere", "ok": true}',
        b'{"v": 1, "phase": "task", "ok": "yes"}',
        b'{"v": 1, "phase": "task", "ok": false}',  # a failure without its kind
        b'{"v": 1, "phase": "task", "ok": true, "failure": "no_space"}',  # ok with a failure kind
        b'{"v": 1, "phase": "task", "ok": false, "failure": "disk full"}',
        b"\xff\xfe",
        b'{"v": 1, "phase": "task", "ok": true, "environment": {"cached": "yes"}}',
        b'{"v": 1, "phase": "task", "ok": true, "environment": {"cached": true, "frozen": [1], '
        b'"manager": "uv", "python": "3"}}',
    ],
)
def test_anything_else_is_not_a_record(data: bytes, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LaunchOutcome.decode(data)
    path = tmp_path / "x.outcome.json"
    path.write_bytes(data)
    assert read_outcome(path) is None  # read as "nothing known": the exit status decides


def test_the_kind_comes_from_the_phase_or_from_enospc() -> None:
    assert failure_in(Phase.CODE) == Failure.BAD_REPO
    assert failure_in(Phase.ENVIRONMENT, RuntimeError("x")) == Failure.ENV_FAILED
    assert failure_in(Phase.SETUP, OSError(errno.ENOSPC, "No space left on device")) == Failure.NO_SPACE
    assert failure_in(Phase.SETUP, OSError(errno.EIO, "I/O error")) == Failure.SETUP_FAILED
    assert LaunchOutcome.failed(Phase.CODE, "m", failure=Failure.NO_SPACE).no_space


# -- the verdict acts on the kind, not on text or exit codes ------------------------------------


def _task(attempt: int = 1, retries: int = 0) -> Task:
    return running_task(Script(["python", "x.py"], "/"), attempt=attempt, retries=retries)


def test_no_space_by_kind_puts_the_task_back_at_the_head_and_holds_off() -> None:
    record = LaunchOutcome(Phase.ENVIRONMENT, False, Failure.NO_SPACE, "no room for environments")
    judged = verdict(_task(), Outcome(1, None, ""), ["unrelated output"], record, requeue=True, stop_requeue=False)
    assert (judged.status, judged.reason, judged.requeue) == (TaskStatus.FAILED, "no room for environments", "head")
    assert judged.hold_off_s == NO_SPACE_BACKOFF_S


def test_the_words_for_no_space_in_the_log_are_not_a_kind() -> None:
    """A task (or a failed build) that prints the words is an ordinary failure."""
    tail = ["waiting for disk space: 0.1 GB free", "exit 75"]
    for record in (None, LaunchOutcome(Phase.ENVIRONMENT, False, Failure.ENV_FAILED, "waiting for disk space")):
        for rc in (1, 75):
            judged = verdict(_task(), Outcome(rc, None, ""), tail, record, requeue=True, stop_requeue=False)
            assert judged.status == TaskStatus.FAILED and judged.requeue is None and not judged.hold_off_s


def test_a_stopped_launch_is_stopped_whatever_its_record_says() -> None:
    record = LaunchOutcome(Phase.ENVIRONMENT, False, Failure.NO_SPACE, "no room")
    aborted = Outcome(-15, StopCause.ABORT, "aborted by alice")
    judged = verdict(_task(), aborted, [], record, requeue=True, stop_requeue=False)
    assert (judged.status, judged.reason, judged.requeue) == (TaskStatus.STOPPED, "aborted by alice", None)


def test_a_caller_that_never_requeues_keeps_the_exit_verdict() -> None:
    """``fleetctl execute``: no queue to go back to, no worker to hold off."""
    record = LaunchOutcome(Phase.ENVIRONMENT, False, Failure.NO_SPACE, "no room")
    judged = verdict(_task(retries=3), Outcome(1, None, ""), ["no room"], record, requeue=False, stop_requeue=False)
    assert (judged.status, judged.requeue, judged.hold_off_s) == (TaskStatus.FAILED, None, 0.0)
    assert judged.reason == "exit code 1: no room"


def test_retries_and_stop_requeue() -> None:
    failed = verdict(_task(attempt=1, retries=1), Outcome(2, None, ""), [], None, requeue=True, stop_requeue=False)
    assert failed.requeue == "tail"
    last = verdict(_task(attempt=2, retries=1), Outcome(2, None, ""), [], None, requeue=True, stop_requeue=False)
    assert last.requeue is None
    stop = Outcome(-15, StopCause.WORKER_STOP, "worker stopped by fleetctl stop")
    assert verdict(_task(), stop, [], None, requeue=True, stop_requeue=True).requeue == "head"
    assert verdict(_task(), stop, [], None, requeue=True, stop_requeue=False).requeue is None


# -- the preparing step writes the record ------------------------------------------------------


def _prepare(tmp_path: Path, threshold_gb: float, setup: str | None = None) -> tuple[int, str, LaunchOutcome | None]:
    """Run ``python -m fleet.worker.prepare`` for a started task needing an environment."""
    home = Home(tmp_path / "home").ensure()
    conf = tmp_path / "fleet.conf"
    conf.write_text(f"agent {{ venvs_cache {{ free_space_threshold_gb: {threshold_gb} }} }}\n")
    store = open_store(home)
    spec = TaskSpec(Script(["python", "-c", "print(1)"], str(tmp_path), setup_script=setup))
    if setup is None:
        spec = TaskSpec(spec.script, requirements=TaskRequirements(packages=("six",)))
    task = store.create_task(spec, None, "test")
    worker = Worker("h:cpu", "h", WorkerMode.STATIC, None, [], False, WorkerState.BUSY, "", 0.0)
    task = store.start_task(task.id, worker, [], "test", Runner.EXECUTE)
    store.close()
    argv = [sys.executable, "-m", "fleet.worker.prepare", "--home", str(home.root), "--task", task.id]
    done = subprocess.run([*argv, "--config", str(conf)], capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, read_outcome(outcome_path(home.root, task.id, task.attempt))


def test_a_prepare_without_disk_space_says_so_by_kind(tmp_path: Path) -> None:
    rc, out, record = _prepare(tmp_path, 1_000_000)
    assert rc == 1, out  # the same exit as any failed preparation: the kind is in the record
    assert record is not None and record.no_space and not record.ok, out
    assert record.phase == Phase.ENVIRONMENT
    assert "free_space_threshold_gb" in record.message and record.message in out


def test_a_failed_setup_script_is_its_own_kind(tmp_path: Path) -> None:
    rc, out, record = _prepare(tmp_path, 0, setup="exit 4")
    assert rc == 1, out
    assert record == LaunchOutcome(Phase.SETUP, False, Failure.SETUP_FAILED, "setup script failed (exit code 4)")


def test_a_prepare_that_gets_through_says_so_before_it_becomes_the_task(tmp_path: Path) -> None:
    rc, out, record = _prepare(tmp_path, 0, setup="echo ready")
    assert rc == 0 and out.rstrip().endswith("1"), out
    assert record == LaunchOutcome(Phase.TASK, True)
