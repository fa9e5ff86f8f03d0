"""One task's process group: spawn, stream output, stop, reap.

The task runs in a new session (``setsid``), so it is the leader of its own
process group; training jobs spawn grandchildren (data loaders, torchrun), so
a stop always signals the whole group, never one pid.  Timed moves (SIGKILL
after the grace period) happen in :meth:`TaskProcess.tick`, called on every
turn of the worker loop, not from timers.

A task is over when its main process has exited *and* its group is empty:
children left behind by the main process get SIGTERM, then SIGKILL after the
grace period.

A process that left the group (double fork and ``setsid``: a daemon) is
still contained when ``contain`` is set, as the worker sets it: the worker is
a child subreaper, so such orphans re-parent to it, and a worker runs one
task at a time, so every descendant of the worker is the task's.  Once the
group is gone (the main process ended, or was stopped for an abort or a
timeout) those strays get SIGKILL at once (they already outlived their
group's grace) and the task is over only when none is left.  ``fleetctl
exec`` runs a task inside the CLI and leaves ``contain`` off.

With an ``attempt`` (:mod:`fleet.core.contain`), as the worker gives, the task is
also born in its own cgroup (where ``cgroup`` is on and fleet may create one;
the worker steps into it for the ``vfork``), and carries the attempt's
marker; what is left of the attempt
(cgroup members, processes carrying its marker) counts as strays too, and
the cgroup is removed when the task is over.  That is what lets whoever finds
the worker dead kill the task without knowing its pid.

Checking that a task is over costs no scan of ``/proc`` in the common case
(the drain rate of short tasks depends on it).  While the worker lives,
every process of its task is its descendant: nothing a process does
(``setsid``, double forks) takes it out of that tree, since orphans
re-parent to the worker, a subreaper.  So the worker reaps its exited
children and asks the kernel whether it has any child left (``waitid``):
none means nothing of the task lives, neither strays nor marked processes.
A task born in its cgroup has every process in that cgroup, so
``cgroup.procs`` replaces the scan of every process's environment for the
marker; the scans stay for a task not in a cgroup whose worker still has
children, and for whoever ends an attempt after its worker died
(:meth:`~fleet.core.contain.Attempt.end`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

import psutil

from fleet.core.contain import Attempt, die_with_parent
from fleet.core.home import TASK_UMASK
from fleet.core.models import ExitUsage
from fleet.core.outcome import Outcome, StopCause
from fleet.core.procs import Identity, describe_exit, group_alive, identity, reap_orphans, signal_group
from fleet.core.tasklog import TaskLog
from fleet.worker.runas import RunAs

log = logging.getLogger(__name__)

EXIT_CHILD_FAILED = 127  # a forked child that could not become its task
MAX_FD = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536


class TaskProcess:
    def __init__(
        self,
        argv: list[str],
        cwd: str,
        env: dict[str, str],
        task_log: TaskLog,
        grace: float,
        *,
        contain: bool = False,
        attempt: Attempt | None = None,
        cgroup: bool = False,
        run_as: RunAs | None = None,
        become: Callable[[], int] | None = None,
    ) -> None:
        self.contain = contain
        self.become = become  # run in a fork of this process instead of exec'ing argv (see _fork)
        self.attempt = attempt
        self.cgroup = cgroup
        self.run_as = run_as
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.log = task_log
        self.grace = grace
        self.popen: Child | None = None
        self.pid = 0
        self.started: Identity | None = None
        self.returncode: int | None = None
        self.cause: StopCause | None = None
        self.detail = ""
        self._kill_at: float | None = None
        self._fd: int | None = None
        self._pidfd: int | None = None
        self.usage: ExitUsage | None = None
        self.in_cgroup = False  # born in the attempt's cgroup: its members are exactly the cgroup's

    def start(self) -> None:
        """Spawn the command; ``OSError`` (no such program, bad folder) propagates."""
        attempt = self.attempt
        cgroup = attempt is not None and self.cgroup and attempt.create_cgroup()
        with attempt.inside() if attempt is not None and cgroup else contextlib.nullcontext(False) as entered:
            self.in_cgroup = entered
            if self.become is not None:
                self.popen = self._fork(self.become)
            else:
                self.popen = self._exec()
        self.pid = self.popen.pid
        self.started = identity(self.pid)
        assert self.popen.stdout is not None
        self._fd = self.popen.stdout.fileno()
        os.set_blocking(self._fd, False)
        try:  # readable when the main process exits (Linux 5.3+), so the loop never polls for it
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def _exec(self) -> subprocess.Popen[bytes]:
        """The command, started the usual way (``vfork`` and ``exec`` where
        nothing runs in the child, as for a worker's plain task)."""
        attempt = self.attempt
        return subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            umask=TASK_UMASK,
            preexec_fn=die_with_parent() if attempt is not None and self.run_as is not None else None,
            **_identity(self.run_as),  # preexec_fn runs after the switch
        )

    def _fork(self, become: Callable[[], int]) -> Forked:
        """Run ``become`` in a fork of this process, set up as ``_exec`` sets up
        a command (its own session, the log pipe as stdout and stderr, no
        stdin, the task's folder, environment and umask, no other open file);
        it ``exec``s the task, or exits with the code it returns.

        What it saves: a prepared task's step (:func:`fleet.worker.prepare.become`)
        runs with every module it needs already imported, not in a new
        interpreter that imports them again (the start of a task whose code and
        environment are cached: see README, Performance).  Only a process with
        no other thread forks so (:func:`fleet.worker.launch.plan_launch`)."""
        # until its exec the kernel shows the child with this process's own environment,
        # so the attempt's marker cannot find it: it dies with this process instead
        tie = die_with_parent() if self.attempt is not None else None
        read, write = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY)
        for stream in (sys.stdout, sys.stderr):  # nothing buffered here may reach the task's log twice
            stream.flush()
        try:
            pid = os.fork()
        except OSError:
            for fd in (read, write, null):
                os.close(fd)
            raise
        if pid == 0:  # pragma: no cover - the child; it never returns into the caller's code
            code = EXIT_CHILD_FAILED
            try:
                if tie is not None:
                    tie()
                os.setsid()
                for fd, target in ((null, 0), (write, 1), (write, 2)):
                    os.dup2(fd, target)
                _void_inherited(null)
                os.umask(TASK_UMASK)
                os.chdir(self.cwd)
                os.environ.clear()
                os.environ.update(self.env)
                _as_a_new_process()
                code = become()
            except BaseException as exc:
                with contextlib.suppress(BaseException):
                    os.write(2, f"could not start the task: {exc}\n".encode(errors="replace"))
            finally:
                os._exit(code)
        os.close(write)
        os.close(null)
        return Forked(pid, os.fdopen(read, "rb", buffering=0))

    def waitables(self) -> list[int]:
        """File descriptors that become readable when something happens to the task."""
        pidfd = self._pidfd if self.returncode is None else None  # stays readable once exited
        return [fd for fd in (self._fd, pidfd) if fd is not None]

    @property
    def exit_is_signalled(self) -> bool:
        """True when the loop can wait on the process's exit instead of polling for it."""
        return self._pidfd is not None

    def pump(self) -> None:
        """Read what the task has written so far (never blocks)."""
        while self._fd is not None:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            if not data:
                self._close_pipe()
                return
            self.log.feed(data)

    def _close_pipe(self) -> None:
        if self.popen is not None and self.popen.stdout is not None:
            self.popen.stdout.close()
        self._fd = None

    def stop(self, cause: StopCause, detail: str) -> None:
        """SIGTERM to the group now, SIGKILL after the grace period (see tick)."""
        if self.popen is None:
            return
        if self.cause is None:
            self.cause = cause
            self.detail = detail
        if self._kill_at is None:
            self._kill_at = time.monotonic() + self.grace
            self.log.note(f"stopping ({detail}): SIGTERM to the process group, SIGKILL after {self.grace:g}s")
            signal_group(self.pid, signal.SIGTERM)

    def kill_now(self) -> None:
        if self.popen is not None:
            signal_group(self.pid, signal.SIGKILL)

    def tick(self) -> None:
        """Reap the main process and enforce the grace period."""
        if self.popen is None:
            return
        if self.returncode is None:
            reap_orphans({self.pid})
            rc = self._reap()
            if rc is not None:
                self.returncode = rc
                if group_alive(self.pid) and self._kill_at is None:
                    self.log.note(f"main process ended ({describe_exit(rc)}); stopping the processes it left")
                    self._kill_at = time.monotonic() + self.grace
                    signal_group(self.pid, signal.SIGTERM)
        if self.returncode is not None:
            reap_orphans(set())
        if self._kill_at is not None and time.monotonic() >= self._kill_at and group_alive(self.pid):
            self.log.note("grace period over: SIGKILL to the process group")
            signal_group(self.pid, signal.SIGKILL)
            self._kill_at = time.monotonic() + self.grace
        if self.returncode is not None and not group_alive(self.pid):
            self._kill_strays()

    def _reap(self) -> int | None:
        """The main process's exit code once it ended, else None.  Reaped with
        ``wait4`` so the kernel's figures for its whole life (peak RSS, CPU
        time, its waited-for children included) are kept in :attr:`usage`:
        a task shorter than the sampler's tick still has them."""
        assert self.popen is not None
        if self.popen.returncode is not None:
            return self.popen.returncode
        try:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: Popen knows the code, or says 0
            return self.popen.poll()
        if pid == 0:
            return None
        self.usage = ExitUsage(peak_rss_mb=ru.ru_maxrss / 1024, cpu_s=ru.ru_utime + ru.ru_stime)
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        return self.popen.returncode

    def _strays(self) -> list[psutil.Process]:
        """Live descendants of this (worker) process: with ``contain``, what
        the task left outside its group (see the module docstring)."""
        if not self.contain or not _has_children():
            return []
        try:
            found = psutil.Process().children(recursive=True)
        except psutil.Error:
            return []
        live = []
        for proc in found:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    live.append(proc)
            except psutil.Error:
                continue
        return live

    def _left(self) -> set[int]:
        """What is left of the attempt outside the worker's descendants (see
        the module docstring): nothing when the worker has no child at all."""
        if self.attempt is None or not _has_children():
            return set()
        return self.attempt.cgroup_members() if self.in_cgroup else self.attempt.members()

    def _kill_strays(self) -> None:
        strays = self._strays()
        left = self._left() - {p.pid for p in strays}
        if not strays and not left:
            return
        pids = ", ".join(str(pid) for pid in sorted({p.pid for p in strays} | left))
        self.log.note(
            f"killing {len(strays) + len(left)} process(es) the task left outside its process group: pid {pids}"
        )
        for proc in strays:
            try:
                proc.kill()
            except psutil.Error:
                continue
        if left and self.attempt is not None:
            self.attempt.kill()
        psutil.wait_procs(strays, timeout=1.0)
        reap_orphans(set())

    def next_deadline(self) -> float | None:
        """Monotonic time of the next timed move, for the loop's wait."""
        return self._kill_at

    @property
    def done(self) -> bool:
        return self.returncode is not None and not group_alive(self.pid) and not self._strays() and not self._left()

    def finish(self) -> Outcome:
        """Read the last output and close the log's partial line."""
        self.pump()
        self._close_pipe()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self.log.flush_partial()
        if self.attempt is not None:
            self.attempt.remove()
        return Outcome(self.returncode, self.cause, self.detail, self.usage)


class Child(Protocol):
    """What a task's runner reads of its main process: a ``Popen``, or :class:`Forked`."""

    pid: int
    returncode: int | None
    stdout: IO[bytes] | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Forked:
    """A child forked by :meth:`TaskProcess._fork`, read as a ``Popen`` is."""

    def __init__(self, pid: int, stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdout: IO[bytes] | None = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its code is lost (Popen says 0 too)
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.005)
        return code


def _void_inherited(null: int) -> None:
    """In a forked child: point every descriptor above stderr at ``null``
    (close-on-exec), so none of the worker's files (its store, its wake-up
    socket, its last task's pipe) is used here or reaches the task, and no
    number the worker's objects still name is handed to another file."""
    try:
        found = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # pragma: no cover - Linux has /proc
        os.closerange(3, MAX_FD)
        return
    for fd in found:
        if fd > 2 and fd != null:
            with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
                os.dup2(null, fd, inheritable=False)
    os.set_inheritable(null, False)


def _as_a_new_process() -> None:
    """In a forked child that is to behave as a new interpreter would: default
    signal handlers (the worker only counts SIGTERM and SIGINT), no logging
    handlers of the worker's, and the temporary folder of the task's environment."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logging.root.handlers.clear()
    logging.root.setLevel(logging.WARNING)
    tempfile.tempdir = None


def _has_children() -> bool:
    """Whether this process has any child, live or exited and not yet reaped
    (a ``waitid`` that neither waits nor reaps: no scan of ``/proc``)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _identity(who: RunAs | None) -> dict[str, Any]:
    """Popen's arguments that make the child ``who`` (groups, then gid, then uid)."""
    if who is None:
        return {}
    return {"user": who.uid, "group": who.gid, "extra_groups": list(who.groups)}
