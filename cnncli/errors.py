"""Errors a user can cause. The CLI catches :class:`CnnCliError` and nothing else.

Every message reads ``<key path>: expected <what>; got <value>`` where a key path
exists, so that the CLI can prefix the file name and print one line.
"""

from __future__ import annotations


class CnnCliError(Exception):
    """Base class of every error caused by user input (exit code 2 in the CLI)."""

    exit_code = 2


class ConfigError(CnnCliError):
    """A value at a key path is not what was expected.

    ``path`` is relative to wherever the value came from (a layer's own keyword, or a
    dotted config path); :meth:`prefixed` lets an outer level add its part, so the
    engine can say ``kernel_size`` and the config layer ``model.layers[2].kernel_size``.
    """

    def __init__(self, path: str, expected: str, got: object = None, *, raw: str | None = None,
                 source: str | None = None):
        self.path = path
        self.expected = expected
        self.got = got
        self.raw = raw
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        if self.raw is not None:
            body = self.raw
        else:
            body = f"expected {self.expected}; got {_show(self.got)}"
        text = f"{self.path}: {body}" if self.path else body
        return f"{self.source}: {text}" if self.source else text

    def in_file(self, source: str | None) -> "ConfigError":
        """The same error, said of the file ``source``."""
        return ConfigError(self.path, self.expected, self.got, raw=self.raw, source=source)

    def prefixed(self, prefix: str) -> "ConfigError":
        """The same error with ``prefix`` put before the key path."""
        if not prefix:
            return self
        if not self.path:
            path = prefix
        elif self.path.startswith("["):
            path = prefix + self.path
        else:
            path = f"{prefix}.{self.path}"
        return ConfigError(path, self.expected, self.got, raw=self.raw, source=self.source)


class ShapeError(CnnCliError):
    """A layer cannot take the shape that the layer before it produces.

    ``index`` is the layer's position in the network (0-based), so that the config
    layer can name ``model.layers[index]``.
    """

    def __init__(self, index: int | None, message: str):
        self.index = index
        self.message = message
        where = f"layers[{index}]: " if index is not None else ""
        super().__init__(where + message)


class DataError(CnnCliError):
    """Input data that cannot be read or does not fit the configuration."""


class CheckpointError(CnnCliError):
    """A checkpoint that is missing, corrupt, or does not fit the network."""


def _show(value: object) -> str:
    """How a received value is written in a message: short, and strings quoted."""
    if isinstance(value, str):
        return repr(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
