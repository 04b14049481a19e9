"""Trial failures: retry crashes, never deterministic errors; describe an error by its original text.

Ray Tune retries a failed trial ``max_failures`` times whatever the error was. A killed process,
a lost node or a preempted machine deserve a retry; bad data, a bad config or an unknown model
fail the same way every time, and three identical failures only cost time and bury the message.
Trials raise those as :class:`~common.errors.DeterministicError` (``trainables.raytrial`` maps
plain ``ValueError`` and friends onto it).

Tune (2.60) has no public hook between "a trial failed" and "retry it": ``TuneController``
calls ``trial.handle_error(exc)`` and then ``trial.should_recover()``, and callbacks only hear
of the retry after it is queued. :func:`install_retry_rule` therefore wraps those two ``Trial``
methods in the driver: ``handle_error`` notes whether the error is deterministic and
``should_recover`` then says no. Every other failure keeps Tune's own rule.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from common.errors import DeterministicError

log = logging.getLogger(__name__)

_MARK = "_sketchsearch_retry_rule"


def error_cause(error: BaseException | None) -> BaseException | None:
    """The exception a trial raised: the cause of Ray's ``RayTaskError`` wrapper, else ``error``."""
    from ray.exceptions import RayTaskError

    if isinstance(error, RayTaskError) and isinstance(getattr(error, "cause", None), BaseException):
        return error.cause
    return error


def is_deterministic_failure(error: BaseException | None) -> bool:
    """Whether a trial's failure is a :class:`DeterministicError` (so a retry would repeat it)."""
    return isinstance(error_cause(error), DeterministicError)


def describe_error(error: BaseException | str | None) -> str:
    """The original error as one line: ``Type: message`` (a multi-line message joined by spaces).

    Ray's wrapper prints a traceback and the last line of it; for an error whose message has
    several lines (a list of bad files, then the fix) that is the fix alone. This unwraps the
    cause and keeps its whole message.
    """
    if error is None:
        return ""
    cause = error_cause(error) if isinstance(error, BaseException) else None
    if cause is None or (cause is error and type(error).__module__.startswith("ray.")):
        # Only text survived (an unpicklable error, or Tune's own): its last line names the error.
        lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
        return lines[-1] if lines else type(error).__name__
    text = " ".join(ln.strip() for ln in str(cause).splitlines() if ln.strip())
    # DeterministicTrialError names the original type itself ("ValueError: ...").
    return text if hasattr(cause, "original_type") else f"{type(cause).__name__}: {text}"


def install_retry_rule() -> None:
    """Make Tune retry failed trials except those whose error is deterministic (idempotent).

    Call it in the driver before ``Tuner.fit``; it changes nothing for other failures.
    """
    from ray.tune.experiment.trial import Trial

    if getattr(Trial, _MARK, False):
        return
    handle_error, should_recover = Trial.handle_error, Trial.should_recover

    @functools.wraps(handle_error)
    def _handle_error(self: Any, exc: BaseException | None = None) -> None:
        handle_error(self, exc)
        # temporary_state is not saved with the experiment: a resumed search decides afresh.
        self.temporary_state.deterministic_failure = is_deterministic_failure(exc)

    @functools.wraps(should_recover)
    def _should_recover(self: Any) -> bool:
        if getattr(self.temporary_state, "deterministic_failure", False):
            log.info("trial %s: not retried, its error is deterministic (max_failures is for crashes)", self)
            return False
        return bool(should_recover(self))

    Trial.handle_error = _handle_error
    Trial.should_recover = _should_recover
    setattr(Trial, _MARK, True)
