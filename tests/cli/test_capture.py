"""Submit-time capture against real repositories with a local bare remote: the
diff rebuilds the submitter's tree exactly, without touching their index, and
unfetchable commits are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import fleet.cli.capture
from fleet.cli.capture import GitInfo, capture, entry_point
from fleet.core.errors import UsageError
from tests.gitrepo import Repo, git, tree

pytestmark = pytest.mark.usefixtures("git_isolated")  # the repo fixture: tests/conftest.py


def rebuild(info: GitInfo, remote: Path, dest: Path) -> Path:
    """What a worker does, by hand: clone, check out the commit, apply the diff."""
    git(remote.parent, "clone", "-q", "--no-checkout", str(remote), str(dest))
    git(dest, "checkout", "-q", "--detach", info.commit)
    if info.diff:
        patch = dest / ".git" / "task.diff"
        patch.write_text(info.diff)
        git(dest, "apply", "--binary", str(patch))
    return dest


def test_clean_repo(repo: Repo) -> None:
    info = capture(repo.work, ["python", "train.py", "--lr", "0.1"])
    assert info is not None
    assert (info.repo, info.branch, info.commit, info.diff) == (str(repo.remote), "main", repo.head(), "")
    assert (info.entry_point, info.repo_dir, info.remote) == ("train.py", ".", "origin")


def test_outside_a_repository(tmp_path: Path) -> None:
    assert capture(tmp_path, ["python", "x.py"]) is None


def test_dirty_tree_is_rebuilt_exactly(repo: Repo, tmp_path: Path) -> None:
    git(repo.work, "config", "diff.noprefix", "true")  # user settings must not break the patch
    git(repo.work, "config", "diff.external", "false")
    repo.write("train.py", "import pkg, helper\nprint('changed', pkg.VALUE, helper.X)\n")  # unstaged
    repo.write("pkg/__init__.py", "VALUE = 2\n")
    git(repo.work, "add", "pkg/__init__.py")  # staged ...
    repo.write("pkg/__init__.py", "VALUE = 3\n")  # ... and changed again after staging
    repo.write("helper.py", "X = 'untracked module'\n")  # untracked, not ignored
    repo.write("pkg/new/deep.py", "Y = 1\n")
    repo.write("tool.sh", "#!/bin/sh\necho hi\n", mode=0o755)  # executable bit
    repo.write("debug.log", "ignored\n")  # ignored
    repo.write("out/model.pt", b"ignored\0weights")
    repo.write("data.bin", bytes(reversed(range(256))) * 4 + b"\0\xff")  # binary, modified
    repo.write("blob.bin", os.urandom(3000))  # binary, new
    repo.write("latin1.txt", "caf\xe9\n".encode("latin-1"))  # text, not UTF-8
    (repo.work / "pkg" / "sub" / "run.py").unlink()  # deleted
    info = capture(repo.work, ["python3", "train.py"])
    assert info is not None and info.diff
    assert "debug.log" not in info.diff and "model.pt" not in info.diff
    assert "GIT binary patch" in info.diff
    assert "+print('changed', pkg.VALUE, helper.X)" in info.diff  # text stays readable beside binary parts
    rebuilt = rebuild(info, repo.remote, tmp_path / "rebuilt")
    assert tree(rebuilt) == tree(repo.work)
    assert not (rebuilt / "debug.log").exists()


def test_user_index_work_tree_and_objects_untouched(repo: Repo) -> None:
    repo.write("train.py", "print('edited')\n")
    repo.write("staged.py", "S = 1\n")
    git(repo.work, "add", "staged.py")
    repo.write("untracked.py", "U = 1\n")
    objects = repo.work / ".git" / "objects"

    def snapshot() -> tuple[str, bytes, list[str], dict[str, tuple[bytes, bool]]]:
        return (
            git(repo.work, "status", "--porcelain"),
            (repo.work / ".git" / "index").read_bytes(),
            sorted(str(p.relative_to(objects)) for p in objects.rglob("*")),
            tree(repo.work),
        )

    before = snapshot()
    info = capture(repo.work, ["python", "train.py"])
    assert info is not None and "untracked.py" in info.diff and "staged.py" in info.diff
    assert snapshot() == before


def test_unpushed_commit_is_refused(repo: Repo) -> None:
    repo.write("train.py", "print('local only')\n")
    commit = repo.commit(push=False)
    with pytest.raises(UsageError) as caught:
        capture(repo.work, ["python", "train.py"])
    message = caught.value.message
    assert commit[:12] in message and "git push" in message and "--push" in message
    assert "\n" not in message


def test_push_pushes_the_branch_first(repo: Repo) -> None:
    repo.write("train.py", "print('pushed by submit')\n")
    commit = repo.commit(push=False)
    info = capture(repo.work, ["python", "train.py"], push=True)
    assert info is not None and info.commit == commit
    assert git(repo.remote, "rev-parse", "main").strip() == commit


def test_push_on_a_detached_head_is_refused(repo: Repo) -> None:
    git(repo.work, "checkout", "-q", "--detach")
    info = capture(repo.work, ["python", "train.py"], push=True)  # already on the remote: nothing to push
    assert info is not None and info.branch is None
    repo.write("train.py", "print('detached work')\n")
    repo.commit(push=False)
    with pytest.raises(UsageError, match="detached"):
        capture(repo.work, ["python", "train.py"], push=True)


def test_no_remote_is_refused(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main", "solo")
    (tmp_path / "solo" / "a.py").write_text("print(1)\n")
    git(tmp_path / "solo", "add", "-A")
    git(tmp_path / "solo", "commit", "-q", "-m", "x")
    with pytest.raises(UsageError, match="no remote"):
        capture(tmp_path / "solo", ["python", "a.py"])


def test_no_commit_yet_is_refused(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main", "empty")
    with pytest.raises(UsageError, match="no commit"):
        capture(tmp_path / "empty", ["python", "a.py"])


def test_nested_working_dir_and_entry_point(repo: Repo) -> None:
    sub = repo.work / "pkg" / "sub"
    info = capture(sub, ["python3.11", "-u", "-X", "dev", "run.py", "--x"])
    assert info is not None and (info.repo_dir, info.entry_point) == ("pkg/sub", "pkg/sub/run.py")
    info = capture(sub, ["python", "../../train.py"])
    assert info is not None and info.entry_point == "train.py"


def test_credentials_are_stripped_from_the_url(repo: Repo) -> None:
    git(repo.work, "remote", "set-url", "origin", "https://alice:s3cret@git.example.com/org/repo.git")
    info = capture(repo.work, ["python", "train.py"])
    assert info is not None and info.repo == "https://git.example.com/org/repo.git"
    assert "s3cret" not in repr(info) and "alice" not in info.repo


def test_upstream_remote_is_preferred(repo: Repo) -> None:
    git(repo.work, "remote", "rename", "origin", "upstream")
    git(repo.work, "remote", "add", "origin", "https://example.com/fork.git")
    git(repo.work, "branch", "-u", "upstream/main")
    info = capture(repo.work, ["python", "train.py"])
    assert info is not None and (info.remote, info.repo) == ("upstream", str(repo.remote))


def test_too_large_diff_is_refused(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet.cli.capture, "MAX_DIFF_BYTES", 10_000)
    repo.write("big.bin", os.urandom(20_000))
    with pytest.raises(UsageError, match=r"big\.bin.*limit|limit.*big\.bin"):
        capture(repo.work, ["python", "train.py"])
    (repo.work / "big.bin").unlink()
    repo.write("train.py", "x = 1\n" * 5000)  # tracked change: measured after the diff
    with pytest.raises(UsageError, match="MB diff"):
        capture(repo.work, ["python", "train.py"])


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["python", "train.py"], "train.py"),
        (["/usr/bin/python3", "-u", "train.py", "-m", "x"], "train.py"),
        (["python3.12", "-W", "ignore", "-O", "pkg/sub/run.py"], "pkg/sub/run.py"),
        (["./train.py", "--flag"], "train.py"),
        (["python", "-m", "pkg"], None),
        (["python", "-c", "print(1)"], None),
        (["bash", "-c", "python train.py"], None),
        (["python", "missing.py"], None),
        (["python", "/etc/hostname"], None),
        (["python"], None),
    ],
)
def test_entry_point(repo: Repo, command: list[str], expected: str | None) -> None:
    assert entry_point(command, repo.work, repo.work) == expected
