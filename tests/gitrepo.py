"""Real git repositories for tests: a bare remote and a pushed clone in a temp folder.

Git runs isolated from the machine's configuration (no global or system
config) with a fixed identity, so commits work anywhere.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
    "GIT_TERMINAL_PROMPT": "0",
}


def isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)


def git(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV, **(env or {})}, capture_output=True, text=True
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


@dataclass
class Repo:
    work: Path
    remote: Path

    def write(self, rel: str, data: str | bytes, mode: int | None = None) -> Path:
        path = self.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
        if mode is not None:
            path.chmod(mode)
        return path

    def commit(self, message: str = "change", push: bool = True) -> str:
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", message)
        if push:
            git(self.work, "push", "-q", "origin", "HEAD")
        return self.head()

    def head(self) -> str:
        return git(self.work, "rev-parse", "HEAD").strip()


def make_repo(tmp: Path) -> Repo:
    """A remote (``remote.git``) and a clone (``work``) with one pushed commit:
    ``train.py``, ``pkg/__init__.py``, ``pkg/sub/run.py``, ``data.bin`` and a
    ``.gitignore`` for ``*.log`` and ``out/``."""
    tmp.mkdir(parents=True, exist_ok=True)
    remote = tmp / "remote.git"
    git(tmp, "init", "-q", "--bare", "-b", "main", str(remote))
    work = tmp / "work"
    git(tmp, "clone", "-q", str(remote), str(work))
    git(work, "checkout", "-q", "-b", "main")
    repo = Repo(work, remote)
    repo.write("train.py", "import pkg\nprint('train', pkg.VALUE)\n")
    repo.write("pkg/__init__.py", "VALUE = 1\n")
    repo.write("pkg/sub/run.py", "print('run')\n")
    repo.write("data.bin", bytes(range(256)) * 4)
    repo.write(".gitignore", "*.log\nout/\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "first")
    git(work, "push", "-q", "-u", "origin", "main")
    return repo


def tree(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Every file under ``root`` that git would see (not ignored, outside
    ``.git``): its bytes and whether it is executable."""
    listed = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    out: dict[str, tuple[bytes, bool]] = {}
    for name in filter(None, listed.split("\0")):
        path = root / name
        if path.is_file():
            out[name] = (path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR))
    return out
