"""Small converters for configuration values.

Each converter takes a raw value (as pyhocon parsed it, or a string from the
command line or the environment) and returns a typed value, or raises
:class:`ValueError` whose message says what was expected ("expected a boolean").
The caller adds the key path, the file and the offending value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

T = TypeVar("T")
N = TypeVar("N", int, float)
Converter = Callable[[Any], T]

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError("expected a boolean")


def to_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError("expected an integer")


def to_float(value: Any) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
    if number is None or not math.isfinite(number):
        raise ValueError("expected a number")
    return number


def to_str(value: Any) -> str:
    """Strings; numbers too, since HOCON reads ``cuda_version: 11.8`` as a float."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError("expected a string")


def to_str_tuple(value: Any) -> tuple[str, ...]:
    """A list of strings; a single string is taken as a one-element list."""
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, (list, tuple)):
        try:
            return tuple(to_str(item) for item in value)
        except ValueError:
            pass
    raise ValueError("expected a list of strings")


def to_str_map(value: Any) -> Mapping[str, str]:
    """An object of string values, returned as a read-only mapping."""
    if isinstance(value, Mapping):
        try:
            items = {str(k).strip('"'): to_str(v) for k, v in value.items()}
        except ValueError:
            pass
        else:
            return MappingProxyType(items)
    raise ValueError("expected an object of strings")


def one_of(*choices: str) -> Converter[str]:
    def convert(value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise ValueError(f"expected one of {', '.join(choices)}")

    return convert


def int_between(low: int, high: int) -> Converter[int]:
    def convert(value: Any) -> int:
        try:
            number = to_int(value)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise ValueError(f"expected an integer between {low} and {high}")
        return number

    return convert


def _bounded(parse: Converter[N], accept: Callable[[N], bool], expected: str) -> Converter[N]:
    """``parse`` the value (its own message on a wrong type), then refuse one ``accept`` rejects."""

    def convert(value: Any) -> N:
        number = parse(value)
        if not accept(number):
            raise ValueError(expected)
        return number

    return convert


def number_at_least(low: float) -> Converter[float]:
    return _bounded(to_float, lambda number: number >= low, f"expected a number >= {low:g}")


def number_above(low: float) -> Converter[float]:
    return _bounded(to_float, lambda number: number > low, f"expected a number > {low:g}")


def number_in(low: float, high: float) -> Converter[float]:
    """A number above ``low`` and at most ``high`` (NaN and infinities refused)."""
    return _bounded(to_float, lambda number: low < number <= high, f"expected a number > {low:g} and <= {high:g}")


def int_at_least(low: int) -> Converter[int]:
    return _bounded(to_int, lambda number: number >= low, f"expected an integer >= {low}")


def to_plain_tuple(value: Any) -> tuple[Any, ...]:
    """A list of anything (objects included), kept as plain Python values."""
    if isinstance(value, (list, tuple)):
        return tuple(_plain(item) for item in value)
    raise ValueError("expected a list")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _plain(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def requirement_specs(value: Any) -> tuple[str, ...]:
    """ClearML's ``pip_version``: a specifier, or a list of them, each with an optional
    PEP 508 marker after ``;`` (``"<22.3 ; python_version >= '3.10'"``)."""
    from packaging.markers import InvalidMarker, Marker

    specs = to_str_tuple(value)
    for item in specs:
        _, semi, marker = item.partition(";")
        if semi:
            try:
                Marker(marker.strip())
            except InvalidMarker:
                raise ValueError(f"expected a specifier with a PEP 508 marker; {marker.strip()!r} is not one") from None
    return specs
