"""The worker side of git tasks: URL translation, the vcs cache and its lock,
the checkout with the diff applied, git's own message on failure, and
credentials that reach git through askpass and nowhere else."""

from __future__ import annotations

import base64
import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fleet.cli.capture import capture
from fleet.core.config import AgentConfig, VcsCacheConfig
from fleet.core.git import CodeError
from fleet.core.models import Script
from fleet.core.secrets import mask_text, mask_urls, strip_credentials
from fleet.worker.code import (
    Credentials,
    VcsCache,
    checkout,
    effective_url,
    normalise,
    to_https,
    to_ssh,
)
from tests.gitrepo import Repo, git, tree
from tests.threads import at_once

pytestmark = pytest.mark.usefixtures("git_isolated")  # the repo fixture: tests/conftest.py

SECRET = "s3cret-Pa55"


def script_of(repo: Repo, cwd: Path | None = None) -> Script:
    info = capture(cwd or repo.work, ["python", "train.py"])
    assert info is not None
    return Script(
        command=["python", "train.py"],
        working_dir=str(cwd or repo.work),
        repo=info.repo,
        branch=info.branch,
        commit=info.commit,
        diff=info.diff or None,
        entry_point=info.entry_point,
        repo_dir=info.repo_dir,
    )


# -- URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "port", "user", "expected"),
    [
        ("https://github.com/org/repo.git", 0, "", "git@github.com:org/repo.git"),
        ("https://bob:pw@github.com/org/repo.git", 0, "", "git@github.com:org/repo.git"),
        ("https://gitlab.example.com:8443/g/r", 2222, "gl", "ssh://gl@gitlab.example.com:2222/g/r"),
        ("http://h/r.git", 0, "me", "me@h:r.git"),
        ("git@github.com:org/repo.git", 0, "", "git@github.com:org/repo.git"),
        ("/srv/git/repo.git", 0, "", "/srv/git/repo.git"),
    ],
)
def test_to_ssh(url: str, port: int, user: str, expected: str) -> None:
    assert to_ssh(url, port, user) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("git@github.com:org/repo.git", "https://github.com/org/repo.git"),
        ("ssh://git@gitlab.example.com:2222/g/r.git", "https://gitlab.example.com/g/r.git"),
        ("ssh://host/r", "https://host/r"),
        ("github.com:org/repo", "https://github.com/org/repo"),
        ("https://github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("/srv/git/repo.git", "/srv/git/repo.git"),
        ("file:///srv/git/repo.git", "file:///srv/git/repo.git"),
    ],
)
def test_to_https(url: str, expected: str) -> None:
    assert to_https(url) == expected


def test_normalise_shares_one_key_per_repository() -> None:
    same = [
        "git@GitHub.com:org/repo.git",
        "https://github.com/org/repo",
        "https://u:p@github.com/org/repo.git/",
        "ssh://git@github.com:22/org/repo.git",
    ]
    assert {normalise(u) for u in same} == {"github.com/org/repo"}
    assert normalise("file:///srv/x/../repo.git") == "/srv/repo.git"
    assert normalise("/srv/repo.git") == "/srv/repo.git"


@pytest.mark.parametrize(
    ("url", "masked", "stripped"),
    [
        ("https://bob:pw@h/r.git", "https://bob:********@h/r.git", "https://h/r.git"),
        ("https://ghp_token@h/r.git", "https://********@h/r.git", "https://h/r.git"),
        ("ssh://git@h/r.git", "ssh://git@h/r.git", "ssh://git@h/r.git"),
        ("git@h:r.git", "git@h:r.git", "git@h:r.git"),
        ("https://h/r.git", "https://h/r.git", "https://h/r.git"),
    ],
)
def test_mask_and_strip(url: str, masked: str, stripped: str) -> None:
    assert (mask_urls(url), strip_credentials(url)) == (masked, stripped)


def test_mask_text_finds_urls_and_secrets() -> None:
    text = f"fatal: unable to access 'https://bob:{SECRET}@h/r/': {SECRET} refused"
    assert SECRET not in mask_text(text, [SECRET])


def test_translation_follows_clearml() -> None:
    creds = AgentConfig(git_user="bob", git_pass=SECRET)
    assert effective_url("git@github.com:o/r.git", creds) == "https://github.com/o/r.git"
    assert effective_url("git@github.com:o/r.git", AgentConfig()) == "git@github.com:o/r.git"  # no credentials
    no_translate = AgentConfig(git_user="bob", git_pass=SECRET, translate_ssh=False)
    assert effective_url("git@github.com:o/r.git", no_translate) == "git@github.com:o/r.git"
    other_host = AgentConfig(git_user="bob", git_pass=SECRET, git_host="gitlab.com")
    assert effective_url("git@github.com:o/r.git", other_host) == "git@github.com:o/r.git"
    force = AgentConfig(force_git_ssh_protocol=True, force_git_ssh_port=2222, force_git_ssh_user="u")
    assert effective_url("https://github.com/o/r.git", force) == "ssh://u@github.com:2222/o/r.git"


def test_credentials_only_for_https_on_git_host() -> None:
    config = AgentConfig(git_user="bob", git_pass=SECRET, git_host="github.com")
    assert Credentials.for_url("https://github.com/o/r.git", config) == Credentials("bob", SECRET)
    assert Credentials.for_url("git@github.com:o/r.git", config) == Credentials("bob", SECRET)  # made https
    assert Credentials.for_url("https://gitlab.com/o/r.git", config) is None
    assert Credentials.for_url("https://gitlab.com/o/r.git", AgentConfig()) is None
    assert Credentials.for_url("https://al:pw@gitlab.com/o/r.git", AgentConfig()) == Credentials("al", "pw")
    forced = AgentConfig(git_user="bob", git_pass=SECRET, force_git_ssh_protocol=True)
    assert Credentials.for_url("https://github.com/o/r.git", forced) is None  # ssh: keys, not passwords


# -- checkout ----------------------------------------------------------------------------


def test_dirty_tree_checks_out_exactly(repo: Repo, tmp_path: Path) -> None:
    repo.write("train.py", "import helper\nprint(helper.X)\n")
    repo.write("helper.py", "X = 'untracked'\n")
    repo.write("data.bin", b"\0\x01binary\xff" * 50)
    repo.write("notes.log", "ignored\n")
    (repo.work / "pkg" / "sub" / "run.py").unlink()
    lines: list[str] = []
    cache = VcsCache(tmp_path / "cache")
    folder = checkout(script_of(repo), tmp_path / "task", AgentConfig(), lines.append, cache=cache)
    assert folder == tmp_path / "task"
    assert tree(folder) == tree(repo.work)
    assert not (folder / "notes.log").exists()
    assert git(folder, "rev-parse", "HEAD").strip() == repo.head()
    assert git(folder, "remote", "get-url", "origin").strip() == str(repo.remote)
    out = subprocess.run(["python3", "train.py"], cwd=folder, capture_output=True, text=True, check=True).stdout
    assert out == "untracked\n"
    assert any("applying uncommitted changes" in line for line in lines)


# -- linked checkouts: the worker's own tasks reuse the mirror -------------------------


def linked(script: Script, dest: Path, cache: VcsCache) -> Path:
    return checkout(script, dest, AgentConfig(), lambda _: None, cache=cache, linked=True)


def test_linked_checkouts_share_the_mirror_and_each_have_a_folder(repo: Repo, tmp_path: Path) -> None:
    repo.write("train.py", "print('dirty')\n")
    repo.write("helper.py", "X = 1\n")
    script = script_of(repo)
    cache = VcsCache(tmp_path / "cache")
    one, two = linked(script, tmp_path / "one", cache), linked(script, tmp_path / "two", cache)
    assert one != two and tree(one) == tree(two) == tree(repo.work)
    mirror = cache.mirror_path(str(repo.remote))
    for folder in (one, two):
        assert (folder / ".git").is_file()  # no objects of its own: a worktree of the mirror
        common = Path(git(folder, "rev-parse", "--path-format=absolute", "--git-common-dir").strip())
        assert common == mirror.resolve()
        assert git(folder, "rev-parse", "HEAD").strip() == repo.head()
    assert not list(tmp_path.glob("*.diff")) and not list(tmp_path.glob(".*.diff"))  # the patch file is gone


def test_a_task_writing_its_folder_leaves_the_next_ones_alone(repo: Repo, tmp_path: Path) -> None:
    repo.write("helper.py", "X = 'untracked'\n")
    script = script_of(repo)
    cache = VcsCache(tmp_path / "cache")
    first = linked(script, tmp_path / "first", cache)
    expected = tree(first)
    (first / "train.py").write_text("print('changed by the first task')\n")  # in place, same inode
    (first / "helper.py").unlink()
    (first / "pkg" / "sub" / "run.py").unlink()
    (first / "new.txt").write_text("made by the first task\n")
    git(first, "add", "-A")
    git(first, "commit", "-qm", "the first task commits")
    second = linked(script, tmp_path / "second", cache)
    assert tree(second) == expected
    assert git(second, "rev-parse", "HEAD").strip() == repo.head()
    assert git(second, "status", "--porcelain", "--untracked-files=no") == ""  # nothing but the diff's new file


def test_linked_checkouts_at_once_each_get_their_folder(repo: Repo, tmp_path: Path) -> None:
    repo.write("train.py", "print('dirty')\n")
    script = script_of(repo)
    cache = VcsCache(tmp_path / "cache")
    errors: list[BaseException] = []

    def one(n: int) -> None:
        try:
            linked(script, tmp_path / f"task{n}", cache)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(tree(tmp_path / f"task{n}") == tree(repo.work) for n in range(6))


def test_a_retried_attempt_gets_a_fresh_linked_folder(repo: Repo, tmp_path: Path) -> None:
    script = script_of(repo)
    cache = VcsCache(tmp_path / "cache")
    folder = linked(script, tmp_path / "task", cache)
    (folder / "train.py").write_text("half-done\n")
    shutil.rmtree(folder)  # what the preparing step does before a retry
    again = linked(script, tmp_path / "task", cache)
    assert tree(again) == tree(repo.work)


def test_a_different_diff_gets_its_own_content(repo: Repo, tmp_path: Path) -> None:
    cache = VcsCache(tmp_path / "cache")
    repo.write("train.py", "print('A')\n")
    a = script_of(repo)
    repo.write("train.py", "print('B')\n")
    repo.write("only_b.py", "B = True\n")
    b = script_of(repo)
    assert a.commit == b.commit and a.diff != b.diff
    clean = Script(command=a.command, working_dir=a.working_dir, repo=a.repo, commit=a.commit, repo_dir=".")
    folders = [linked(s, tmp_path / name, cache) for s, name in ((a, "a"), (b, "b"), (clean, "c"))]
    assert [(f / "train.py").read_text() for f in folders] == [
        "print('A')\n",
        "print('B')\n",
        git(repo.work, "show", f"{a.commit}:train.py"),
    ]
    assert [(f / "only_b.py").exists() for f in folders] == [False, True, False]


def test_working_folder_is_the_submitters(repo: Repo, tmp_path: Path) -> None:
    script = script_of(repo, repo.work / "pkg" / "sub")
    folder = checkout(script, tmp_path / "task", AgentConfig(), lambda _: None, cache=VcsCache(tmp_path / "c"))
    assert folder == tmp_path / "task" / "pkg" / "sub" and (folder / "run.py").is_file()


def test_stale_diff_fails_with_gits_message(repo: Repo, tmp_path: Path) -> None:
    repo.write("train.py", "print('local edit')\n")
    script = script_of(repo)
    git(repo.work, "stash", "-q")
    repo.write("train.py", "print('someone else changed this line')\n")
    script.commit = repo.commit()  # the diff was made against the parent
    with pytest.raises(CodeError) as caught:
        checkout(script, tmp_path / "task", AgentConfig(), lambda _: None, cache=VcsCache(tmp_path / "c"))
    assert "git apply failed" in caught.value.message
    assert "patch does not apply" in caught.value.message and "train.py" in caught.value.message


def test_unknown_commit_fails_with_gits_message(repo: Repo, tmp_path: Path) -> None:
    script = script_of(repo)
    script.commit = "0" * 40
    with pytest.raises(CodeError, match="git fetch 000000000000"):
        checkout(script, tmp_path / "task", AgentConfig(), lambda _: None, cache=VcsCache(tmp_path / "c"))


def test_concurrent_checkouts_fetch_once(repo: Repo, tmp_path: Path) -> None:
    repo.write("train.py", "print('v2')\n")
    script = script_of(repo)
    cache = VcsCache(tmp_path / "cache")
    lines: list[str] = []
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            lines.append(line)

    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            checkout(script, tmp_path / f"task{n}", AgentConfig(), say, cache=cache)
        except BaseException as exc:  # reported below
            errors.append(exc)

    at_once(run, 4)
    assert not errors
    assert sum("vcs cache: cloning" in line or "vcs cache: fetching" in line for line in lines) == 1
    assert sum("already cached" in line for line in lines) == 3
    assert [p.name.endswith(".git") for p in cache.root.iterdir() if p.is_dir()] == [True]
    for n in range(4):
        assert tree(tmp_path / f"task{n}") == tree(repo.work)

    # a new commit: fetched into the same mirror, once
    repo.write("pkg/__init__.py", "VALUE = 7\n")
    repo.commit()
    lines.clear()
    checkout(script_of(repo), tmp_path / "task9", AgentConfig(), say, cache=cache)
    assert sum("vcs cache: fetching" in line for line in lines) == 1
    assert (tmp_path / "task9" / "pkg" / "__init__.py").read_text() == "VALUE = 7\n"


def test_cache_can_be_off(repo: Repo, tmp_path: Path) -> None:
    config = AgentConfig(vcs_cache=VcsCacheConfig(enabled=False))
    folder = checkout(script_of(repo), tmp_path / "task", config, lambda _: None)
    assert tree(folder) == tree(repo.work)


def test_cache_path_from_config(tmp_path: Path) -> None:
    from fleet.core.home import Home

    assert VcsCache.from_config(AgentConfig(), Home(tmp_path)).root == tmp_path / "vcs-cache"
    config = AgentConfig(vcs_cache=VcsCacheConfig(path=str(tmp_path / "elsewhere")))
    assert VcsCache.from_config(config, Home(tmp_path)).root == tmp_path / "elsewhere"


def test_repo_dir_cannot_leave_the_checkout(repo: Repo, tmp_path: Path) -> None:
    script = script_of(repo)
    script.repo_dir = "../../etc"
    with pytest.raises(CodeError, match="not inside"):
        checkout(script, tmp_path / "task", AgentConfig(), lambda _: None, cache=VcsCache(tmp_path / "c"))


# -- credentials ---------------------------------------------------------------------------


class _AuthHandler(SimpleHTTPRequestHandler):
    """Git's dumb HTTP protocol behind basic auth (user ``bob``, password SECRET)."""

    expected = "Basic " + base64.b64encode(f"bob:{SECRET}".encode()).decode()

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def private_remote(repo: Repo) -> Iterator[str]:
    git(repo.remote, "update-server-info")
    handler = partial(_AuthHandler, directory=str(repo.remote.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{repo.remote.name}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def git_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    """Every git command the code module runs: its argv and environment."""
    calls: list[tuple[list[str], dict[str, str]]] = []
    real = subprocess.run

    def record(argv: list[str], **kwargs: Any) -> Any:
        calls.append((list(argv), dict(kwargs.get("env") or {})))
        return real(argv, **kwargs)

    monkeypatch.setattr(subprocess, "run", record)
    return calls


def test_config_credentials_reach_git_through_askpass_only(
    repo: Repo, tmp_path: Path, private_remote: str, git_calls: list[tuple[list[str], dict[str, str]]]
) -> None:
    script = script_of(repo)
    script.repo = private_remote
    git_calls.clear()
    lines: list[str] = []
    config = AgentConfig(git_user="bob", git_pass=SECRET)
    folder = checkout(script, tmp_path / "task", config, lines.append, cache=VcsCache(tmp_path / "c"))
    calls = list(git_calls)
    assert tree(folder) == tree(repo.work)
    assert calls and all(SECRET not in " ".join(argv) for argv, _ in calls)
    assert SECRET not in "\n".join(lines)
    askpass = {env.get("GIT_ASKPASS") for _, env in calls}
    assert all(env.get("FLEET_GIT_PASS") == SECRET for _, env in calls)
    assert all(p and not Path(p).exists() for p in askpass)  # removed afterwards
    for mirror in (tmp_path / "c").glob("*.git"):
        assert SECRET not in (mirror / "config").read_text()
    assert SECRET not in (folder / ".git" / "config").read_text()


def test_url_credentials_are_moved_out_of_the_url(
    repo: Repo, tmp_path: Path, private_remote: str, git_calls: list[tuple[list[str], dict[str, str]]]
) -> None:
    script = script_of(repo)
    script.repo = private_remote.replace("://", f"://bob:{SECRET}@")
    lines: list[str] = []
    folder = checkout(script, tmp_path / "task", AgentConfig(), lines.append, cache=VcsCache(tmp_path / "c"))
    assert tree(folder) == tree(repo.work)
    assert all(SECRET not in " ".join(argv) for argv, _ in git_calls)
    assert SECRET not in "\n".join(lines) and "bob:********@" not in "\n".join(lines)


def test_wrong_password_fails_masked_without_prompting(
    repo: Repo, tmp_path: Path, private_remote: str, git_calls: list[tuple[list[str], dict[str, str]]]
) -> None:
    script = script_of(repo)
    wrong = "wr0ng-Pa55"
    script.repo = private_remote.replace("://", f"://bob:{wrong}@")
    lines: list[str] = []
    with pytest.raises(CodeError) as caught:
        checkout(script, tmp_path / "task", AgentConfig(), lines.append, cache=VcsCache(tmp_path / "c"))
    assert "git clone" in caught.value.message and wrong not in caught.value.message
    assert wrong not in "\n".join(lines) and all(wrong not in " ".join(argv) for argv, _ in git_calls)
    # no credentials at all: git must fail, not wait for a prompt
    script.repo = private_remote
    with pytest.raises(CodeError, match="git clone"):
        checkout(script, tmp_path / "task2", AgentConfig(), lines.append, cache=VcsCache(tmp_path / "c"))
