"""Errors a user can cause. The command line catches :class:`CnnCliError` and nothing else.

The error types are the engine's (``cnncli.nn.errors``): a config, shape, data or
checkpoint problem reads the same whether the engine or the application finds it.
``CnnCliError`` is the engine's :class:`~cnncli.nn.errors.InputError`, the root of them
all; the application's own errors below subclass it.

Every message reads ``<file>: <key path>: expected <what>; got <value>`` where a key path
exists, so that the command line prints one line.
"""

from __future__ import annotations

from cnncli.nn.errors import CheckpointError, ConfigError, DataError, InputError, RegistrationError, ShapeError

#: Every error caused by user input (exit code 2 in the command line).
CnnCliError = InputError


class RunFolderError(InputError):
    """A run or sweep folder that is missing, not a run folder, or cannot be written."""


class PluginError(ConfigError):
    """A plugin named by a config that is missing, does not import, or does not fit."""


class CnnCliWarning(UserWarning):
    """Something cnncli says once about a setting that works but may not do what was
    meant (``warnings.warn`` with this category: the library never prints; the command
    line prints it as one ``warning: ...`` line on stderr)."""


__all__ = ["CnnCliError", "InputError", "ConfigError", "RegistrationError", "ShapeError", "DataError",
           "CheckpointError", "RunFolderError", "PluginError", "CnnCliWarning"]
