"""Validation of values, used by the engine's constructors and by the config layer alike.

Each failure is a :class:`~cnncli.nn.errors.ConfigError` naming the key it was given:
``filters: expected a positive int; got 0``. Numbers must be finite everywhere (``.inf``
and ``.nan`` are refused), so an engine keyword and a config key never disagree.
"""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Iterable

from cnncli.nn.errors import ConfigError, show

#: Sizes beyond this are refused: no array dimension of a real network comes near it,
#: and numpy cannot even describe some larger shapes.
MAX_SIZE = 2**31 - 1


def is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A real number (not a bool), finite or not."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite(value: object) -> bool:
    return is_number(value) and math.isfinite(value)


def positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    """An int from ``minimum`` (1) up to MAX_SIZE."""
    if not is_int(value) or value < minimum or value > MAX_SIZE:
        raise ConfigError(name, "a positive int" if minimum == 1 else f"an int >= {minimum}", value)
    return int(value)


def pair(name: str, value: object, *, minimum: int = 1) -> tuple[int, int]:
    """An int or a two-element list of ints, each at least ``minimum``."""
    kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    expected = f"{kind} or [int, int]"
    if is_int(value) and minimum <= value <= MAX_SIZE:
        return int(value), int(value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(is_int(v) and minimum <= v <= MAX_SIZE for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ConfigError(name, expected, value)


def number(name: str, value: object, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number inside the given bounds (closed unless ``*_open``)."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    expected = "a number" + (" " + " and ".join(parts) if parts else "")
    if not is_finite(value):
        raise ConfigError(name, expected, value)
    v = float(value)
    if low is not None and (v < low or (low_open and v == low)):
        raise ConfigError(name, expected, value)
    if high is not None and (v > high or (high_open and v == high)):
        raise ConfigError(name, expected, value)
    return v


def boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(name, "true or false", value)
    return value


def choice(name: str, value: object, options: Iterable[str], expected: str | None = None) -> str:
    """One of ``options``; a near miss is named (``did you mean``)."""
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        expected = expected or "one of " + ", ".join(options)
        raise ConfigError(name, expected, value,
                          raw=f"expected {expected}; got {show(value)}{did_you_mean(value, options)}")
    return value


def did_you_mean(name: object, options: Iterable[str]) -> str:
    """`` (did you mean 'filters'?)`` for the closest option, or an empty string."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name.lower(), sorted(options), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def known_keys(mapping: dict, allowed: Iterable[str], path: str) -> None:
    """Refuse unknown keys of ``mapping``, naming the closest and listing the allowed ones."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(where, "", None, raw=f"unknown key{did_you_mean(key, allowed)}; allowed keys: "
                                                   f"{', '.join(allowed)}")
