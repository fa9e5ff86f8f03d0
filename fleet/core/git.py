"""Running git: never a prompt, and every message masked before it leaves.

Used where git runs on the submitter's side (:mod:`fleet.cli.capture`) and on
the worker's (:mod:`fleet.worker.code`); credentials for a fetch are set up
there (an askpass script), this module only carries them as secrets to mask.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet.core.errors import FleetError
from fleet.core.secrets import mask_text

logger = logging.getLogger(__name__)

ERROR_LINES = 8


class CodeError(FleetError):
    """The task's code could not be fetched, checked out or patched; the
    message is git's own (last lines), credentials masked."""


@dataclass
class Git:
    """Runs git with an environment that never prompts and, when there are
    credentials, answers through the askpass script."""

    env: dict[str, str]
    secrets: tuple[str, ...] = ()
    config_args: tuple[str, ...] = ()

    def run(self, args: Sequence[str], cwd: Path | None = None, what: str = "") -> subprocess.CompletedProcess[bytes]:
        argv = ["git", *self.config_args, *args]
        logger.debug("git: %s", mask_text(" ".join(argv), self.secrets))
        try:
            done = subprocess.run(
                argv, cwd=cwd, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, check=False
            )
        except OSError as exc:
            raise CodeError(f"cannot run git: {exc.strerror}") from None
        if done.returncode != 0:
            raise CodeError(self.message(what or f"git {args[0]}", done.stderr or done.stdout))
        return done

    def ok(self, args: Sequence[str], cwd: Path | None = None) -> bool:
        try:
            self.run(args, cwd)
        except CodeError:
            return False
        return True

    def message(self, what: str, raw: bytes) -> str:
        lines = [ln for ln in raw.decode(errors="replace").splitlines() if ln.strip() and not ln.startswith("hint:")]
        tail = "\n".join(lines[-ERROR_LINES:]) or "no message"
        return mask_text(f"{what} failed: {tail}", self.secrets)
