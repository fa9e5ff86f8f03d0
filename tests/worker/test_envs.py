"""Unit tests of the environment pieces: requirements, the cache and its locks,
the commands each manager runs (conda's only this way: it cannot be installed
here), interpreter resolution, settings, the launch decision and the store."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from fleet.core.config import PackageManagerConfig, parse_config_string
from fleet.core.home import Home
from fleet.core.models import Script, Task, TaskRequirements, TaskSpec, Worker, WorkerMode, WorkerState
from fleet.store import open_store
from fleet.worker.envs import choose_builder
from fleet.worker.envs.builder import (
    BuildSettings,
    EnvBuildError,
    Interpreter,
    Log,
    Requirements,
    frozen_lines,
    install_phases,
    run_tool,
)
from fleet.worker.envs.cache import VenvCache, cache_key
from fleet.worker.envs.conda import CondaBuilder
from fleet.worker.envs.poetry import generated_project
from fleet.worker.envs.python import PythonFinder, fleet_python
from fleet.worker.envs.requirements import gather, normalize
from fleet.worker.envs.settings import installer_env_digest, pip_index_url, tool_environment
from fleet.worker.launch import plan_launch
from fleet.worker.launch_outcome import LaunchKind
from tests.factories import running_task
from tests.threads import at_once


def lines_of() -> tuple[Log, list[str]]:
    seen: list[str] = []
    return Log(seen.append), seen


# -- requirements ----------------------------------------------------------------------


def test_normalize_is_the_cache_form() -> None:
    a, ok_a = normalize(["Six>=1.0  # why\n\n# comment\nIDNA[Bar,foo] <4, >=2\nsix>=1.0"])
    b, ok_b = normalize(["idna[foo,bar]>=2,<4", "six >= 1.0"])
    assert a == b == ("idna[bar,foo]<4,>=2", "six>=1.0")
    assert ok_a and ok_b


def test_local_paths_are_absolute_and_not_cacheable(tmp_path: Path) -> None:
    lines, cacheable = normalize(["-e .\n./lib\n-r extra.txt\n-e git+https://h/r.git#egg=r"], tmp_path)
    assert not cacheable
    assert f"-e {tmp_path}" in lines and f"{tmp_path}/lib" in lines and f"-r {tmp_path}/extra.txt" in lines
    assert "-e git+https://h/r.git#egg=r" in lines


def test_requirement_sources_in_order(tmp_path: Path) -> None:
    assert gather(TaskRequirements(), None, "uv") is None
    task = gather(TaskRequirements(file="a\n", packages=("B",)), tmp_path, "uv")
    assert task is not None and task.lines == ("a", "b") and task.source == "task"
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["Requests>=2"]\n')
    found = gather(TaskRequirements(), tmp_path, "uv")
    assert found is not None and found.source == "pyproject.toml" and found.lines == ("requests>=2",)
    poetry = gather(TaskRequirements(), tmp_path, "poetry")
    assert poetry is not None and poetry.project == tmp_path and poetry.digest
    (tmp_path / "requirements.txt").write_text("numpy\n")
    found = gather(TaskRequirements(), tmp_path, "uv")
    assert found is not None and found.source == "requirements.txt" and found.lines == ("numpy",)
    with pytest.raises(ValueError, match="packages \\(a list\\)"):  # a malformed row never reaches gather
        TaskRequirements.from_json({"packages": "six"})


def test_phases_follow_clearml_order() -> None:
    pm = PackageManagerConfig(
        priority_packages=("cython",),
        priority_optional_packages=("a", "b"),
        post_packages=("horovod",),
        post_optional_packages=("c",),
    )
    phases = install_phases(["six"], pm)
    assert [(label, pkgs, optional) for label, pkgs, optional in phases] == [
        ("priority packages", ["cython"], False),
        ("optional priority package", ["a"], True),
        ("optional priority package", ["b"], True),
        ("requirements", ["six"], False),
        ("post packages", ["horovod"], False),
        ("optional post package", ["c"], True),
    ]


# -- the cache ---------------------------------------------------------------------------


def fake_build(counter: list[str], delay: float = 0.0) -> Any:
    def build(path: Path) -> dict[str, Any]:
        time.sleep(delay)
        path.mkdir(parents=True)
        counter.append(path.name)
        return {"frozen": ["x==1"]}

    return build


def test_cache_builds_once_then_reuses(tmp_path: Path) -> None:
    cache, built = VenvCache(tmp_path, 5, 0), []  # type: tuple[VenvCache, list[str]]
    log, _ = lines_of()
    first = cache.acquire("k1", fake_build(built), log)
    assert first is not None and not first.cached and first.info["frozen"] == ["x==1"]
    first.release()
    again = cache.acquire("k1", fake_build(built), log)
    assert again is not None and again.cached and built == ["k1"]
    again.release()


def test_concurrent_acquires_of_one_key_build_once(tmp_path: Path) -> None:
    cache, built = VenvCache(tmp_path, 5, 0), []  # type: tuple[VenvCache, list[str]]
    log, seen = lines_of()
    results: list[bool] = []

    def take(_: int) -> None:
        lease = cache.acquire("same", fake_build(built, delay=0.3), log)
        assert lease is not None
        results.append(lease.cached)
        lease.release()

    at_once(take, 3)
    assert built == ["same"] and sorted(results) == [False, True, True]
    assert any("waiting for another task" in line for line in seen)


def test_eviction_is_lru_and_spares_entries_in_use(tmp_path: Path) -> None:
    cache, built = VenvCache(tmp_path, 2, 0), []  # type: tuple[VenvCache, list[str]]
    log, seen = lines_of()
    held = cache.acquire("a", fake_build(built), log)  # stays in use
    assert held is not None
    for key in ("b", "c"):
        lease = cache.acquire(key, fake_build(built), log)
        assert lease is not None
        lease.release()
        time.sleep(0.01)
    assert sorted(cache.entries()) == ["a", "c"]  # b was the oldest not in use
    held.release()
    lease = cache.acquire("d", fake_build(built), log)
    assert lease is not None
    lease.release()
    assert sorted(cache.entries()) == ["c", "d"]
    assert sum("evicted" in line for line in seen) == 2


def test_free_space_evicts_oldest_until_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, built = VenvCache(tmp_path, 10, 1.0), []  # type: tuple[VenvCache, list[str]]
    log, seen = lines_of()
    for key in ("a", "b", "c"):
        lease = cache.acquire(key, fake_build(built), log)
        assert lease is not None
        lease.release()
        time.sleep(0.01)
    short = iter([True, True, False])  # two evictions make room
    monkeypatch.setattr(VenvCache, "_short_of_space", lambda self: next(short))
    lease = cache.acquire("d", fake_build(built), log)
    assert lease is not None and sorted(cache.entries()) == ["c", "d"]
    lease.release()
    monkeypatch.setattr(VenvCache, "_short_of_space", lambda self: True)
    assert cache.acquire("e", fake_build(built), log) is None  # no room: the caller builds elsewhere
    assert any("not caching" in line for line in seen)


def test_an_unfinished_build_is_removed_and_redone(tmp_path: Path) -> None:
    cache, built = VenvCache(tmp_path, 5, 0), []  # type: tuple[VenvCache, list[str]]
    (tmp_path / "k").mkdir(parents=True)  # killed mid-build: no .ready
    log, _ = lines_of()
    lease = cache.acquire("k", fake_build(built), log)
    assert lease is not None and not lease.cached and built == ["k"]
    lease.release()


def test_cache_key_depends_on_every_input() -> None:
    base = {"manager": "uv", "python": "3.11.7", "requirements": ["six"], "indexes": [""]}
    assert cache_key(base) == cache_key(dict(reversed(list(base.items()))))
    for change in ({"manager": "pip"}, {"python": "3.10.1"}, {"requirements": ["six==1"]}, {"indexes": ["x"]}):
        assert cache_key({**base, **change}) != cache_key(base)


# -- the managers' commands --------------------------------------------------------------


class Recorder:
    def __init__(self, fail: str = "") -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None, log: Log, what: str
    ) -> list[str]:
        self.calls.append(list(argv))
        if self.fail and self.fail in argv:
            raise EnvBuildError(f"{what} failed: no")
        return ["# comment", "six=1.17.0=pyhd3eb1b0_0"]


def settings(**pm: Any) -> BuildSettings:
    return BuildSettings(pm=PackageManagerConfig(**pm), env={"PATH": "/bin"}, cache_dir=None)


def test_conda_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONDA_EXE", "/opt/conda/bin/conda")
    monkeypatch.setattr("os.access", lambda path, mode: True)
    runner = Recorder()
    conda = CondaBuilder(runner)
    log, _ = lines_of()
    env = tmp_path / "env"
    opts = settings(conda_channels=("conda-forge",), post_packages=("extra",))
    conda.create(env, Interpreter("/usr/bin/python3.10", "3.10.12"), opts, log)
    env.mkdir()  # what conda create would have made
    conda.install(env, Requirements(lines=("numpy>=1.20", "pkg @ https://h/p.whl")), opts, log)
    assert conda.freeze(env, opts, log) == ["six=1.17.0=pyhd3eb1b0_0"]
    exe, py = "/opt/conda/bin/conda", str(env / "bin" / "python")
    assert runner.calls[0] == [exe, "create", "-p", str(env), "-y", "--quiet", "-c", "conda-forge", "python=3.10"]
    assert runner.calls[1] == [exe, "install", "-p", str(env), "-y", "--quiet", "-c", "conda-forge", "numpy>=1.20"]
    assert runner.calls[2][:4] == [py, "-m", "pip", "install"]  # the URL requirement goes through pip
    assert (env / "fleet-requirements.txt").read_text() == "extra\n"  # post packages last
    assert runner.calls[4] == [exe, "list", "-p", str(env), "--export"]
    assert conda.activation(env) == {"CONDA_PREFIX": str(env), "CONDA_DEFAULT_ENV": str(env)}


def test_conda_install_failure_falls_back_to_pip(tmp_path: Path) -> None:
    runner = Recorder(fail="install")
    log, seen = lines_of()
    (tmp_path / "env").mkdir()
    with pytest.raises(EnvBuildError):  # pip (also recorded as failing on "install") then fails
        CondaBuilder(runner).install(tmp_path / "env", Requirements(lines=("six",)), settings(), log)
    assert "installing the requirements with pip instead" in "\n".join(seen)
    assert runner.calls[-1][1:4] == ["-m", "pip", "install"]


def test_optional_packages_may_fail(tmp_path: Path) -> None:
    runner = Recorder()

    def flaky(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None, log: Log, what: str) -> list[str]:
        if "optional" in what:
            raise EnvBuildError(f"{what} failed: nope")
        return runner(argv, env=env, cwd=cwd, log=log, what=what)

    from fleet.worker.envs.pip import PipBuilder

    log, seen = lines_of()
    (tmp_path / "env").mkdir()
    opts = settings(priority_optional_packages=("pygobject",), extra_index_url=("https://u:pw@idx/simple",))
    opts = BuildSettings(opts.pm, opts.env, None, "https://main/simple", ("https://u:pw@idx/simple",))
    PipBuilder(flaky).install(tmp_path / "env", Requirements(lines=("six",)), opts, log)
    assert any("pygobject skipped" in line for line in seen)
    (call,) = runner.calls
    assert ["--index-url", "https://main/simple"] == call[call.index("--index-url") : call.index("--index-url") + 2]
    assert "--extra-index-url" in call and "--no-cache-dir" in call


def test_poetry_project_has_a_primary_simple_source() -> None:
    text = generated_project(
        ["six>=1.16", "requests[socks]==2.31 ; python_version > '3'", "pkg @ https://h/p.whl"],
        Interpreter("/x", "3.11.7"),
        settings(),
    )
    assert 'python = ">=3.11,<3.12"' in text
    assert '"six" = { version = ">=1.16" }' in text
    assert '"requests" = { version = "==2.31", extras = ["socks"], markers = "python_version > \\"3\\"" }' in text
    assert '"pkg" = { url = "https://h/p.whl" }' in text
    assert 'url = "https://pypi.org/simple"\npriority = "primary"' in text


def test_a_missing_manager_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    log, seen = lines_of()
    assert choose_builder("conda", Requirements(lines=("six",)), log).name in ("uv", "pip")
    assert "conda is not installed" in seen[0]


# -- running tools: output, failure, secrets -------------------------------------------------


def test_run_tool_masks_secrets_and_names_the_failure() -> None:
    log, seen = lines_of()
    argv = ["sh", "-c", "echo fetching https://user:s3cret@idx/simple; echo 'ERROR: no such package' >&2; exit 1"]
    with pytest.raises(EnvBuildError) as info:
        run_tool(
            [*argv, "https://user:s3cret@idx"], env={"PATH": "/usr/bin:/bin"}, cwd=None, log=log, what="pip install"
        )
    assert info.value.message == "pip install failed: ERROR: no such package"
    text = "\n".join(seen)
    assert "s3cret" not in text and "user:********@idx" in text


def test_frozen_lines_keep_packages_only() -> None:
    noise = ["Using Python 3.11.7 environment at: .", "six==1.17.0", "pkg @ file:///x", "", "# c"]
    assert frozen_lines(noise) == ["pkg @ file:///x", "six==1.17.0"]


# -- interpreters and settings -------------------------------------------------------------


def test_python_probe_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    finder = PythonFinder(tmp_path / "pythons.json", {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    found = finder.probe(sys.executable)
    assert found is not None and found.version == fleet_python().version
    monkeypatch.setattr("subprocess.run", lambda *a, **k: pytest.fail("probed twice"))
    assert finder.probe(sys.executable) == found
    log, seen = lines_of()
    assert finder.find("2.1", "", log.note) == fleet_python()  # not here: a warning, then the default
    assert "Python 2.1 is not installed" in seen[0]
    with pytest.raises(EnvBuildError, match="python_version"):
        finder.find("three", "", log.note)


def test_requested_python_version_from_pyenv(tmp_path: Path) -> None:
    root = Path.home() / ".pyenv"
    wanted = next((v.name[:4] for v in sorted((root / "versions").glob("3.1[02]*"))), None) if root.is_dir() else None
    if wanted is None:
        pytest.skip("no second Python under ~/.pyenv")
    finder = PythonFinder(tmp_path / "pythons.json", {"PATH": "/usr/bin:/bin", "PYENV_ROOT": str(root)})
    found = finder.find(wanted, "", lambda m: None)
    assert found.minor == wanted and "shims" not in found.executable


def test_pip_index_url_from_its_config(tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://mirror/simple\n")
    env = {"HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path / "none"), "PIP_CONFIG_FILE": str(conf)}
    assert pip_index_url(env) == "https://mirror/simple"
    assert pip_index_url({**env, "PIP_INDEX_URL": "https://env/simple"}) == "https://env/simple"


def test_task_env_reaches_the_tools_only_when_enabled() -> None:
    env = {"PATH": "/bin", "PIP_INDEX_URL": "https://task/simple", "TOKEN": "x", "VIRTUAL_ENV": "/v"}
    task_env = {"PIP_INDEX_URL": "https://task/simple", "TOKEN": "x", "PATH": "/bin"}
    off = tool_environment(env, task_env, enable_task_env=False)
    assert "PIP_INDEX_URL" not in off and "TOKEN" not in off and off["PATH"] == "/bin" and "VIRTUAL_ENV" not in off
    on = tool_environment(env, task_env, enable_task_env=True)
    assert on["PIP_INDEX_URL"] == "https://task/simple"
    assert installer_env_digest(task_env, False) == ""
    assert installer_env_digest(task_env, True) != installer_env_digest({"PIP_INDEX_URL": "other"}, True)


# -- the launch decision and the store -----------------------------------------------------


def make_task(tmp_path: Path, **fields: Any) -> Task:
    script = Script(["python", "x.py"], str(tmp_path), setup_script=fields.pop("setup_script", None))
    return running_task(script, **fields)


def test_only_tasks_that_need_it_are_prepared(tmp_path: Path) -> None:
    worker = Worker("h:cpu", "h", WorkerMode.STATIC, None, ["q"], False, WorkerState.BUSY, "", 0.0)
    home = Home(tmp_path / "home")
    config = parse_config_string("", tmp_path / "fleet.conf")
    plain = plan_launch(make_task(tmp_path), worker, {"PATH": "/bin"}, home=home, config=config)
    assert plain.argv == ["python", "x.py"] and plain.kind == LaunchKind.PLAIN
    for fields in ({"requirements": TaskRequirements(packages=("six",))}, {"setup_script": "echo hi"}):
        launch = plan_launch(make_task(tmp_path, **fields), worker, {"PATH": "/bin"}, home=home, config=config)
        assert launch.kind == LaunchKind.PREPARED  # decided once: the runner reads the kind, never the argv
        assert launch.argv[1:3] == ["-m", "fleet.worker.prepare"] and str(home.root) in launch.argv
        assert launch.become is not None  # run in a fork of this (single-threaded) process instead
        assert launch.env["FLEET_TASK_ID"] == "ab" * 16


def test_record_environment(tmp_path: Path) -> None:
    store = open_store(Home(tmp_path))
    task = store.create_task(
        TaskSpec(Script(["true"], "/"), requirements=TaskRequirements(packages=("six",))), None, "t"
    )
    store.record_environment(task.id, True, ["six==1.17.0"], "uv", "3.11.7")
    again = store.get_task(task.id)
    assert again.env_cached is True
    assert again.requirements.to_json() == {
        "packages": ["six"],
        "frozen": ["six==1.17.0"],
        "manager": "uv",
        "python": "3.11.7",
    }
    store.close()
