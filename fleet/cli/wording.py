"""fleet's own wording for a bad option value, instead of click's.

click says ``'1x' is not a valid float range`` and ``Invalid value for
'--timeout'``.  :func:`reword` gives every option and argument of every
command (once, when the commands are registered) a type of the same class
plus a ``convert`` that reports a bad value as ``expected <form>, got
<value>``; :func:`message` puts the option's name in front.  Help texts and
ranges stay click's, since the types keep their classes.
"""

from __future__ import annotations

from typing import Any

import click

_CLASSES: dict[type[Any], type[Any]] = {}


def expected(kind: click.ParamType[Any]) -> str:
    """The form a value of ``kind`` must have, in words."""
    if isinstance(kind, click.Choice):
        return "one of " + ", ".join(str(c) for c in kind.choices)
    if isinstance(kind, (click.IntRange, click.FloatRange)):
        noun = "an integer" if isinstance(kind, click.IntRange) else "a number"
        return noun + _bounds(kind)
    if isinstance(kind, click.types.IntParamType):
        return "an integer"
    if isinstance(kind, click.types.FloatParamType):
        return "a number"
    if isinstance(kind, click.types.BoolParamType):
        return "true or false"
    return kind.name


def _bounds(kind: click.IntRange | click.FloatRange) -> str:
    if kind.min is not None and kind.max is not None and not kind.min_open and not kind.max_open:
        return f" from {kind.min:g} to {kind.max:g}"
    low = None if kind.min is None else f"{'over' if kind.min_open else 'at least'} {kind.min:g}"
    high = None if kind.max is None else f"{'under' if kind.max_open else 'at most'} {kind.max:g}"
    return " " + " and ".join(x for x in (low, high) if x) if low or high else ""


def _convert(self: click.ParamType[Any], value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
    """The class's own conversion; a bad value in fleet's wording."""
    try:
        return super(_CLASSES[type(self).__mro__[1]], self).convert(value, param, ctx)
    except click.BadParameter:
        raise click.BadParameter(f"expected {expected(self)}, got {value!r}", ctx, param) from None


def _worded(kind: click.ParamType[Any]) -> None:
    """Give ``kind`` a subclass of its own class (same layout) with :func:`_convert`."""
    cls = type(kind)
    if cls in _CLASSES.values() or not cls.__module__.startswith("click."):
        return  # reworded already, or fleet's own type that already says what it expects
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Worded{cls.__name__}", (cls,), {"convert": _convert, "__slots__": ()})
    kind.__class__ = _CLASSES[cls]


_PLAIN = (click.types.StringParamType, click.types.UnprocessedParamType, click.types.Tuple)


def reword(command: click.Command) -> None:
    """Give every parameter of ``command`` (and its subcommands) fleet's wording."""
    for param in command.params:
        flag = isinstance(param, click.Option) and param.is_flag
        if not flag and not isinstance(param.type, _PLAIN):
            _worded(param.type)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            reword(sub)


def message(exc: click.BadParameter) -> str:
    """``--timeout: expected a number over 0, got '1x'`` (one line)."""
    param = exc.param
    if param is None:
        return exc.format_message()
    if isinstance(param, click.Option):
        name = max(param.opts, key=len)
    else:
        name = param.human_readable_name
    return f"{name}: {exc.message}"
