"""The base of the project's exceptions: they cross process boundaries whole, and say if a retry helps.

Ray ships a trial's exception to the driver by pickling it, and copies it on the way; Python
rebuilds an exception by calling its class with ``self.args``, which breaks (or changes the
message of) any exception whose ``__init__`` takes something other than the message.
:class:`ProjectError` rebuilds an instance from its ``args`` and attributes without calling
``__init__``, so message and attributes come back as they were, whatever the signature.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DeterministicError", "ProjectError"]


class ProjectError(Exception):
    """Base of every exception class of the project: survives ``pickle``, ``copy`` and ``deepcopy``."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class DeterministicError(ProjectError):
    """The same inputs fail the same way: bad data, a bad config, an unknown model.

    Retrying cannot help, so a search does not spend its ``max_failures`` on one (those are for
    crashes: a killed process, a lost node, a preempted machine).
    """


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error
