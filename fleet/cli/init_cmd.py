"""``fleetctl init``: write a first configuration file; never overwrite one.

Interactive unless ``--non-interactive``: it asks for the git credentials, the
package manager, the API port and an extra index URL; flags pre-answer those
questions.  Answers come from the terminal, or line by line from piped stdin
(an empty line or the end of input takes the default).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import click

from fleet.core import convert as cv
from fleet.core.config import PACKAGE_MANAGERS, Config, config_to_hocon
from fleet.core.errors import EXIT_FAILURE, EXIT_USAGE

log = logging.getLogger(__name__)

HIDDEN = "********"
_check_package_manager = cv.one_of(*PACKAGE_MANAGERS)
_check_port = cv.int_between(0, 65535)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"fleetctl init: {message}", err=True)
    sys.exit(code)


def _refuse_existing(target: Path) -> NoReturn:
    message = f"{target} exists; not overwriting (edit it or pass --config NEW_PATH)"
    _fail(message, EXIT_FAILURE)


def _target_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit.expanduser()
    if os.environ.get("FLEET_CONFIG_FILE"):
        return Path(os.environ["FLEET_CONFIG_FILE"]).expanduser()
    return Path.home() / "fleet.conf"


def _ask(
    label: str,
    default: str,
    check: Callable[[str], Any] = cv.to_str,
    *,
    secret: bool = False,
) -> Any:
    """One answer, converted by ``check``.

    From a terminal: ``click.prompt`` (hidden if ``secret``), asking again after
    a bad answer.  From piped stdin: one line, not echoed; a bad answer exits 2.
    """
    stdin = sys.stdin
    if stdin.isatty():

        def convert(text: str) -> Any:
            try:
                return check(text)
            except ValueError as exc:
                raise click.BadParameter(f"{text!r}: {exc}") from None

        return click.prompt(
            label,
            default=default,
            hide_input=secret,
            show_default=not secret,
            value_proc=convert,
        )
    shown = f" [{default}]" if default and not secret else ""
    click.echo(f"{label}{shown}: ", nl=False)
    line = stdin.readline()
    click.echo("")  # the answer is not echoed; end the prompt line
    return _checked(label, line.rstrip("\r\n") or default, check)


def _checked(option: str, value: str, check: cv.Converter[Any]) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        _fail(f"{option} {value!r}: {exc}", EXIT_USAGE)


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600; fail if it exists (no race with a check)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)


@click.command("init")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="File to write (default: $FLEET_CONFIG_FILE, else ~/fleet.conf).",
)
@click.option("--non-interactive", is_flag=True, help="Ask nothing; use flags and defaults.")
@click.option("--git-user", default=None, help="Git user for https clones.")
@click.option("--git-pass", default=None, help="Git password or token.")
@click.option(
    "--package-manager",
    default=None,
    metavar="|".join(PACKAGE_MANAGERS),
    help="Python package manager for tasks (default uv).",
)
@click.option(
    "--api-port",
    default=None,
    metavar="N",
    help="Port of the local API (default 8765).",
)
@click.option("--home", default=None, metavar="DIR", help="fleet home folder (default ~/.fleet).")
@click.option("--worker-name", default=None, help="Name of this host's workers.")
@click.option(
    "--extra-index-url",
    multiple=True,
    metavar="URL",
    help="Extra package index; repeatable.",
)
def init(
    config_path: Path | None,
    non_interactive: bool,
    git_user: str | None,
    git_pass: str | None,
    package_manager: str | None,
    api_port: str | None,
    home: str | None,
    worker_name: str | None,
    extra_index_url: tuple[str, ...],
) -> None:
    """Write a configuration file with agent { } and fleet { } sections."""
    target = _target_path(config_path)
    if package_manager is not None:
        package_manager = _checked("--package-manager", package_manager, _check_package_manager)
    port = None if api_port is None else _checked("--api-port", api_port, _check_port)
    if target.exists() or target.is_symlink():
        _refuse_existing(target)

    defaults = Config()
    if not non_interactive:
        if git_user is None:
            git_user = _ask("Git user (empty for none / ssh)", "")
        if git_pass is None and git_user:
            git_pass = _ask("Git password or token", "", secret=True)
        if package_manager is None:
            label = f"Package manager ({', '.join(PACKAGE_MANAGERS)})"
            package_manager = _ask(label, "uv", _check_package_manager)
        if port is None:
            port = _ask("API port", str(defaults.fleet.api.port), _check_port)
        if not extra_index_url:
            answer = _ask("Extra index URL (empty for none)", "").strip()
            extra_index_url = (answer,) if answer else ()

    agent, fleet = defaults.agent, defaults.fleet
    config = replace(
        defaults,
        agent=replace(
            agent,
            git_user=git_user or "",
            git_pass=git_pass or "",
            worker_name=worker_name or "",
            package_manager=replace(
                agent.package_manager,
                type=package_manager or agent.package_manager.type,
                extra_index_url=tuple(extra_index_url),
            ),
        ),
        fleet=replace(
            fleet,
            home=home or "",
            api=replace(fleet.api, port=fleet.api.port if port is None else port),
        ),
    )
    pm = config.agent.package_manager
    click.echo(
        f"git_user={config.agent.git_user or '(none)'} "
        f"password={HIDDEN if config.agent.git_pass else '(none)'} "
        f"package_manager={pm.type} api_port={config.fleet.api.port} "
        f"extra_index_url={','.join(pm.extra_index_url) or '(none)'}"
    )
    text = config_to_hocon(config, header="fleet configuration, written by fleetctl init")
    try:
        _write_new(target, text)
    except FileExistsError:
        _refuse_existing(target)
    except OSError as exc:
        _fail(f"cannot write {target}: {exc.strerror or exc}", EXIT_FAILURE)
    log.info("wrote config file %s", target)
    click.echo(f"Wrote {target}")
