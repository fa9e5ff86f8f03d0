"""TaskProcess with real process groups: output, exit codes, group stops,
the SIGKILL after the grace period, and children left behind."""

from __future__ import annotations

import ctypes
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from fleet.core.contain import Attempt, cgroup2_mount
from fleet.core.outcome import Outcome, StopCause
from fleet.core.procs import PR_SET_CHILD_SUBREAPER, become_subreaper, group_alive, reap_orphans, signal_group
from fleet.core.tasklog import TaskLog, strip_stamp
from fleet.worker.process import TaskProcess

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
Spawn = Callable[..., TaskProcess]


@pytest.fixture(autouse=True)
def subreaper() -> Iterator[None]:
    """Be a subreaper while a test runs, as the worker is (fleet.worker.loop): processes a
    task leaves behind are then reaped by tick(); pid 1 of a container may never reap them."""
    assert become_subreaper()
    yield
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    reap_orphans(set())


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    started: list[TaskProcess] = []

    def start(*argv: str, grace: float = 5.0) -> TaskProcess:
        log = TaskLog(tmp_path / f"task{len(started)}.log", 1 << 20)
        proc = TaskProcess(list(argv), str(tmp_path), {"PATH": os.environ["PATH"]}, log, grace)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:  # never leave a group behind, whatever the test did
        if proc.pid and group_alive(proc.pid):
            signal_group(proc.pid, signal.SIGKILL)
        if proc.popen is not None:
            proc.popen.wait(10)
        proc.log.close()


def drive(proc: TaskProcess, until: Callable[[], bool] | None = None, timeout: float = 20) -> None:
    """The worker's turn in small: wait on the task, pump, tick."""
    done = until or (lambda: proc.done)
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out; log so far: {log_text(proc)}"
        select.select(proc.waitables(), [], [], 0.02)
        proc.pump()
        proc.tick()


def finish(proc: TaskProcess) -> Outcome:
    drive(proc)
    return proc.finish()


def log_text(proc: TaskProcess) -> list[str]:
    return [strip_stamp(line) for line in proc.log.path.read_text().splitlines()]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def sleepers(proc: TaskProcess, count: int) -> list[int]:
    """Wait until the task has ``count`` sleep processes below it; return their pids."""
    deadline = time.monotonic() + 10
    while True:
        kids = [p.pid for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "sleep"]
        if len(kids) == count:
            return kids
        assert time.monotonic() < deadline, f"expected {count} sleep children, saw {kids}"
        time.sleep(0.02)


def test_output_is_logged_line_by_line(spawn: Spawn) -> None:
    proc = spawn(
        sys.executable,
        "-u",
        "-c",
        "import sys, time\nprint('one')\nprint('two', file=sys.stderr)\nsys.stdout.write('par')\n"
        "sys.stdout.flush()\ntime.sleep(0.2)\nprint('tial')\nsys.stdout.write('no newline')",
    )
    outcome = finish(proc)
    assert (outcome.returncode, outcome.cause, outcome.description) == (0, None, "exit code 0")
    lines = proc.log.path.read_text().splitlines()
    assert all(STAMP.match(line) for line in lines)
    assert [strip_stamp(line) for line in lines] == ["one", "two", "partial", "no newline"]


def test_output_arrives_while_running(spawn: Spawn) -> None:
    proc = spawn(sys.executable, "-u", "-c", "import time\nprint('first')\ntime.sleep(100)")
    drive(proc, until=lambda: "first" in log_text(proc))
    assert proc.returncode is None
    proc.stop(StopCause.ABORT, "seen enough")
    assert finish(proc).cause == StopCause.ABORT


@pytest.mark.parametrize(
    ("script", "code", "text"),
    [
        ("exit 0", 0, "exit code 0"),
        ("exit 3", 3, "exit code 3"),
        ("echo bye; exit 255", 255, "exit code 255"),
        ("kill -KILL $$", -signal.SIGKILL, "killed by SIGKILL"),
    ],
)
def test_exit_codes(spawn: Spawn, script: str, code: int, text: str) -> None:
    outcome = finish(spawn("bash", "-c", script))
    assert (outcome.returncode, outcome.description, outcome.cause) == (code, text, None)


def test_stop_terminates_the_whole_group(spawn: Spawn) -> None:
    proc = spawn("bash", "-c", "sleep 100 & sleep 100 & wait", grace=5.0)
    kids = sleepers(proc, 2)
    started = time.monotonic()
    proc.stop(StopCause.ABORT, "aborted by bob")
    proc.stop(StopCause.TIMEOUT, "second stop changes nothing")
    outcome = finish(proc)
    assert time.monotonic() - started < 5.0  # SIGTERM was enough
    assert (outcome.returncode, outcome.cause, outcome.detail) == (-signal.SIGTERM, StopCause.ABORT, "aborted by bob")
    assert all(gone(pid) for pid in kids)
    assert not group_alive(proc.pid)
    text = log_text(proc)
    assert sum("stopping (aborted by bob): SIGTERM to the process group" in line for line in text) == 1
    assert not any("SIGKILL" in line and "grace" in line for line in text)


def test_sigterm_ignored_gets_sigkill_after_grace(spawn: Spawn) -> None:
    proc = spawn(
        sys.executable,
        "-u",
        "-c",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready')\ntime.sleep(100)",
        grace=0.5,
    )
    drive(proc, until=lambda: "ready" in log_text(proc))
    started = time.monotonic()
    proc.stop(StopCause.TIMEOUT, "timeout after 1s")
    outcome = finish(proc)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5.0
    assert (outcome.returncode, outcome.cause) == (-signal.SIGKILL, StopCause.TIMEOUT)
    assert "[fleet] grace period over: SIGKILL to the process group" in log_text(proc)


def test_children_left_behind_are_killed_and_exit_code_kept(spawn: Spawn) -> None:
    proc = spawn("bash", "-c", "sleep 100 & echo $!; exit 3", grace=5.0)
    started = time.monotonic()
    outcome = finish(proc)
    assert time.monotonic() - started < 5.0
    assert (outcome.returncode, outcome.cause, outcome.description) == (3, None, "exit code 3")
    text = log_text(proc)
    assert gone(int(text[0]))
    assert "[fleet] main process ended (exit code 3); stopping the processes it left" in text


def test_child_ignoring_sigterm_is_killed_after_grace(spawn: Spawn) -> None:
    # Popen returns once sleep runs, with SIGTERM already ignored: no race with the stop
    proc = spawn(
        sys.executable,
        "-c",
        "import signal, subprocess\n"
        "ignore = lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print(subprocess.Popen(['sleep', '100'], preexec_fn=ignore).pid)",
        grace=0.5,
    )
    outcome = finish(proc)
    assert outcome.returncode == 0
    text = log_text(proc)
    assert gone(int(text[0]))
    assert "[fleet] grace period over: SIGKILL to the process group" in text


def test_start_failure_raises(tmp_path: Path) -> None:
    proc = TaskProcess(["/nonexistent/program"], str(tmp_path), {}, TaskLog(tmp_path / "t.log", 1 << 20), 0.5)
    with pytest.raises(FileNotFoundError):
        proc.start()
    outcome = proc.finish()
    assert (outcome.returncode, outcome.description) == (None, "never started")
    proc.log.close()


def test_stop_before_start_signals_nobody(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom pathlib import Path\nfrom fleet.core.tasklog import TaskLog\n"
        "from fleet.core.outcome import StopCause\nfrom fleet.worker.process import TaskProcess\n"
        "p = TaskProcess(['true'], '.', {}, TaskLog(Path(sys.argv[1]), 1 << 20), 0.5)\n"
        "p.stop(StopCause.ABORT, 'never started')\np.kill_now()\nprint('survived')\n"
    )
    # its own session: whatever it signals, it cannot reach pytest
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "t.log")],
        start_new_session=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "survived")


def test_a_contained_task_runs_no_python_between_fork_and_exec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's plain task is spawned with no ``preexec_fn``, so subprocess
    uses ``vfork`` (a full fork of the worker and Python code in the child
    cost several times more per task); it is still born in its attempt's
    cgroup, where fleet may make one, and carries the attempt's marker."""
    passed: list[object] = []
    real = subprocess.Popen

    def spy(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        passed.append(kwargs.get("preexec_fn"))
        return real(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    attempt = Attempt(tmp_path, "t1", 1)
    env = {"PATH": os.environ["PATH"], **dict([attempt.marker])}
    log = TaskLog(tmp_path / "t.log", 1 << 20)
    script = 'cat /proc/self/cgroup; echo "marker=$FLEET_ATTEMPT"'
    proc = TaskProcess(["sh", "-c", script], str(tmp_path), env, log, 5.0, contain=True, attempt=attempt, cgroup=True)
    proc.start()
    outcome = finish(proc)
    log.close()
    assert outcome.returncode == 0 and passed == [None]
    text = log_text(proc)
    assert f"marker={attempt.token}" in text
    cgroup = attempt.cgroup
    if proc.in_cgroup:  # root with cgroup v2 here; elsewhere the marker alone finds it
        assert cgroup is not None and f"0::/{cgroup.relative_to(cgroup2_mount() or Path('/'))}" in text
        assert not cgroup.exists()  # removed once the task was over


# a "worker" that forks a preparing step which runs long (as an environment build does), as the
# worker's runner does, with the attempt's marker in the task's environment and no cgroup
FORKING_WORKER = """
import os, sys, time
from pathlib import Path
from fleet.core.contain import Attempt
from fleet.core.tasklog import TaskLog
from fleet.worker.process import TaskProcess
home = Path(sys.argv[1])
attempt = Attempt(home, "t1", 1)
env = dict(os.environ, **dict([attempt.marker]))
log = TaskLog(home / "t.log", 1 << 20)
proc = TaskProcess(["x"], str(home), env, log, 5.0, contain=True, attempt=attempt, become=lambda: time.sleep(300) or 0)
proc.start()
print(proc.pid, flush=True)
time.sleep(300)
"""


def test_a_forked_preparing_step_dies_with_its_killed_worker(tmp_path: Path) -> None:
    """Until its ``exec``, the kernel shows a forked preparing step with the
    worker's own environment (the attempt's marker arrives with the exec), so
    without a cgroup nothing but its tie to the worker (``PR_SET_PDEATHSIG``)
    ends it when the worker is killed."""
    worker = subprocess.Popen([sys.executable, "-c", FORKING_WORKER, str(tmp_path)], stdout=subprocess.PIPE)
    assert worker.stdout is not None
    child = int(worker.stdout.readline())
    worker.stdout.close()
    assert not gone(child)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    deadline = time.monotonic() + 10
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gone(child)
