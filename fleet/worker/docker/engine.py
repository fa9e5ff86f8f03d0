"""Is the docker engine there?  A docker-mode worker asks before it pulls.

The answer is cached for a few seconds, so an idle worker that wakes often
does not ping the engine each time; a worker whose engine is unreachable
says so in its state and pulls nothing until it answers again.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

RECHECK_S = 5.0


class EngineProbe:
    def __init__(self, who: str) -> None:
        self.who = who
        self._checked = 0.0
        self._problem: str | None = None

    def problem(self) -> str | None:
        """None when the engine answers, else why not (one line)."""
        now = time.monotonic()
        if now - self._checked < RECHECK_S:
            return self._problem
        self._checked = now
        before = self._problem
        self._problem = _ping()
        if self._problem != before:
            if self._problem is None:
                log.info("worker %s: the docker engine answers again", self.who)
            else:
                log.warning("worker %s: %s", self.who, self._problem)
        return self._problem


def _ping() -> str | None:
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # DockerException, connection refused, missing socket
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"docker engine unreachable ({text[:200]})"
    return None
