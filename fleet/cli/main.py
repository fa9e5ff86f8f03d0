"""``fleetctl``: the command line.

Exit codes: 0 success, 1 failure, 2 bad usage — with one line naming the bad
value.  Errors are turned into exit codes here and nowhere else.
"""

from __future__ import annotations

import sys

import click

from fleet import __version__
from fleet.cli.commands import LazyGroup
from fleet.cli.context import Context
from fleet.cli.output import printable
from fleet.cli.wording import message
from fleet.core.errors import EXIT_FAILURE, EXIT_USAGE, FleetError

# Options that take several values after one flag (``--queue a b c``), per command.
MULTI_VALUE = {
    "up": {"--queue", "--uptime", "--downtime"},
    "daemon": {"--queue", "--uptime", "--downtime"},
    "submit": {"--env", "--packages"},
}


def _command_at(argv: list[str]) -> int | None:
    return next(
        (i for i, a in enumerate(argv) if not a.startswith("-") and (i == 0 or argv[i - 1] != "--config")), None
    )


def expand_docker(argv: list[str]) -> list[str]:
    """``daemon --docker [IMAGE] [ARGS ...]`` (ClearML's form) as ``--docker=IMAGE --docker-arg=ARG ...``.

    After ``--docker`` the words that are not options are the image, then its
    docker arguments; a quoted argument with a space (``"-e A=1"``) counts as
    one of them even though it starts with ``-``."""
    at = _command_at(argv)
    if at is None or argv[at] != "daemon" or "--docker" not in argv[at + 1 :]:
        return argv
    i = argv.index("--docker", at + 1)
    j = i + 1
    while j < len(argv) and argv[j] != "--" and (not argv[j].startswith("-") or " " in argv[j].strip()):
        j += 1
    words = argv[i + 1 : j]
    image, args = (words[0], words[1:]) if words and not words[0].startswith("-") else ("", words)
    return [*argv[:i], f"--docker={image}", *(f"--docker-arg={a}" for a in args), *argv[j:]]


def expand_multi(argv: list[str]) -> list[str]:
    """Rewrite ``--queue a b`` as ``--queue a --queue b`` for click, up to ``--``."""
    command_at = _command_at(argv)
    if command_at is None or argv[command_at] not in MULTI_VALUE:
        return argv
    names = MULTI_VALUE[argv[command_at]]
    out = argv[: command_at + 1]
    current: str | None = None
    taken = 0
    rest = argv[command_at + 1 :]
    for i, arg in enumerate(rest):
        if arg == "--":
            out.extend(rest[i:])
            return out
        if arg.startswith("-") and arg != "-":
            current, taken = (arg, 0) if arg in names else (None, 0)
            out.append(arg)
            continue
        if current is not None and (current != "--env" or "=" in arg):
            if taken >= 1:
                out.append(current)
            out.append(arg)
            taken += 1
            continue
        current = None
        out.append(arg)
    return out


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    envvar="FLEET_CONFIG_FILE",
    help="Config file (HOCON). Default: FLEET_CONFIG_FILE, else ~/fleet.conf.",
)
@click.version_option(__version__, prog_name="fleetctl")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """fleet: run queued GPU jobs on this host, each with its exact code and environment."""
    ctx.obj = Context(config_path=config_path)


def main(argv: list[str] | None = None) -> int:
    args = expand_multi(expand_docker(list(sys.argv[1:] if argv is None else argv)))
    try:
        rv = cli.main(args=args, prog_name="fleetctl", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return EXIT_USAGE  # no command given: the help, and bad usage for a script
    except click.exceptions.MissingParameter as exc:
        click.echo(f"fleetctl: error: {exc.format_message()}", err=True)
        return EXIT_USAGE
    except click.BadParameter as exc:
        click.echo(f"fleetctl: error: {printable(message(exc))}", err=True)
        return EXIT_USAGE
    except click.UsageError as exc:
        click.echo(f"fleetctl: error: {exc.format_message()}", err=True)
        return EXIT_USAGE
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        click.echo("fleetctl: aborted", err=True)
        return EXIT_FAILURE
    except FleetError as exc:
        click.echo(f"fleetctl: {printable(exc.message, keep_newlines=True)}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return int(rv) if isinstance(rv, int) else 0


def entry() -> None:
    sys.exit(main())
