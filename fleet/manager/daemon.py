"""The manager: one per ``FLEET_HOME``; owns the workers and serves the API.

The main thread runs the supervision loop (signals are only recorded by
their handlers and acted on here); uvicorn serves the API from a second
thread, on TCP and on the unix socket ``api.sock`` (who may call, and as
whom: fleet/api/auth.py; the token is kept in ``api.token``).  The API
changes state only through the service's operations (:mod:`fleet.service`,
built here over the manager's store and supervisor); the app sees the
manager through :class:`fleet.api.deps.Backend` only.  Adding and stopping
workers is serialised with supervision by one lock.
``manager.json`` in the home tells clients the URL and pid;
``manager.pid`` (pid and start time, written as soon as the lock is held)
tells workers that a manager is there.

What the signals mean (decided for supervisord and systemd, whose
``restart`` is a SIGTERM followed by a new start):

- SIGTERM is a *hand-over*: the manager exits at once and leaves its workers
  and their tasks running (they are in their own sessions and record their
  results themselves).  A manager started within ``fleet.handover_seconds``
  adopts them; if none comes, each worker stops itself exactly as
  ``fleetctl stop`` would (tasks end ``stopped``, nothing is left running).
  So a restart never kills a task, and a ``supervisorctl stop`` still ends
  with nothing running, one hand-over window later.
- SIGINT (Ctrl-C on ``up --foreground``) stops everything now, as does
  ``fleetctl stop`` (the API's shutdown); a second SIGINT or SIGTERM during
  such a stop kills the running tasks without waiting for their grace.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO

import uvicorn

from fleet import __version__
from fleet.api.auth import Access, ensure_token, group_id, share_home
from fleet.core.config import Config
from fleet.core.errors import ConfigError, FleetError, StoreUnavailable, UsageError
from fleet.core.home import Home
from fleet.core.hosts import HostInfo
from fleet.core.nvml import Nvml
from fleet.core.procs import remove_pidfile, write_pidfile
from fleet.manager.host_lease import HostLease
from fleet.manager.hours_driver import ScheduleDriver, zone
from fleet.manager.leases import Leases
from fleet.manager.notices import NoticeListener
from fleet.manager.supervise import WorkerSupervisor
from fleet.metrics.health import GpuHealth
from fleet.metrics.sampler import Sampler
from fleet.policy.upplan import UpRequest
from fleet.service.operations import Service, build_service
from fleet.store import Store, open_samples, open_store
from fleet.store.faults import Backoff

log = logging.getLogger(__name__)

TICK_S = 0.2


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str) -> None:
    """Loopback by default; anything else only with an API token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"fleet.api.host {host} is not a loopback address: set fleet.api.token (or FLEET_API_TOKEN) to bind it",
            field="fleet.api.token",
        )


class ManagerRunning(FleetError):
    """Another manager already owns this FLEET_HOME."""


class Manager:
    def __init__(
        self,
        home: Home,
        config: Config,
        *,
        port: int | None = None,
        host: str | None = None,
    ) -> None:
        self.home = home.ensure()
        self.config = config
        self.api_host = host or config.fleet.api.host
        self.api_port = config.fleet.api.port if port is None else port
        check_bind(self.api_host, config.fleet.api.token)
        self.api_gid = group_id(config.fleet.api.group)
        # the real token is settled in serve(), once this manager holds the home
        self.access = Access(config.fleet.api.token, self.api_gid)
        self.hostname = config.agent.worker_name or socket.gethostname()
        self.nvml = Nvml()
        self.store: Store = open_store(self.home, config.fleet.store.url)
        self.supervisor = WorkerSupervisor(self.home, self.store, config.path, self.hostname)
        self.leases = Leases(config.fleet.remote_lease_seconds)  # tasks run by remote executors
        self.lock = threading.RLock()  # adding and stopping workers against supervision
        self.service: Service = build_service(
            self.store,
            self.home,
            config,
            processes=self.supervisor,
            leases=self.leases,
            nvml=self.nvml,
            hostname=self.hostname,
            lock=self.lock,
        )
        self.schedule = ScheduleDriver(
            self.store, zone(config.fleet.timezone), self.service.wake.workers, host=self.hostname
        )
        self.host_lease = HostLease(
            self.store,
            self.hostname,
            config.fleet.host_lease_seconds,
            self._host_info,
            self._host_lost,
            self.service.wake.queues,
            shared=bool(config.fleet.store.url),
        )
        # notices from the other hosts of a fleet on PostgreSQL (nothing on SQLite)
        self.notices = NoticeListener(self.store, self.home.root, self.hostname, self.schedule.recompute)
        self.health = GpuHealth(self.store, self.nvml, self.hostname, self.service.wake.workers)
        self.sampler = Sampler(
            self.store,
            open_samples(self.home, config.fleet.store.url),
            self.nvml,
            self.home.root,
            self.hostname,
            config.fleet.metrics,
            health=self.health,
        )
        self.wakeup = threading.Event()
        self.signals = 0
        self.last_signal = 0
        self.shutdown_requested: dict[str, object] | None = None
        self.url = ""
        self.started_at = time.time()
        self._lockfile: IO[str] | None = None
        self._server: uvicorn.Server | None = None
        self.retry = Backoff()  # supervision's store writes while the store is unavailable

    # -- lifecycle ----------------------------------------------------------------
    def acquire(self) -> None:
        fh = open(self.home.manager_lock, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            info = self.home.read_manager_info() or {}
            raise ManagerRunning(
                f"a manager already runs for FLEET_HOME={self.home.root} (pid {info.get('pid', '?')}, {info.get('url', '?')})"
            ) from None
        self._lockfile = fh

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        self.last_signal = signum
        self.wakeup.set()

    def serve(self, initial: UpRequest | None = None) -> int:
        """Run until asked to stop; return the exit code."""
        self.acquire()
        for folder, mode in self.home.tighten():
            log.warning("manager: %s was mode %04o (writable by others); tightened to 0700", folder, mode)
        write_pidfile(self.home.manager_pid)  # workers waiting for a hand-over see us from here on
        share_home(self.home, self.api_gid)
        # Group members may read the token (it acts as this manager's user) unless tasks run as
        # their submitters: then the token would be a way around that, and stays owner-only.
        token_gid = None if self.config.fleet.run_as_submitter else self.api_gid
        self.access.token = ensure_token(self.home, self.config.fleet.api.token, token_gid)
        if self.config.fleet.run_as_submitter and os.geteuid() != 0:
            log.warning("manager: fleet.run_as_submitter needs a manager running as root; tasks run as this user")
        if initial is not None:
            self.service.workers.add(initial, "fleetctl up")
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets created with it, and
        # without it every answer after the first on a connection waits ~40 ms for a delayed ACK.
        family = socket.AF_INET6 if ":" in self.api_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.api_host, self.api_port))
        except OSError as exc:
            hint = (
                "; another manager or program uses that port: choose another with --port PORT or "
                "fleet.api.port in the config (--port 0 takes any free port)"
                if exc.errno == errno.EADDRINUSE
                else ""
            )
            raise UsageError(
                f"cannot listen on {self.api_host}:{self.api_port}: {exc.strerror}{hint}", field="port"
            ) from exc
        sock.listen(128)
        port = sock.getsockname()[1]
        self.access.cookie = f"fleet_session_{port}"
        shown = f"[{self.api_host}]" if ":" in self.api_host else self.api_host
        self.url = f"http://{shown}:{port}"

        # Imported here, not at the top: `fleetctl` imports this module for `up`, and every
        # command would load FastAPI and the routes.  No cycle hides here (tests/importcycles.py
        # reads this import too): the app knows the manager only as fleet.api.deps.Backend.
        from fleet.api.app import create_app
        from fleet.api.peer import PeerCredProtocol, bind_unix

        app = create_app(self)
        unix = bind_unix(self.home, self.api_gid)
        sockets = [sock] if unix is None else [sock, unix]
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                http=PeerCredProtocol,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=2,
            )
        )
        self.service.wake.recompute = self.schedule.recompute  # the driver runs from here on
        server_thread = threading.Thread(target=self._server.run, kwargs={"sockets": sockets}, name="api", daemon=True)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        server_thread.start()
        while not self._server.started and server_thread.is_alive():
            time.sleep(0.01)
        with self.lock:
            self.host_lease.start()  # first: a host declared lost while away kills its tasks here
            self.supervisor.adopt_or_recover()
            self.leases.seed(self.store, host=self.hostname if self.store.shared else None)
        self.schedule.start()
        self.notices.start()
        self.sampler.start()
        self.health.start()
        self.home.write_manager_info(
            {"url": self.url, "pid": os.getpid(), "started_at": self.started_at, "version": __version__}
        )
        log.info("manager: serving %s for FLEET_HOME=%s (pid %d)", self.url, self.home.root, os.getpid())
        log.info("manager: config %s", self.config.path or "built-in defaults (no config file found)")
        try:
            self._loop()
        finally:
            self.notices.stop()
            self.host_lease.stop(leave=self.last_signal != signal.SIGTERM)
            self.schedule.stop()
            self.health.stop()
            self.sampler.stop()
            self._server.should_exit = True
            server_thread.join(timeout=5)
            sock.close()
            if unix is not None:
                unix.close()
                self.home.api_sock.unlink(missing_ok=True)
            info = self.home.read_manager_info()
            if info and info.get("pid") == os.getpid():
                self.home.manager_json.unlink(missing_ok=True)
            remove_pidfile(self.home.manager_pid)
            log.info("manager: stopped")
        return 0

    def _loop(self) -> None:
        forced = 0
        while True:
            self.wakeup.wait(TICK_S)
            self.wakeup.clear()
            with self.lock:
                if self.signals > forced:
                    forced = self.signals
                    if self.last_signal == signal.SIGTERM and self.shutdown_requested is None:
                        self.hand_over()
                        return
                    try:
                        self.shutdown(drain=False, requeue=False, by="signal")
                    except StoreUnavailable:
                        pass  # the workers were signalled instead (see WorkerSupervisor.request_stop)
                self._supervise()
                if self.shutdown_requested is not None and not self.supervisor.alive():
                    return

    def _supervise(self) -> None:
        """One round of supervision; while the store is unavailable it is tried
        again with back-off (the store logs the outage once), and what it found
        is kept for the next round (see :meth:`WorkerSupervisor.tick`)."""
        if not self.retry.ready():
            return
        try:
            self.supervisor.tick()
            self.leases.sweep(self.store)
        except StoreUnavailable:
            self.retry.failed()
        else:
            self.retry.ok()

    # -- what the API calls (fleet.api.deps.Backend) ---------------------------------------
    @property
    def stopping(self) -> bool:
        return self.shutdown_requested is not None

    def shutdown(self, drain: bool, requeue: bool, by: str) -> None:
        with self.lock:
            if self.shutdown_requested is not None:  # asked twice: force it
                log.info("manager: shutdown asked again (%s): killing running tasks now", by)
                for wid in self.supervisor.alive():
                    self.supervisor.force_kill(wid)
                return
            self.shutdown_requested = {"drain": drain, "requeue": requeue, "by": by}
            self.service.workers.closed = "the manager is shutting down"
            log.info("manager: shutting down (%s, drain=%s, requeue=%s)", by, drain, requeue)
            self.supervisor.cancel_restarts()
            ids = [w.id for w in self.store.list_workers(host=self.hostname)]
        self.service.workers.stop(ids, drain, requeue, by)
        self.wakeup.set()

    def _host_info(self) -> HostInfo:
        return HostInfo(sorted({u.unit for u in self.nvml.units()}), __version__, self.url, os.getpid())

    def _host_lost(self, why: str) -> None:
        """This host was declared lost (see :mod:`fleet.manager.host_lease`)."""
        with self.lock:
            started = self.supervisor.fenced(why)
        log.warning("manager: workers started again: %s", ", ".join(started) or "none")

    def hand_over(self) -> None:
        """SIGTERM: leave now, workers and tasks running, for the next manager
        to adopt (see the module docstring); adding workers is refused from
        here on."""
        with self.lock:
            self.shutdown_requested = {"drain": False, "requeue": False, "by": "SIGTERM (hand-over)"}
            self.service.workers.closed = "the manager is shutting down"
            alive = self.supervisor.alive()
        log.info(
            "manager: SIGTERM: handing over %d running worker(s); they stop themselves unless a manager "
            "starts within %gs",
            len(alive),
            self.config.fleet.handover_seconds,
        )


def configure_logging(path: Path | None, level: int = logging.INFO) -> None:
    handler: logging.Handler = logging.StreamHandler() if path is None else logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
