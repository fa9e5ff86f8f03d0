"""Getting a task's code on the worker: the vcs cache, the checkout, the diff.

Decisions:

- One bare mirror per repository (``git clone --mirror``) under
  ``agent.vcs_cache.path`` (default ``$FLEET_HOME/vcs-cache``), keyed by the
  normalised URL, so ``git@host:org/repo.git`` and ``https://host/org/repo``
  share one mirror.  A per-repo ``flock`` (``<mirror>.lock``) serialises
  clone and fetch; a task whose commit is already in the mirror does not
  fetch at all, so tasks queued together fetch once.  A new mirror is cloned
  into a temporary name and renamed, so a half-made mirror is never used.
- A worker's task (``linked=True``, :mod:`fleet.worker.prepare`) gets a
  linked worktree of the mirror: ``git worktree add -f --detach
  --no-checkout <folder> <commit>`` under the mirror's lock (git's own
  ``worktree add`` is not safe to run at once in one repository), ``reset
  --hard`` outside it, then ``git apply`` of the diff.  The registration
  is tried first, before any check that the mirror holds the commit: it
  fails cleanly on a missing commit, and only then is the mirror fetched
  (and the registration tried again).  Two git processes
  instead of a clone, a ``remote set-url`` and a checkout, no copy of the objects:
  every task on a repository shares the mirror's object store, and each
  gets its own folder and index, so what a task writes, changes or deletes
  in its folder reaches neither the mirror nor another task's folder.
  Decided against a hard-linked copy of a prepared tree (``cp -al``): a task
  that writes a file in place would write through the shared inode into the
  cache and every other task's copy, and nothing offers copy-on-write here.
  In a linked folder ``.git`` is a file naming the mirror, so ``origin`` is
  the URL fleet fetches from (after translation, without credentials), and a
  task's own ``git commit`` adds objects to the mirror (reachable only from
  its worktree's HEAD; harmless to others).  A retried attempt's folder is
  removed and re-added (``-f`` overrides the stale registration); stale
  registrations are pruned whenever the mirror is fetched.
- Docker tasks, ``fleetctl execute`` and image builds (``linked=False``)
  keep a self-contained clone, because their folder is mounted into a
  container or built elsewhere where the mirror's path does not exist: a
  local clone from the mirror (git hardlinks the objects: cheap, and unlike
  ``--shared`` it keeps working if the mirror is later pruned), ``checkout
  --detach <commit>``, then ``git apply`` of the diff from the tree's root.
  ``origin`` is pointed back at the real URL (without credentials) so the
  task's code sees its true remote.
- Credentials never reach an argument vector, a URL or a log: git asks a
  0700 askpass script, written per checkout into a temporary folder, which
  prints values it reads from the environment of git's process.  The user's
  credential helpers are switched off for those calls, so the password is not
  stored anywhere either.  Credentials written into a task's URL are moved
  out of the URL the same way.  Every message is masked before it leaves.
- URL translation follows ClearML Agent: ``force_git_ssh_protocol`` turns
  https into ssh (``force_git_ssh_port`` / ``force_git_ssh_user``, default
  user ``git``); otherwise, with ``translate_ssh`` (the default) and
  ``git_user``/``git_pass`` set, ssh URLs become https.  ``git_host`` limits
  both the translation and the credentials to that host.
- ``GIT_TERMINAL_PROMPT=0`` and a closed stdin: git fails instead of waiting
  for a prompt nobody will answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from fleet.core.config import AgentConfig
from fleet.core.git import CodeError, Git
from fleet.core.home import Home, resolve_home
from fleet.core.models import Script
from fleet.core.secrets import mask_urls, split_credentials, strip_credentials

logger = logging.getLogger(__name__)

_SCP_RE = re.compile(r"^(?:(?P<user>[^@/\s]+)@)?(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]):(?P<path>(?!//).*)$")
_WEB = ("http", "https")


# -- URLs: small pure functions -----------------------------------------------------


def host_of(url: str) -> str:
    """The host name of a URL or scp-like address, lower case ("" for a path)."""
    if "://" in url:
        return (urlsplit(url).hostname or "").lower()
    m = _SCP_RE.match(url)
    return m.group("host").strip("[]").lower() if m and not _is_local(url) else ""


def _is_local(url: str) -> bool:
    return url.startswith(("/", "./", "../", "~", "file:")) or ("://" not in url and not _SCP_RE.match(url))


def to_ssh(url: str, port: int = 0, user: str = "") -> str:
    """https -> ssh: ``git@host:path``, or ``ssh://user@host:port/path`` with a port.

    Only http(s) URLs change; credentials in them are dropped."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in _WEB or not parts.hostname:
        return url
    user = user or "git"
    path = parts.path.lstrip("/")
    if port:
        return f"ssh://{user}@{parts.hostname}:{port}/{path}"
    return f"{user}@{parts.hostname}:{path}"


def to_https(url: str) -> str:
    """ssh -> https: ``git@host:path`` and ``ssh://user@host[:port]/path`` become
    ``https://host/path`` (the ssh port means nothing to https)."""
    parts = urlsplit(url)
    if parts.scheme.lower() in ("ssh", "git+ssh", "ssh+git") and parts.hostname:
        return f"https://{parts.hostname}/{parts.path.lstrip('/')}"
    if "://" in url or _is_local(url):
        return url
    m = _SCP_RE.match(url)
    if not m:
        return url
    return f"https://{m.group('host')}/{m.group('path').lstrip('/')}"


def normalise(url: str) -> str:
    """The cache key of a repository: ``host/path`` without scheme, user,
    port, ``.git`` or trailing slash; local paths become absolute paths."""
    if url.startswith("file://"):
        return os.path.normpath(urlsplit(url).path)
    if _is_local(url):
        return os.path.normpath(os.path.abspath(os.path.expanduser(url)))
    if "://" in url:
        parts = urlsplit(url)
        host, path = (parts.hostname or "").lower(), parts.path
    else:
        m = _SCP_RE.match(url)
        assert m is not None  # not local, so scp-like
        host, path = m.group("host").strip("[]").lower(), m.group("path")
    path = path.strip("/")
    path = path[: -len(".git")] if path.endswith(".git") else path
    return f"{host}/{path.rstrip('/')}"


def effective_url(url: str, config: AgentConfig) -> str:
    """The URL to fetch from, after ClearML's translation rules (see module doc)."""
    url = strip_credentials(url)
    host = host_of(url)
    if config.git_host and host != config.git_host.lower():
        return url
    if config.force_git_ssh_protocol:
        return to_ssh(url, config.force_git_ssh_port, config.force_git_ssh_user)
    if config.translate_ssh and config.git_user and config.git_pass:
        return to_https(url)
    return url


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    @classmethod
    def for_url(cls, url: str, config: AgentConfig) -> Credentials | None:
        """Credentials written into the task's URL win; then the config's, for
        http(s) URLs on ``git_host`` (any host when it is empty)."""
        _, user, password = split_credentials(url)
        if user or password:
            return cls(user, password)
        fetch = effective_url(url, config)
        if urlsplit(fetch).scheme.lower() not in _WEB or not (config.git_user and config.git_pass):
            return None
        if config.git_host and host_of(fetch) != config.git_host.lower():
            return None
        return cls(config.git_user, config.git_pass)


# -- running git ---------------------------------------------------------------------

_ASKPASS = """#!/bin/sh
case "$1" in
  [Uu]sername*) printf '%s\\n' "$FLEET_GIT_USER" ;;
  *) printf '%s\\n' "$FLEET_GIT_PASS" ;;
esac
"""


@contextlib.contextmanager
def git_for(credentials: Credentials | None, base_env: Mapping[str, str] | None = None) -> Iterator[Git]:
    """A :class:`Git` runner; with credentials, an askpass script that lives as
    long as the ``with`` block."""
    env = dict(os.environ if base_env is None else base_env)
    env.update(GIT_TERMINAL_PROMPT="0", GCM_INTERACTIVE="never")
    if credentials is None:
        yield Git(env)
        return
    with tempfile.TemporaryDirectory(prefix="fleet-askpass-") as tmp:
        script = Path(tmp) / "askpass"
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        with os.fdopen(fd, "w") as fh:
            fh.write(_ASKPASS)
        env.update(GIT_ASKPASS=str(script), FLEET_GIT_USER=credentials.user, FLEET_GIT_PASS=credentials.password)
        env.pop("SSH_ASKPASS", None)
        # an empty helper resets the list: nothing stores or replaces our password
        secrets = (credentials.password,) if credentials.password else (credentials.user,)
        yield Git(env, secrets=secrets, config_args=("-c", "credential.helper="))


# -- the cache ------------------------------------------------------------------------


class VcsCache:
    """Bare mirrors, one per normalised URL, each with its own lock file."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_config(cls, config: AgentConfig, home: Home) -> VcsCache:
        path = config.vcs_cache.path
        return cls(Path(path).expanduser() if path else home.root / "vcs-cache")

    def mirror_path(self, url: str) -> Path:
        key = normalise(strip_credentials(url))
        slug = re.sub(r"[^A-Za-z0-9_.\-]", "_", PurePosixPath(key).name)[:64] or "repo"
        return self.root / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.git"

    @contextlib.contextmanager
    def locked(self, mirror: Path, say: Callable[[str], None]) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(mirror.with_name(mirror.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                say(f"vcs cache: waiting for {mirror.name} (another task is fetching it)")
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def update(self, url: str, commit: str, git: Git, say: Callable[[str], None]) -> Path:
        """The mirror of ``url``, holding ``commit`` (fetched only when missing)."""
        mirror = self.mirror_path(url)
        shown = mask_urls(url)
        with self.locked(mirror, say):
            if not (mirror / "HEAD").exists():
                say(f"vcs cache: cloning {shown}")
                tmp = Path(tempfile.mkdtemp(prefix=f".{mirror.name}.", dir=self.root))
                try:
                    git.run(["clone", "--mirror", "--quiet", "--", url, str(tmp)], what=f"git clone {shown}")
                    tmp.rename(mirror)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
            elif _has_commit(git, mirror, commit):
                say(f"vcs cache: {commit[:12]} already cached")
                return mirror
            else:
                say(f"vcs cache: fetching {shown}")
                git.ok(["worktree", "prune"], cwd=mirror)  # the registrations of task folders now gone
                git.run(["remote", "set-url", "origin", url], cwd=mirror)
                git.run(["fetch", "--prune", "--quiet", "origin"], cwd=mirror, what=f"git fetch {shown}")
            if not _has_commit(git, mirror, commit):
                # a commit no branch points at any more: ask for it by name (servers may allow it)
                git.run(["fetch", "--quiet", "origin", commit], cwd=mirror, what=f"git fetch {commit} from {shown}")
        return mirror


def _has_commit(git: Git, repo: Path, commit: str) -> bool:
    return git.ok(["cat-file", "-e", f"{commit}^{{commit}}"], cwd=repo)


# -- the checkout ----------------------------------------------------------------------


def checkout(
    task_script: Script,
    dest: Path,
    config: AgentConfig,
    log: Callable[[str], None],
    *,
    cache: VcsCache | None = None,
    env: Mapping[str, str] | None = None,
    linked: bool = False,
) -> Path:
    """Clone ``task_script.repo`` at its commit into ``dest`` (absent or empty),
    apply its diff, and return the working folder (``dest / repo_dir``).

    ``linked``: with a cache, a worktree of the mirror instead of a clone
    (see the module doc: for a folder used on this machine only).

    Without ``cache``, the cache comes from the config (``vcs_cache.enabled``
    false: a direct clone).  Raises :class:`CodeError` with git's message."""
    script = task_script
    if not script.repo or not script.commit:
        raise CodeError("the task has no git repository and commit to check out")
    commit = script.commit
    clean = strip_credentials(script.repo)
    url = effective_url(clean, config)
    creds = Credentials.for_url(script.repo, config)
    workdir = _inside(dest, script.repo_dir or ".")
    what = f"{mask_urls(url)} @ {commit[:12]}" + (f" ({script.branch})" if script.branch else "")
    log(f"code: {what}" + (" (translated from " + mask_urls(clean) + ")" if url != clean else ""))
    with git_for(creds, env) as git:
        if cache is None and config.vcs_cache.enabled:
            cache = VcsCache.from_config(config, Home(resolve_home()))
        if cache is not None and linked:
            mirror = cache.mirror_path(url)
            # the common case, a commit the mirror holds, costs no git process of its
            # own: the registration names the commit, and fails when it is missing
            if not ((mirror / "HEAD").exists() and register_worktree(git, cache, mirror, dest, commit, check=False)):
                mirror = cache.update(url, commit, git, log)
                register_worktree(git, cache, mirror, dest, commit)
            else:
                log(f"vcs cache: {commit[:12]} already cached")
            git.run(["reset", "--hard", "--quiet"], cwd=dest, what=f"git checkout {commit[:12]}")
            if script.diff:
                apply_diff(git, dest, script.diff, log)
            return workdir
        if cache is not None:
            mirror = cache.update(url, commit, git, log)
            git.run(["clone", "--no-checkout", "--quiet", "--", str(mirror), str(dest)], what="git clone")
            git.run(["remote", "set-url", "origin", clean], cwd=dest)
        else:
            log(f"code: cloning {mask_urls(url)} (vcs cache disabled)")
            git.run(["clone", "--no-checkout", "--quiet", "--", url, str(dest)], what=f"git clone {mask_urls(url)}")
            if not _has_commit(git, dest, commit):
                git.run(["fetch", "--quiet", "origin", commit], cwd=dest, what=f"git fetch {commit}")
        git.run(
            ["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit, "--"],
            cwd=dest,
            what=f"git checkout {commit[:12]}",
        )
        if script.diff:
            apply_diff(git, dest, script.diff, log)
    return workdir


def register_worktree(git: Git, cache: VcsCache, mirror: Path, dest: Path, commit: str, *, check: bool = True) -> bool:
    """Register ``dest`` as a worktree of ``mirror`` at ``commit`` (detached),
    not filled yet (``reset --hard`` fills it).  With ``check=False``, False
    (nothing registered) where git refuses, e.g. a commit the mirror lacks;
    else git's refusal raises :class:`CodeError`.

    git's ``worktree add`` reads the other worktrees' records while it writes
    its own, and fails when one is half-written ("failed to read
    worktrees/<name>/commondir"): the registration (``--no-checkout``) takes
    the mirror's lock; filling the folder runs outside it, so tasks of one
    repository still check out side by side."""
    argv = ["worktree", "add", "-f", "--detach", "--no-checkout", "--quiet", str(dest.absolute()), commit]
    with cache.locked(mirror, lambda _: None):
        if not check:
            return git.ok(argv, cwd=mirror)
        git.run(argv, cwd=mirror, what=f"git worktree add {commit[:12]}")
    return True


def apply_diff(git: Git, tree: Path, diff: str, log: Callable[[str], None]) -> None:
    """``git apply`` the submitter's uncommitted changes at the root of ``tree``."""
    data = diff.encode("utf-8", errors="surrogateescape")
    log(f"code: applying uncommitted changes ({len(data) / 1024:.1f} KiB)")
    private = tree / ".git"  # a folder in a clone; a file naming the mirror in a linked worktree
    folder = private if private.is_dir() else tree.parent
    with tempfile.NamedTemporaryFile(prefix=f".{tree.name}-", suffix=".diff", dir=folder) as fh:
        fh.write(data)
        fh.flush()
        git.run(["apply", "--binary", "--whitespace=nowarn", fh.name], cwd=tree, what="git apply")


def _inside(dest: Path, repo_dir: str) -> Path:
    rel = PurePosixPath(repo_dir)
    if rel.is_absolute() or ".." in rel.parts:
        raise CodeError(f"working folder {repo_dir!r} is not inside the repository")
    return dest.joinpath(*rel.parts) if rel.parts else dest
