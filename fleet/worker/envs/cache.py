"""The environment cache: one folder per key, reused as is on an exact match.

Layout under ``venvs_cache.path`` (default ``$FLEET_HOME/venvs-cache``)::

    <key>/              the environment
    <key>.ready         written last (tmp + rename): the entry is complete; JSON
                        with the frozen package list, manager and Python
    <key>.used          its mtime is the last use (LRU)
    .locks/<key>.build  flock: held exclusively while the key is checked or built
    .locks/<key>.use    flock: held shared by every task using the entry

Decisions:

- Concurrent tasks with the same key build it once: the second waits on the
  build lock, then finds ``<key>.ready``.  Different keys build in parallel.
- An environment is built *in place* under the build lock, not in a temp
  folder renamed at the end: a venv writes its absolute path into its
  scripts and ``pyvenv.cfg``, so a renamed one is broken.  What is atomic is
  the ``.ready`` marker; a folder without one (a build that was killed) is
  removed before the next build.
- A task holds ``.use`` shared for as long as it runs (the lock's file
  descriptor survives ``exec`` into the task), so eviction never removes an
  environment in use: it takes the victim's build and use locks without
  waiting and skips the entry when either is held.
- Eviction: least recently used first, until there are fewer than
  ``max_entries`` entries and at least ``free_space_threshold_gb`` free on the
  cache's disk (never ClearML's "delete everything").  When space cannot be
  made the caller builds outside the cache instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.worker.envs.builder import Log

log = logging.getLogger(__name__)


def cache_key(material: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of everything that decides an environment's contents."""
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class Lease:
    """A cache entry in use by this process (and, after exec, by the task)."""

    key: str
    path: Path
    cached: bool  # True: reused as is, nothing was installed
    info: dict[str, Any]
    fd: int  # the entry's use lock, held shared

    def keep_across_exec(self) -> None:
        os.set_inheritable(self.fd, True)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _lock(path: Path, how: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, how)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _try_lock(path: Path, how: int) -> int | None:
    try:
        return _lock(path, how | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise


class VenvCache:
    def __init__(self, root: Path, max_entries: int, free_space_gb: float) -> None:
        self.root = root
        self.max_entries = max_entries
        self.free_space_gb = free_space_gb
        self.locks = root / ".locks"

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def entries(self) -> list[str]:
        """Complete entries, least recently used first."""
        if not self.root.is_dir():
            return []
        keys = [p.name[: -len(".ready")] for p in self.root.glob("*.ready")]
        return sorted((k for k in keys if (self.root / k).is_dir()), key=self._last_used)

    def _last_used(self, key: str) -> float:
        for name in (f"{key}.used", f"{key}.ready"):
            with contextlib.suppress(OSError):
                return (self.root / name).stat().st_mtime
        return 0.0

    def acquire(self, key: str, build: Callable[[Path], dict[str, Any]], log: Log) -> Lease | None:
        """The entry for ``key``, built with ``build(path) -> info`` when missing.

        None when the cache has no room for a new entry (the caller builds
        elsewhere).  The lease's use lock is held until released or the process
        (after exec, the task) ends."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.locks.mkdir(exist_ok=True)
        with self._build_lock(key, log):
            path, ready = self.root / key, self.root / f"{key}.ready"
            cached = ready.is_file() and path.is_dir()
            if cached:
                info = json.loads(ready.read_text())
            else:
                if not self._make_room(key, log):
                    return None
                if path.exists():
                    log.note(f"removing an unfinished build of environment {key[:12]}")
                    shutil.rmtree(path, ignore_errors=True)
                info = build(path)
                tmp = self.root / f"{key}.ready.tmp"
                tmp.write_text(json.dumps(info, indent=1))
                os.replace(tmp, ready)
            fd = _lock(self.locks / f"{key}.use", fcntl.LOCK_SH)
            used = self.root / f"{key}.used"
            used.touch()
            os.utime(used)
        return Lease(key, path, cached, info, fd)

    @contextlib.contextmanager
    def _build_lock(self, key: str, log: Log) -> Iterator[None]:
        path = self.locks / f"{key}.build"
        fd = _try_lock(path, fcntl.LOCK_EX)
        if fd is None:
            log.note(f"waiting for another task that is building environment {key[:12]}")
            fd = _lock(path, fcntl.LOCK_EX)
        try:
            yield
        finally:
            os.close(fd)

    def _make_room(self, key: str, log: Log) -> bool:
        """Evict LRU entries not in use; False when the disk stays too full."""
        victims = [k for k in self.entries() if k != key]
        while len(victims) >= self.max_entries:
            if not self._evict_one(victims, log, f"the cache holds {len(victims)} (max_entries {self.max_entries})"):
                break
        while self._short_of_space():
            if not self._evict_one(victims, log, f"less than {self.free_space_gb:g} GB free"):
                log.note(f"less than {self.free_space_gb:g} GB free on {self.root}; not caching this environment")
                return False
        return True

    def _short_of_space(self) -> bool:
        if self.free_space_gb <= 0:
            return False
        return shutil.disk_usage(self.root).free < self.free_space_gb * 1e9

    def _evict_one(self, victims: list[str], log: Log, why: str) -> bool:
        """Remove the least recently used entry that nobody uses or builds."""
        for victim in list(victims):
            build_fd = _try_lock(self.locks / f"{victim}.build", fcntl.LOCK_EX)
            if build_fd is None:
                continue
            try:
                use_fd = _try_lock(self.locks / f"{victim}.use", fcntl.LOCK_EX)
                if use_fd is None:
                    continue
                try:
                    self.remove(victim)
                finally:
                    os.close(use_fd)
            finally:
                os.close(build_fd)
            victims.remove(victim)
            log.note(f"evicted cached environment {victim[:12]} ({why})")
            return True
        return False

    def remove(self, key: str) -> None:
        """Drop an entry (the caller holds its locks): marker first, then the folder."""
        with contextlib.suppress(FileNotFoundError):
            (self.root / f"{key}.ready").unlink()
        shutil.rmtree(self.root / key, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.root / f"{key}.used").unlink()


def stamp_info(**fields: Any) -> dict[str, Any]:
    return {**fields, "built_at": time.time()}
