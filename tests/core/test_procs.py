"""Process identity (``fleet.core.procs``) and containment of a task attempt
(``fleet.core.contain``), on real processes.

Identity: the kernel's start time in clock ticks plus the boot id, so a
stepped wall clock changes nothing.  The clock itself cannot be stepped
safely on a shared machine; what a step changes is the boot time the kernel
derives from the wall clock (``/proc/stat`` ``btime``, psutil's
``boot_time``) and ``time.time()``, so those are shifted here, in-process.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from fleet.core.contain import MARKER, Attempt, cgroup2_mount
from fleet.core.procs import Identity, boot_id, identity, is_same_process, pidfile_alive, write_pidfile
from tests.conftest import Fleet, alive

BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])


def test_identity_is_the_kernels_start_in_ticks_and_the_boot_id() -> None:
    me = os.getpid()
    mine = identity(me)
    assert mine == Identity(_ticks(me), BOOT_ID)
    assert is_same_process(me, mine.ticks, mine.boot)
    assert not is_same_process(me, mine.ticks - 1, mine.boot)  # a pid reused by a later process
    assert not is_same_process(me, mine.ticks, "0" * 8 + BOOT_ID[8:])  # the same pid and ticks in another boot
    assert not is_same_process(None, mine.ticks, mine.boot)
    assert not is_same_process(me, None, mine.boot)
    child = subprocess.Popen(["true"])
    child.wait()
    assert identity(child.pid) is None


def test_a_zombie_is_not_the_process_it_was() -> None:
    child = subprocess.Popen(["true"])
    started = identity(child.pid)
    assert started is not None
    deadline = time.monotonic() + 10
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not is_same_process(child.pid, started.ticks, started.boot)
    child.wait()


def test_identity_reads_a_command_name_with_spaces_and_parentheses() -> None:
    code = "import ctypes, time; ctypes.CDLL(None).prctl(15, b'a) b (c) 1 2', 0, 0, 0); print(1, flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline()
        proc.stdout.close()
        assert "a) b (c) 1 2" in Path(f"/proc/{proc.pid}/stat").read_text()
        found = identity(proc.pid)
        tick = os.sysconf("SC_CLK_TCK")
        since_boot = psutil.Process(proc.pid).create_time() - psutil.boot_time()
        assert found is not None and abs(found.ticks - since_boot * tick) <= 1
        assert is_same_process(proc.pid, found.ticks, found.boot)
    finally:
        proc.kill()
        proc.wait()


def test_identity_does_not_move_when_the_clock_is_stepped(monkeypatch: pytest.MonkeyPatch) -> None:
    me = os.getpid()
    before = identity(me)
    assert before is not None
    real_boot, real_time = psutil.boot_time(), time.time
    # what a 1 s step (NTP, a VM resume) does: the wall clock and the boot time derived from it move
    monkeypatch.setattr(time, "time", lambda: real_time() + 1.0)
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: real_boot + 1.0)
    assert abs(psutil.Process(me).create_time() - (real_boot + 1.0) - before.ticks / os.sysconf("SC_CLK_TCK")) < 0.02
    assert identity(me) == before
    assert is_same_process(me, before.ticks, before.boot)


def test_rows_from_before_the_boot_id_are_compared_by_their_wall_clock_start() -> None:
    """Decision (see fleet.core.procs): an old row (a float ``pid_start``, no boot id)
    is compared the way it was written, so an upgrade neither orphans live
    workers nor adopts a stranger."""
    me = os.getpid()
    old = psutil.Process(me).create_time()
    assert is_same_process(me, old, None)
    assert not is_same_process(me, old - 10, None)


def test_pidfile_holds_the_identity_and_old_ones_still_read(tmp_path: Path) -> None:
    path = tmp_path / "manager.pid"
    write_pidfile(path)
    data = json.loads(path.read_text())
    assert data == {"pid": os.getpid(), "start": _ticks(os.getpid()), "boot": boot_id()}
    assert pidfile_alive(path)
    path.write_text(json.dumps({"pid": os.getpid(), "start": psutil.Process().create_time()}))
    assert pidfile_alive(path)
    path.write_text(json.dumps({"pid": os.getpid(), "start": _ticks(os.getpid()), "boot": "another boot"}))
    assert not pidfile_alive(path)


# -- containment -------------------------------------------------------------------

# A task whose child leaves the process group and the session (setsid) and
# whose grandchild is re-parented away: the shape that escaped before.  Each
# pid is one write (print writes the number and the newline apart, and two
# processes' lines then interleave: "1237512377\n", "\n").
ESCAPER = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(1, b"%d\\n" % os.getpid())
        time.sleep(300)
    os._exit(0)
os.write(1, b"%d\\n" % os.getpid())
time.sleep(300)
"""


def _can_make_cgroups(tmp_path: Path) -> bool:
    attempt = Attempt(tmp_path, "probe", 1)
    made = attempt.create_cgroup()
    attempt.remove()
    return made


@pytest.fixture(params=["cgroup", "marker"])
def contained(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Attempt, subprocess.Popen[bytes]]]:
    """An attempt started the way the worker starts one: in its cgroup (where
    possible) and always with its marker."""
    attempt = Attempt(tmp_path, "task1", 2)
    if request.param == "cgroup" and not _can_make_cgroups(tmp_path):
        pytest.skip("this host lets fleet create no cgroup v2 (not root, or no cgroup2 mount)")
    env = dict(os.environ, **dict([attempt.marker]))
    if request.param == "cgroup":
        env.pop(MARKER)  # the cgroup alone must find them
        assert attempt.create_cgroup()
        with attempt.inside():
            proc = subprocess.Popen([sys.executable, "-c", ESCAPER], env=env, stdout=subprocess.PIPE)
    else:
        proc = subprocess.Popen([sys.executable, "-c", ESCAPER], env=env, stdout=subprocess.PIPE)
    yield attempt, proc
    attempt.end()
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def test_an_attempt_finds_and_kills_a_child_that_called_setsid(
    contained: tuple[Attempt, subprocess.Popen[bytes]],
) -> None:
    attempt, proc = contained
    assert proc.stdout is not None
    pids = {int(proc.stdout.readline()) for _ in range(2)}
    escaped = (pids - {proc.pid}).pop()
    assert os.getsid(escaped) != os.getsid(proc.pid)  # out of the task's session and group
    assert pids <= attempt.members()
    assert os.getpid() not in attempt.members()  # the caller (the worker) is never part of it
    assert attempt.end()
    assert not any(alive(pid) for pid in pids)
    assert attempt.members() == set()
    cgroup = attempt.cgroup
    assert cgroup is None or not cgroup.exists()  # removed once empty


def test_a_worker_is_back_in_its_own_cgroup_after_the_fork(tmp_path: Path) -> None:
    if not _can_make_cgroups(tmp_path):
        pytest.skip("this host lets fleet create no cgroup v2")
    before = Path("/proc/self/cgroup").read_text()
    attempt = Attempt(tmp_path, "task2", 1)
    assert attempt.create_cgroup()
    with attempt.inside():
        proc = subprocess.Popen(["sleep", "30"])
    try:
        assert Path("/proc/self/cgroup").read_text() == before
        assert attempt.members() == {proc.pid}
        mount = cgroup2_mount()
        assert mount is not None and attempt.cgroup is not None
        assert (
            Path(f"/proc/{proc.pid}/cgroup")
            .read_text()
            .endswith("0::/" + str(attempt.cgroup.relative_to(mount)) + "\n")
        )
    finally:
        assert attempt.end()
        proc.wait()


def test_strangers_are_never_members(tmp_path: Path) -> None:
    attempt = Attempt(tmp_path, "task3", 1)
    other = Attempt(tmp_path, "task3", 2)  # the next attempt of the same task
    env = dict(os.environ, **dict([other.marker]))
    proc = subprocess.Popen(["sleep", "30"], env=env)
    try:
        assert attempt.members() == set()
        assert attempt.end()
        assert alive(proc.pid)
        assert other.members() == {proc.pid}
    finally:
        assert other.end()
        proc.wait()


def test_the_task_dies_with_a_worker_killed_in_the_middle_of_the_fork(tmp_path: Path) -> None:
    """``PR_SET_PDEATHSIG``: the child of a worker that is killed gets SIGKILL,
    even one that has not exec'd yet (it checks its parent after the call)."""
    code = (
        "import subprocess, sys, time\n"
        "from fleet.core.contain import die_with_parent\n"
        "p = subprocess.Popen(['sleep', '300'], preexec_fn=die_with_parent())\n"
        "print(p.pid, flush=True); time.sleep(300)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert worker.stdout is not None
    task = int(worker.stdout.readline())
    worker.stdout.close()
    assert alive(task)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    deadline = time.monotonic() + 10
    while alive(task) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(task)


# -- adoption across a manager restart ----------------------------------------------


def _worker_row(fleet: Fleet) -> dict[str, Any]:
    conn = sqlite3.connect(fleet.home / "fleet.db")
    conn.row_factory = sqlite3.Row
    try:
        return dict(conn.execute("SELECT * FROM workers").fetchone())
    finally:
        conn.close()


def _kill_manager(fleet: Fleet) -> None:
    manager = int(fleet.manager_info()["pid"])
    os.kill(manager, signal.SIGKILL)
    fleet.wait_for(lambda: not alive(manager), what="manager gone")


def test_a_restarted_manager_adopts_its_workers_by_kernel_identity(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    fleet.wait_for(lambda: bool(_worker_row(fleet)["pid_boot"]), what="worker registered")
    row = _worker_row(fleet)
    worker = int(row["pid"])
    assert (row["pid_start"], row["pid_boot"]) == (_ticks(worker), BOOT_ID)  # ticks, not a wall-clock time

    _kill_manager(fleet)
    fleet.up("--gpus", "0", "--queue", "q")
    assert _worker_row(fleet)["pid"] == worker  # adopted, not started again
    assert fleet.cli("wait", fleet.submit("q", "true"), "--timeout", "60").returncode == 0

    # A row as fleet wrote it before the boot id (an upgrade with workers running): still adopted.
    _kill_manager(fleet)
    conn = sqlite3.connect(fleet.home / "fleet.db")
    with conn:
        conn.execute("UPDATE workers SET pid_start = ?, pid_boot = NULL", (psutil.Process(worker).create_time(),))
    conn.close()
    fleet.up("--gpus", "0", "--queue", "q")
    assert _worker_row(fleet)["pid"] == worker
    assert alive(worker)
    assert fleet.cli("wait", fleet.submit("q", "true"), "--timeout", "60").returncode == 0
