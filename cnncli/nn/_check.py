"""Validation of keyword arguments; each failure is a ConfigError naming the keyword."""

from __future__ import annotations

import numbers

from cnncli.errors import ConfigError


def is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


#: Sizes beyond this are refused: no array dimension of a real network comes near it,
#: and numpy cannot even describe some larger shapes.
MAX_SIZE = 2**31 - 1


def positive_int(name: str, value: object) -> int:
    if not is_int(value) or value < 1 or value > MAX_SIZE:
        raise ConfigError(name, "a positive int", value)
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
    """A real number inside the given bounds (closed unless ``*_open``)."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    expected = "a number" + (" " + " and ".join(parts) if parts else "")
    if not is_number(value) or value != value or value in (float("inf"), float("-inf")):  # finite only
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


def choice(name: str, value: object, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ConfigError(name, "one of " + ", ".join(options), value)
    return value
