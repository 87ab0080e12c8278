"""The failures a user can meet that end a run with one message, never a traceback (docs/design.md section 7)."""
from __future__ import annotations

import signal


class RunError(ValueError):
    """A run cannot go on: an unwritable or occupied run folder, a diverging learner, a refused step.

    The message names what failed (file, step, agent) and is printed as ``<script>: error: <message>``.
    """


class ResumeError(RunError):
    """--resume cannot continue this run (already finished, or checkpoint and config.json disagree)."""


class StopRequested(Exception):
    """SIGTERM or SIGINT stopped the run cleanly; ``signum`` is the signal, ``message`` what was kept."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum, self.message = signum, message

    @property
    def exit_code(self) -> int:
        """128 + the signal number, the shell's convention for a process ended by a signal."""
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name
