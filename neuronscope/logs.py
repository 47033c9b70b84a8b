"""What a user sees on the console: NeuronScope's own progress lines, and warnings and errors.

Stages report progress to a ``Progress`` callback (tests pass their own, e.g. ``list.append``).
``printer()`` is the console's: each message goes through the ``neuronscope.progress`` logger,
formatted here and nowhere else as ``[  12s] message`` on stderr; an application embedding
NeuronScope can route or silence it with ordinary logging configuration.

Ray prints, besides its real warnings, a progress dump of every Dataset every 10 s when stderr is
not a terminal, an INFO line per Dataset start, "Started a local Ray instance", and a notice that
token authentication is on (it is, by design, for the local cluster). Those go to Ray's log files
only; everything at WARNING or above from the rest of Ray still prints."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

Progress = Callable[[str], None]
PROGRESS = logging.getLogger("neuronscope.progress")

# Loggers whose console output is routine on every run (by name, so nothing else is muted).
ROUTINE = {
    "ray.data": logging.WARNING,  # per-Dataset INFO lines
    "ray.data._internal.progress": logging.ERROR,  # "progress bars disabled" (we disable them)
    "ray._private.authentication.authentication_token_setup": logging.ERROR,  # token auth is on
}


def quiet_ray_console() -> None:
    """Route Ray's routine console output away (call before ``ray.init`` and any Dataset)."""
    from ray.data import DataContext

    for name, level in ROUTINE.items():
        logging.getLogger(name).setLevel(level)
    # our own progress callback reports the record stage; Ray's bars would print every 10 s
    DataContext.get_current().enable_progress_bars = False


class _Stderr(logging.StreamHandler):
    """The sys.stderr of the moment: one bound when the handler is made goes stale when it is
    swapped (pytest's capture, tools that redirect it), as logging's own last-resort handler knows."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _Elapsed(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"[{record.created - getattr(record, 'since', record.created):6.0f}s] {record.getMessage()}"


def printer() -> Progress:
    """A callback printing each message as a line on stderr, with the seconds since this call."""
    if not PROGRESS.handlers:
        handler = _Stderr()
        handler.setFormatter(_Elapsed())
        PROGRESS.addHandler(handler)
        PROGRESS.setLevel(logging.INFO)
        PROGRESS.propagate = False  # the console line is the whole output; a root handler would repeat it
    since = time.time()
    return lambda msg: PROGRESS.info(msg, extra={"since": since})
