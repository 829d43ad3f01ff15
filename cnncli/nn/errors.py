"""Errors a user can cause, raised by the engine and by everything built on it.

Every message reads ``<key path>: expected <what>; got <value>`` where a key path
exists, so that a caller can put the file name in front and print one line. The
application (``cnncli.errors``) re-exports these and subclasses :class:`InputError` for
its own errors; a command-line front end catches :class:`InputError` alone.
"""

from __future__ import annotations


class InputError(Exception):
    """Base class of every error caused by user input (a config value, a shape, data, a
    checkpoint, a plugin): exit code 2 in the command line."""

    exit_code = 2


class ConfigError(InputError):
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
        body = self.raw if self.raw is not None else f"expected {self.expected}; got {show(self.got)}"
        text = f"{self.path}: {body}" if self.path else body
        return f"{self.source}: {text}" if self.source else text

    def _copy(self, path: str, source: str | None) -> "ConfigError":
        err = type(self).__new__(type(self))
        err.__dict__.update(self.__dict__)
        ConfigError.__init__(err, path, self.expected, self.got, raw=self.raw, source=source)
        return err

    def at(self, path: str) -> "ConfigError":
        """The same error, said of the key ``path`` instead."""
        return self._copy(path, self.source)

    def in_file(self, source: str | None) -> "ConfigError":
        """The same error, said of the file ``source``."""
        return self._copy(self.path, source)

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
        return self._copy(path, self.source)


class RegistrationError(ConfigError):
    """A component that cannot be registered: a name taken, a required method missing."""

    def __init__(self, message: str):
        super().__init__("", "", None, raw=message)


class ShapeError(InputError):
    """A layer cannot take the shape that the layer before it produces.

    ``index`` is the layer's position in the network (0-based), so that the config
    layer can name ``model.layers[index]``.
    """

    def __init__(self, index: int | None, message: str):
        self.index = index
        self.message = message
        where = f"layers[{index}]: " if index is not None else ""
        super().__init__(where + message)


class DataError(InputError):
    """Input data that cannot be read or does not fit the configuration."""


class CheckpointError(InputError):
    """A checkpoint or saved state that is missing, corrupt, or does not fit the network."""


def show(value: object) -> str:
    """How a received value is written in a message: short, and strings quoted."""
    if isinstance(value, str):
        return repr(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
