"""What a user sees on the console: NeuronScope's own progress lines, and warnings and errors.

Ray prints, besides its real warnings, a progress dump of every Dataset every 10 s when stderr is
not a terminal, an INFO line per Dataset start, "Started a local Ray instance", and a notice that
token authentication is on (it is, by design, for the local cluster). Those go to Ray's log files
only; everything at WARNING or above from the rest of Ray still prints."""

from __future__ import annotations

import logging

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
