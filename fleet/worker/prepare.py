"""Prepare a task, then become it (:func:`become`).

The worker runs this instead of the task's command when the task needs
preparation (a repository, requirements or a setup script; see
:mod:`fleet.worker.launch`): in a fork of itself, which has every module
imported already, or, from a process with other threads, as ``python -m
fleet.worker.prepare --home H --task ID``.  It is the leader of the task's
process group, so abort, timeout and log capture cover preparation exactly
as they cover the task.  Its stdout *is* the task log; fleet's own lines
start with ``[prepare]``.

Steps: take the task and config from the worker (in a fork, its own; else
the file it handed over, :mod:`fleet.worker.prepare_spec`; the store and the
config file only when there is no such file), get the code (a linked
worktree of the vcs cache's mirror in ``$FLEET_HOME/work/<task-id>/``: two
git processes when the mirror holds the commit, the mirror's objects, the
task's own folder; see :mod:`fleet.worker.code`), run the setup
script (``bash <file>`` in the task's folder, before the environment is built,
as the issue orders it: after the checkout, so the script can see the code),
build or reuse the environment, then ``exec`` the command with the
environment's ``bin`` first on PATH and ``VIRTUAL_ENV`` set.

It starts the task as soon as it can: it imports no store (sqlite-utils), no
HOCON parser (pyhocon), no psutil, pydantic or docker on the way to a task
whose environment is cached; ``env_cached`` and the frozen packages travel in
the launch record and the runner writes them on the task when the attempt
ends.  It opens no store at all.  A failure exits 1 with a one-line
reason as the last line of output (the worker puts the log's last lines
into ``status_reason``).

A task of another user (``fleet.run_as_submitter``, :mod:`fleet.worker.runas`):
this process starts as root, reads its hand-over, opens its launch record and
makes the user's folders (:mod:`fleet.worker.userarea`), then gives up root
for good before the first step: every step above, and the task, run as the
user, in the user's own folders and caches (:func:`give_up_root`).

How it went reaches the worker as a typed record (:mod:`fleet.worker.launch_outcome`:
the phase reached, and for a failure its kind, e.g. no disk space for the
environment), written just before the ``exec`` or the exit; the worker acts
on the kind, never on this process's exit code or its output.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.core.config import Config, load_config
from fleet.core.errors import FleetError
from fleet.core.home import TASK_UMASK, Home
from fleet.core.models import Task
from fleet.worker.code import VcsCache, checkout
from fleet.worker.envs import EnvBuilder, EnvBuildError, Log, choose_builder
from fleet.worker.envs.builder import Interpreter, Requirements
from fleet.worker.envs.cache import Lease, VenvCache, cache_key, stamp_info
from fleet.worker.envs.python import PythonFinder
from fleet.worker.envs.requirements import gather
from fleet.worker.envs.settings import build_settings, builds_dir, cache_root, installer_env_digest, tool_environment
from fleet.worker.launch_outcome import (
    Failure,
    LaunchedEnvironment,
    LaunchOutcome,
    Phase,
    Report,
    outcome_path,
)
from fleet.worker.prepare_spec import read_spec
from fleet.worker.runas import RunAs, run_as
from fleet.worker.userarea import ensure_area, for_user

log = logging.getLogger(__name__)

EXIT_PREPARE_FAILED = 1
NO_SPACE = "waiting for disk space"  # how such a task's reason starts (words for people; nothing matches on it)
EXIT_CANNOT_EXEC = 127
TASK_DIR = re.compile(r"[0-9a-f]{32}")


class PrepareError(FleetError):
    """A step of preparation failed; the message is the task's reason."""


class NoSpaceForEnvironment(PrepareError):
    """Free space under the environments folder is below ``free_space_threshold_gb``
    and the task needs an environment that is not cached: none is built."""


def check_space(folder: Path, threshold_gb: float) -> None:
    """The one place that reads free space for environment builds (tests point the
    threshold above the real free space)."""
    if threshold_gb <= 0:
        return
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free / 1e9
    if free < threshold_gb:
        raise NoSpaceForEnvironment(
            f"{NO_SPACE}: {free:.1f} GB free under {folder}, below "
            f"agent.venvs_cache.free_space_threshold_gb={threshold_gb:g}; no new environment is built"
        )


def needs_preparation(task: Task) -> bool:
    """A repository, requirements or a setup script; else the command runs directly."""
    script = task.script
    reqs = task.requirements
    return bool(script.repo or (script.setup_script or "").strip() or reqs.packages or reqs.file.strip())


@dataclass
class Environment:
    builder: EnvBuilder
    path: Path
    cached: bool
    frozen: list[str]
    python: str
    lease: Lease | None = None


@dataclass
class Prepared:
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    environment: Environment | None = None
    seconds: float = 0.0


class Preparer:
    """The preparation steps, shared by the worker's path, ``execute`` and ``build``."""

    def __init__(self, home: Home, config: Config, out: Log, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.config = config
        self.out = out
        self.env = dict(os.environ if env is None else env)
        self.phase = Phase.CODE  # the step under way, for the launch record
        self.linked = False  # a worktree of the vcs cache's mirror (fleet.worker.code): the worker's own tasks
        # One-off builds held by a lock for as long as the task runs, and pruned by it, not by the
        # store (a task of another user: it cannot open the store; see hold_build).
        self.hold_builds = False
        self.build_lock: int | None = None

    # -- steps -------------------------------------------------------------------
    def code(self, task: Task, dest: Path) -> tuple[Path | None, Path]:
        """(checkout root or None, folder the task runs in)."""
        script = task.script
        if not script.repo:
            folder = Path(script.working_dir)
            if not folder.is_dir():
                raise PrepareError(f"working directory {folder} does not exist")
            return None, folder
        agent = self.config.agent
        cache = VcsCache.from_config(agent, self.home) if agent.vcs_cache.enabled else None
        git_env = tool_environment(self.env, task.env, agent.enable_task_env)
        if dest.exists() and any(dest.iterdir()):  # an earlier attempt's (an empty folder made for it stays)
            shutil.rmtree(dest)
        try:
            folder = Path(checkout(script, dest, agent, self.out.note, cache=cache, env=git_env, linked=self.linked))
        except FleetError as exc:
            raise PrepareError(exc.message) from None
        return dest, folder

    def setup_script(self, task: Task, folder: Path) -> None:
        text = task.script.setup_script or ""
        if not text.strip():
            return
        self.home.work.mkdir(parents=True, exist_ok=True)
        path = self.home.work / f"{task.id}.setup.sh"
        path.write_text(text if text.endswith("\n") else text + "\n")
        self.out.note("running the setup script")
        sys.stdout.flush()
        try:
            rc = subprocess.call(["bash", str(path)], cwd=folder, env=self.env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise PrepareError(f"setup script failed: cannot run bash: {exc.strerror or exc}") from None
        if rc != 0:
            from fleet.core.procs import describe_exit  # psutil: off the path of tasks without a setup script

            raise PrepareError(f"setup script failed ({describe_exit(rc)})")

    def environment(self, task: Task, code_root: Path | None, target: Path | None = None) -> Environment | None:
        """Build or reuse the task's environment; None when it has no requirements and no code."""
        agent = self.config.agent
        requirements = gather(task.requirements, code_root, agent.package_manager.type)
        if requirements is None:
            return None
        builder = choose_builder(agent.package_manager.type, requirements, self.out)
        finder = PythonFinder(self.home.root / "cache" / "pythons.json", self.env)
        wanted = task.requirements.python_version
        python = finder.find(wanted, agent.python_binary, self.out.note)
        if not os.access(python.executable, os.X_OK):  # a task of another user, fleet's Python under /root
            raise EnvBuildError(
                f"Python {python.executable} cannot be run by this task's user (uid {os.getuid()}): "
                "set agent.python_binary to an interpreter every submitter can run"
            )
        settings = build_settings(self.home, self.config, self.env, task.env)

        def build(path: Path) -> dict[str, Any]:
            count = len(requirements.lines) if requirements.project is None else "poetry.lock"
            self.out.note(
                f"building a {builder.name} environment (Python {python.version}) from {requirements.source}"
                f" ({count} requirement(s)) in {path}"
            )
            started = time.monotonic()
            path.parent.mkdir(parents=True, exist_ok=True)
            builder.create(path, python, settings, self.out)
            builder.install(path, requirements, settings, self.out)
            frozen = builder.freeze(path, settings, self.out)
            self.out.note(f"environment built in {time.monotonic() - started:.1f}s ({len(frozen)} package(s))")
            return stamp_info(frozen=frozen, manager=builder.name, python=python.version, source=requirements.source)

        if target is not None:
            info = build(target)
            return Environment(builder, target, False, info["frozen"], python.version)
        cache = VenvCache(
            cache_root(self.home, agent), agent.venvs_cache.max_entries, agent.venvs_cache.free_space_threshold_gb
        )
        if cache.enabled and requirements.cacheable:
            material = self._key_material(task, builder, python, requirements, settings.index_url)
            lease = cache.acquire(cache_key(material), build, self.out)
            if lease is None:  # a cache miss and no room even after evicting what is not in use
                check_space(cache.root, agent.venvs_cache.free_space_threshold_gb)
            if lease is not None:
                if lease.cached:
                    self.out.note(
                        f"reusing cached environment {lease.key[:12]} ({builder.name}, Python {python.version})"
                    )
                return Environment(
                    builder, lease.path, lease.cached, list(lease.info.get("frozen", [])), python.version, lease
                )
        elif not requirements.cacheable:
            self.out.note("requirements name local paths; building an environment for this task only")
        path = builds_dir(self.home, agent) / task.id
        if self.hold_builds:
            self.build_lock = hold_build(path.parent, task.id)
        check_space(path.parent, agent.venvs_cache.free_space_threshold_gb)
        shutil.rmtree(path, ignore_errors=True)
        info = build(path)
        return Environment(builder, path, False, info["frozen"], python.version)

    def _key_material(
        self, task: Task, builder: EnvBuilder, python: Interpreter, requirements: Requirements, index: str
    ) -> dict[str, Any]:
        pm = self.config.agent.package_manager
        return {
            "manager": builder.name,
            "python": [python.version, python.executable],
            "requirements": list(requirements.lines),
            "project": requirements.digest,
            "indexes": [index, *pm.extra_index_url],
            "docker": task.docker.image if task.docker is not None else "",
            "options": [
                pm.system_site_packages,
                pm.force_upgrade,
                list(pm.pip_version),
                list(pm.conda_channels),
                self.config.agent.cuda_version,  # picks the PyTorch wheel variant (uv --torch-backend)
            ],
            "extra": [
                list(pm.priority_packages),
                list(pm.priority_optional_packages),
                list(pm.post_packages),
                list(pm.post_optional_packages),
            ],
            "task_env": installer_env_digest(task.env, self.config.agent.enable_task_env),
        }

    # -- all of it -----------------------------------------------------------------
    def prepare(self, task: Task, work: Path | None = None, env_target: Path | None = None) -> Prepared:
        started = time.monotonic()
        self.phase = Phase.CODE
        root, folder = self.code(task, work or self.home.work / task.id)
        self.phase = Phase.SETUP
        self.setup_script(task, folder)
        self.phase = Phase.ENVIRONMENT
        try:
            environment = self.environment(task, root, env_target)
        except EnvBuildError as exc:
            raise PrepareError(exc.message) from None
        env = dict(self.env)
        if environment is not None:
            env.update(environment.builder.activation(environment.path))
            env["PATH"] = f"{environment.builder.bin_dir(environment.path)}{os.pathsep}{env.get('PATH', '')}"
            env.pop("PYTHONHOME", None)
        self.phase = Phase.TASK
        return Prepared(list(task.script.command), folder, env, environment, time.monotonic() - started)


def one_off_builds(folder: Path, current: str) -> list[Path]:
    """The one-off environments (``<venvs_dir>/<task-id>``) under ``folder``,
    but ``current``'s.  The worker removes those of tasks no longer running
    before it launches a prepared task (:meth:`fleet.worker.runner.TaskRunner`):
    it has the store open, and this step opens none (in a fork of the worker,
    SQLite's per-process state would not hold)."""
    if not folder.is_dir():
        return []
    return [entry for entry in folder.iterdir() if entry.name != current and TASK_DIR.fullmatch(entry.name)]


def hold_build(folder: Path, task_id: str) -> int:
    """Hold ``<folder>/.locks/<task id>`` shared (before the build: a build under
    way is never pruned); the descriptor is kept across ``exec``, so the lock is
    held for as long as the task runs."""
    locks = folder / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / task_id, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def prune_unheld_builds(folder: Path, current: str) -> None:
    """Remove the one-off environments whose lock nobody holds (their tasks ended):
    :func:`prune_one_off_builds` without the store, for a task that runs as its submitter."""
    locks = folder / ".locks"
    for entry in folder.iterdir():
        if entry.name == current or not TASK_DIR.fullmatch(entry.name):
            continue
        fd = os.open(locks / entry.name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        else:
            shutil.rmtree(entry, ignore_errors=True)
            (locks / entry.name).unlink(missing_ok=True)
        finally:
            os.close(fd)


def preload() -> None:
    """Import now what preparation may import later: once it has given up root,
    fleet's own files may be out of its reach (a virtualenv under ``/root``)."""
    import importlib

    import fleet.core.procs  # noqa: F401  (psutil: a failed setup script's exit)
    from fleet.worker.envs.uv import uv_binary

    for name in ("tomllib", "tomli"):  # a pyproject.toml's requirements (tomli before Python 3.11)
        try:
            importlib.import_module(name)
            break
        except ImportError:
            continue

    uv_binary()  # the uv package and what it reads to find its binary


def give_up_root(home: Home, config: Config, who: RunAs) -> tuple[Home, Config]:
    """Become ``who`` for good (see :mod:`fleet.worker.runas`): their folders made
    first, as root; return their home and the config for their tasks."""
    area = ensure_area(home, config, who)
    preload()
    who.become()
    os.chdir(area.root)
    return area.home, for_user(config)


def launched(environment: Environment | None) -> LaunchedEnvironment | None:
    """What the runner records on the task (env_cached, the frozen packages)."""
    if environment is None:
        return None
    return LaunchedEnvironment(environment.cached, environment.frozen, environment.builder.name, environment.python)


def load(home: Home, spec: str | None, config_file: str | None, task_id: str) -> tuple[Task, Config]:
    """The task and config the worker handed over (:mod:`fleet.worker.prepare_spec`);
    without that file (an older worker, a test), the store and the config file."""
    if spec:
        try:
            return read_spec(Path(spec))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("prepare spec %s unreadable (%s); loading the task from the store", spec, exc)
    from fleet.store import open_store

    config = load_config(config_file)
    store = open_store(home, config.fleet.store.url)
    try:
        return store.get_task(task_id), config
    finally:
        store.close()


USAGE = "--home H --task ID [--spec FILE] [--config FILE]"


def parse_args(argv: list[str]) -> dict[str, str]:
    """``--name value`` pairs (the worker writes them; argparse and its gettext
    would cost milliseconds on every prepared task's start)."""
    known, found = ("--home", "--task", "--spec", "--config"), {}
    rest = list(argv)
    while rest:
        name = rest.pop(0)
        if name not in known or not rest:
            raise ValueError(f"unexpected argument {name!r}" if name not in known else f"{name} needs a value")
        found[name[2:]] = rest.pop(0)
    missing = [n for n in ("home", "task") if n not in found]
    if missing:
        raise ValueError(f"missing --{missing[0]}")
    return found


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"usage: python -m fleet.worker.prepare {USAGE}\n{exc}", file=sys.stderr)
        return 2
    home = Home(Path(args["home"]))
    try:
        task, config = load(home, args.get("spec"), args.get("config"), args["task"])
    except FleetError as exc:
        print(exc.message, flush=True)
        return EXIT_PREPARE_FAILED
    except OSError as exc:
        print(f"preparation failed: {exc}", flush=True)
        return EXIT_PREPARE_FAILED
    return become(home, task, config)


def become(home: Home, task: Task, config: Config) -> int:
    """Prepare ``task``, then ``exec`` its command in this process.  Returns
    (an exit code) only when that failed, after the launch record and a line
    saying why.  Run by ``python -m fleet.worker.prepare``, or in a fork of
    the worker (:mod:`fleet.worker.launch`), which has every module imported
    (never for a task run as its submitter: this step gives up root first)."""
    out = Log(lambda text: print(text, flush=True))
    report = Report(outcome_path(home.root, task.id, task.attempt))
    preparer: Preparer | None = None

    def failed(message: str, exc: BaseException | None = None, failure: Failure | None = None) -> int:
        print(message, flush=True)
        phase = preparer.phase if preparer is not None else Phase.START
        report.write(LaunchOutcome.failed(phase, message, exc, failure))
        return EXIT_PREPARE_FAILED

    try:
        who = run_as(config, task.user)
        if who is not None:  # a task of another user: nothing of it runs as root
            report.hold()
            home, config = give_up_root(home, config, who)
        preparer = Preparer(home, config, out)
        preparer.linked = True  # the folder is used here only (docker mounts its own clone)
        preparer.hold_builds = who is not None
        prepared = preparer.prepare(task)
        environment = prepared.environment
        if who is not None and environment is not None and environment.lease is None:
            # a one-off build in the user's area: clear older ones (the worker clears its own user's)
            prune_unheld_builds(builds_dir(home, config.agent), task.id)
        out.note(f"ready in {prepared.seconds:.1f}s; starting the task")
    except NoSpaceForEnvironment as exc:
        return failed(exc.message, failure=Failure.NO_SPACE)
    except FleetError as exc:
        return failed(exc.message)
    except OSError as exc:
        return failed(f"preparation failed: {exc}", exc)
    if environment is not None and environment.lease is not None:
        environment.lease.keep_across_exec()
    if preparer.build_lock is not None:
        os.set_inheritable(preparer.build_lock, True)
    report.write(LaunchOutcome(Phase.TASK, True, environment=launched(environment)))
    try:
        os.chdir(prepared.cwd)
        os.umask(TASK_UMASK)  # the task's, not fleet's owner-only one
        for name in ("SIGPIPE", "SIGXFSZ"):  # Python ignores them; the task gets the defaults, as from a shell
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        os.execvpe(prepared.argv[0], prepared.argv, prepared.env)
    except OSError as exc:
        message = f"could not start {prepared.argv[0]}: {exc.strerror or exc}"
        print(message, flush=True)
        report.write(LaunchOutcome.failed(Phase.TASK, message, exc))
        return EXIT_CANNOT_EXEC


if __name__ == "__main__":
    sys.exit(main())
