"""The exceptions library code raises. Only CLI modules turn them into a one-line message and an
exit code (``iass.cli.main``); a notebook calling ``train()`` or ``build_corpus`` gets an exception
it can catch, never an exited interpreter.

Every error a user can cause derives from :class:`IassError`, and its message is one line that
names the file, the source or the key at fault.
"""
from __future__ import annotations


class IassError(Exception):
    """Base of every error iass raises for bad input, configuration or state."""


class ConfigError(IassError, ValueError):
    """A params file, an override, a CLI option or a preset is wrong (names the key)."""


class SourceError(IassError, ValueError):
    """A source corpus entry is wrong: missing path, unknown option, unknown source name."""


class CorpusError(IassError):
    """A built corpus is missing, incomplete or does not match what it is used with."""


class RunError(IassError):
    """A training run directory or checkpoint is missing, incompatible or already taken."""


class AudioError(IassError, ValueError):
    """An audio file cannot be read or decoded (names the file and the problem)."""
