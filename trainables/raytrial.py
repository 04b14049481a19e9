"""Ray Tune's face of a trainable: a function of the config that reports through a :class:`RaySession`.

Errors that a retry would only repeat (bad data, a bad config, an unknown model) leave the trial
as :class:`~common.errors.DeterministicError` s, which ``search`` does not retry; anything else
(a CUDA error, a lost file system) is raised as it is and may be retried.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from common.allocator import keep_freed_memory
from common.errors import DeterministicError
from trainables.registry import create_trainable
from trainables.session import RaySession

__all__ = [
    "DETERMINISTIC_TYPES",
    "DeterministicTrialError",
    "deterministic_errors",
    "is_deterministic",
    "ray_trainable",
]

# Exception types a trainable raises for what it was given (a config value, a file's content, a
# model name), never for the machine it runs on: with the same inputs they come back every time.
DETERMINISTIC_TYPES: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    LookupError,
    AttributeError,
    NotImplementedError,
    ImportError,
)


class DeterministicTrialError(DeterministicError):
    """A trial's error that a retry would repeat, with the original exception's type name and message.

    Attributes:
        original_type: The original exception's class name (``ValueError``, ``RuntimeError``).
    """

    def __init__(self, original_type: str, message: str) -> None:
        super().__init__(message)
        self.original_type = original_type

    def __str__(self) -> str:
        return f"{self.original_type}: {self.args[0]}"


def is_deterministic(error: BaseException) -> bool:
    """Whether ``error`` is one a retry would repeat (see :data:`DETERMINISTIC_TYPES`)."""
    if isinstance(error, (DeterministicError, *DETERMINISTIC_TYPES)):
        return True
    # timm.create_model's error for a name it does not know
    return isinstance(error, RuntimeError) and str(error).startswith("Unknown model")


@contextlib.contextmanager
def deterministic_errors() -> Iterator[None]:
    """Re-raise deterministic errors of the block as :class:`DeterministicError` (others unchanged).

    Project errors are already deterministic and pass through as they are; a plain ``ValueError``
    and friends become a :class:`DeterministicTrialError` carrying the original type and message,
    chained to the original.
    """
    try:
        yield
    except DeterministicError:
        raise
    except Exception as err:
        if not is_deterministic(err):
            raise
        raise DeterministicTrialError(type(err).__name__, str(err)) from err


def ray_trainable(name: str) -> type:
    """A function trainable for ``ray.tune.Tuner`` that fits the registered trainable ``name``.

    Each epoch goes to ``ray.tune.report`` with a checkpoint; a restored trial resumes from
    ``ray.tune.get_checkpoint()`` at the next epoch. Give trials CPUs (and a GPU) with
    ``tune.with_resources``: the loader workers and torch threads are sized from that share.
    Deterministic errors leave as :class:`DeterministicError` (:func:`deterministic_errors`).

    Args:
        name: A name from ``list_trainables()``; checked now, not inside the first trial.

    Returns:
        The function ``fn(config) -> None`` as a Tune trainable class whose worker may run the next
        trial too (``TuneConfig(reuse_actors=True)``; see :func:`reusable`).

    Example:
        >>> tuner = ray.tune.Tuner(tune.with_resources(ray_trainable("timm"), {"cpu": 2}), param_space=space)
    """
    create_trainable(name)  # unknown name: fail in the driver, listing the valid ones

    def train(config: dict[str, Any]) -> None:
        keep_freed_memory()  # a worker of a cluster started without the settings: its thresholds at least
        session = RaySession()
        with deterministic_errors():
            create_trainable(name).fit(dict(config), session)
        session.mark("fit done")

    train.__name__ = train.__qualname__ = f"{name}_trainable"
    return reusable(train)


def reusable(fn: Callable[[dict[str, Any]], None]) -> type:
    """``fn`` as a Tune function trainable that ``TuneConfig(reuse_actors=True)`` can reuse.

    Reusing a finished trial's worker for the next trial saves a process start, the imports of
    torch/timm/Ray and a placement group per trial, and keeps the worker's caches warm. Ray's
    ``FunctionTrainable.reset_config`` (2.x) resets the session for the new trial but returns None,
    which Tune reads as "cannot reset" and errors the trial; this subclass returns True when the
    reset happened (False, as Ray does, when the old trial's thread is still running).
    """
    from ray.tune.trainable.function_trainable import wrap_function

    base = wrap_function(fn)

    class ReusableTrainable(base):  # type: ignore[misc, valid-type]
        def reset_config(self, new_config: dict[str, Any]) -> bool:
            return super().reset_config(new_config) is not False

    ReusableTrainable.__name__ = ReusableTrainable.__qualname__ = fn.__name__
    return ReusableTrainable
