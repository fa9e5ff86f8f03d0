"""What ``fleetctl submit`` records about the code it is run in.

Inside a git work tree, :func:`capture` records the remote URL (credentials
stripped), the branch, the commit, the entry point and working folder
relative to the repository root, and the uncommitted diff, so the worker can
rebuild the tree exactly as it stands here.

Decisions:

- The diff covers staged and unstaged changes and untracked files that git
  does not ignore.  It is made with a temporary index (a copy of the user's,
  so it is fast and keeps files the user force-added) and a temporary object
  folder (the user's objects borrowed as alternates): ``git add -A`` and
  ``git diff --cached --binary <commit>`` then touch neither the user's
  index, work tree nor object store.  User settings that would make the diff
  unappliable (external diff, textconv, no prefixes) are overridden.
- Binary files travel as git binary patches.  A text file whose changes are
  not UTF-8 is also sent as a binary patch (the diff is carried as JSON
  text); every other file stays a readable text diff.
- Nested repositories and submodules are not captured (their pointer changes
  are ignored).
- The remote is the branch's upstream remote, else ``origin``, else the only
  remote.  A commit that no ref of that remote contains is refused, naming
  the commit; with ``--push`` such a commit is pushed first (the current
  branch, to its upstream branch, else the same name; tracking is never set
  or changed).  A commit already on the remote is never pushed.
- A diff over :data:`MAX_DIFF_BYTES` is refused (commit or ignore the large
  files); untracked files are measured before anything is hashed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet.core.errors import FleetError, UsageError
from fleet.core.git import CodeError, Git
from fleet.core.models import MAX_DIFF_BYTES
from fleet.core.secrets import strip_credentials

log = logging.getLogger(__name__)

_PYTHON_RE = re.compile(r"^python(\d+(\.\d+)?)?$")
_PY_ARG_OPTS = frozenset({"-W", "-X"})  # python options that take the next argument
_DIFF_ARGS = (
    "-c",
    "diff.noprefix=false",
    "-c",
    "diff.mnemonicPrefix=false",
    "diff",
    "--cached",
    "--binary",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--ignore-submodules=all",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "-M",
)


@dataclass(frozen=True)
class GitInfo:
    repo: str  # remote URL, credentials stripped
    branch: str | None  # None on a detached HEAD
    commit: str
    diff: str  # "" for a clean tree
    entry_point: str | None  # the script, relative to the repository root
    repo_dir: str  # the working folder, relative to the repository root ("." at the root)
    root: Path  # the local repository root (not sent)
    remote: str  # the remote's name


def capture(cwd: Path, command: Sequence[str], push: bool = False) -> GitInfo | None:
    """The git state of ``cwd``, or None outside a git work tree (or without git).

    Raises :class:`UsageError` when the commit cannot be fetched by a worker
    (no remote, not pushed) or the diff is too large."""
    # the user's own environment: a --push may need to ask for their password
    git = Git({**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    try:
        inside = git.run(["rev-parse", "--is-inside-work-tree"], cwd=cwd).stdout.strip() == b"true"
    except CodeError:
        return None
    if not inside:
        return None
    root = Path(_out(git, ["rev-parse", "--show-toplevel"], cwd)).resolve()
    if not git.ok(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], cwd=root):
        raise UsageError(
            f"the git repository {root} has no commit yet: commit and push your code first, or submit with --no-code"
        )
    commit = _out(git, ["rev-parse", "HEAD"], root)
    branch = _out(git, ["symbolic-ref", "--quiet", "--short", "HEAD"], root, check=False) or None
    remote = _pick_remote(git, root, branch)
    url = _remote_url(git, root, remote)
    if not _pushed(git, root, remote, commit):
        if not push:
            raise UsageError(
                f"commit {commit[:12]} is not on remote {remote!r}: a worker could not fetch it; "
                f"run git push (or submit with --push, or --no-code to run this folder as it is)"
            )
        _push(git, root, remote, branch)
        if not _pushed(git, root, remote, commit):
            raise UsageError(f"commit {commit[:12]} is still not on remote {remote!r} after git push")
    diff = _diff(git, root, commit)
    return GitInfo(
        repo=url,
        branch=branch,
        commit=commit,
        diff=diff,
        entry_point=entry_point(command, Path(cwd).resolve(), root),
        repo_dir=Path(os.path.relpath(Path(cwd).resolve(), root)).as_posix(),
        root=root,
        remote=remote,
    )


def _out(git: Git, args: Sequence[str], cwd: Path, check: bool = True) -> str:
    try:
        return git.run(args, cwd=cwd).stdout.decode(errors="surrogateescape").strip()
    except CodeError:
        if check:
            raise
        return ""


def _pick_remote(git: Git, root: Path, branch: str | None) -> str:
    remotes = _out(git, ["remote"], root).split()
    upstream = _out(git, ["config", "--get", f"branch.{branch}.remote"], root, check=False) if branch else ""
    if upstream in remotes:
        return upstream
    if "origin" in remotes:
        return "origin"
    if len(remotes) == 1:
        return remotes[0]
    if not remotes:
        raise UsageError(
            f"the git repository {root} has no remote: add one and push, so workers can fetch the code, or submit with --no-code to run this folder as it is"
        )
    raise UsageError(
        f"the git repository {root} has several remotes ({', '.join(remotes)}) and none is 'origin' or "
        f"the branch's upstream: set one with git branch --set-upstream-to"
    )


def _remote_url(git: Git, root: Path, remote: str) -> str:
    url = _out(git, ["remote", "get-url", remote], root)
    if "://" not in url and (url.startswith((".", "/", "~")) or (root / url).exists()):
        url = os.path.normpath(root / os.path.expanduser(url))  # a local remote: absolute, for the worker
    return strip_credentials(url)


def _push(git: Git, root: Path, remote: str, branch: str | None) -> None:
    if branch is None:
        raise UsageError("--push needs a branch: HEAD is detached (check out a branch, or push by hand)")
    merge = _out(git, ["config", "--get", f"branch.{branch}.merge"], root, check=False)
    upstream_remote = _out(git, ["config", "--get", f"branch.{branch}.remote"], root, check=False)
    target = merge if merge.startswith("refs/heads/") and upstream_remote == remote else f"refs/heads/{branch}"
    log.info("pushing %s to %s %s", branch, remote, target)
    try:
        git.run(["push", "--quiet", remote, f"HEAD:{target}"], cwd=root, what=f"git push {remote}")
    except CodeError as exc:
        raise FleetError(exc.message) from None


def _pushed(git: Git, root: Path, remote: str, commit: str) -> bool:
    """Whether a remote-tracking branch of ``remote`` contains ``commit``."""
    found = _out(git, ["branch", "-r", "--contains", commit, "--list", f"{remote}/*"], root, check=False)
    return bool(found.strip())


def _diff(git: Git, root: Path, commit: str) -> str:
    """Tracked changes and untracked files, against ``commit``, as git patch text."""
    _check_untracked_size(git, root)
    index = Path(_out(git, ["rev-parse", "--git-path", "index"], root))
    objects = Path(_out(git, ["rev-parse", "--git-path", "objects"], root))
    index, objects = (p if p.is_absolute() else root / p for p in (index, objects))
    with tempfile.TemporaryDirectory(prefix="fleet-capture-") as tmp:
        temp_index = Path(tmp) / "index"
        if index.exists():
            shutil.copyfile(index, temp_index)
        (Path(tmp) / "objects").mkdir()
        alternates = os.pathsep.join(filter(None, [str(objects), git.env.get("GIT_ALTERNATE_OBJECT_DIRECTORIES")]))
        scoped = Git(
            {
                **git.env,
                "GIT_INDEX_FILE": str(temp_index),
                "GIT_OBJECT_DIRECTORY": str(Path(tmp) / "objects"),
                "GIT_ALTERNATE_OBJECT_DIRECTORIES": alternates,
            }
        )
        if not index.exists():
            scoped.run(["read-tree", commit], cwd=root)
        scoped.run(["-c", "advice.addEmbeddedRepo=false", "add", "--all", "--", ":/"], cwd=root, what="git add")
        data = scoped.run([*_DIFF_ARGS, commit], cwd=root, what="git diff").stdout
        if _not_utf8(data):
            data = _binary_where_not_utf8(scoped, root, commit, Path(tmp) / "attributes")
    _check_size(len(data))
    if _not_utf8(data):
        raise UsageError("the uncommitted changes are not UTF-8 text even as binary patches: commit them first")
    return data.decode()


def _binary_where_not_utf8(git: Git, root: Path, commit: str, attributes: Path) -> bytes:
    """The diff with files whose changes are not UTF-8 sent as binary patches.

    Both diffs list the same files in the same order (no rename detection),
    so their per-file parts can be picked one by one."""
    attributes.write_text("* -diff\n")
    as_text = git.run([*_DIFF_ARGS, "--no-renames", commit], cwd=root, what="git diff").stdout
    as_binary = git.run(
        ["-c", f"core.attributesFile={attributes}", *_DIFF_ARGS, "--no-renames", commit], cwd=root, what="git diff"
    ).stdout
    text_parts, binary_parts = _per_file(as_text), _per_file(as_binary)
    if len(text_parts) != len(binary_parts):
        return as_binary
    return b"".join(b if _not_utf8(t) else t for t, b in zip(text_parts, binary_parts, strict=True))


def _per_file(diff: bytes) -> list[bytes]:
    # a line that starts with "diff --git " only ever opens a file's part: changed
    # lines start with ' ', '+' or '-', and base85 has no space
    return [part for part in re.split(rb"(?m)^(?=diff --git )", diff) if part]


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return True
    return False


def _check_untracked_size(git: Git, root: Path) -> None:
    raw = git.run(["ls-files", "--others", "--exclude-standard", "-z"], cwd=root).stdout
    sizes: list[tuple[int, str]] = []
    for name in raw.decode(errors="surrogateescape").split("\0"):
        if name:
            try:
                sizes.append((os.lstat(root / name).st_size, name))
            except OSError:
                continue
    total = sum(size for size, _ in sizes)
    if total > MAX_DIFF_BYTES:
        biggest = ", ".join(f"{n} ({s / 2**20:.1f} MB)" for s, n in sorted(sizes, reverse=True)[:3])
        raise UsageError(
            f"untracked files add up to {total / 2**20:.1f} MB, over the {MAX_DIFF_BYTES // 2**20} MB limit "
            f"for uncommitted changes (largest: {biggest}): commit them or add them to .gitignore"
        )


def _check_size(size: int) -> None:
    if size > MAX_DIFF_BYTES:
        raise UsageError(
            f"the uncommitted changes make a {size / 2**20:.1f} MB diff, over the {MAX_DIFF_BYTES // 2**20} MB "
            f"limit: commit large files or add them to .gitignore"
        )


def entry_point(command: Sequence[str], cwd: Path, root: Path) -> str | None:
    """The script a command runs, relative to ``root``: ``python[3[.x]] [opts]
    script.py ...`` or ``script.py ...``; None for ``-m``, ``-c`` or a script
    outside the repository."""
    if not command:
        return None
    script: str | None = None
    if _PYTHON_RE.match(os.path.basename(command[0])):
        args = iter(command[1:])
        for arg in args:
            if arg in _PY_ARG_OPTS:
                next(args, None)
            elif arg.startswith(("-m", "-c")) or arg == "-":
                return None
            elif not arg.startswith("-"):
                script = arg
                break
    else:
        script = command[0]
    if script is None:
        return None
    path = (cwd / os.path.expanduser(script)).resolve()
    if not path.is_file():
        return None
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None
