"""Run folders: a new run needs a new or empty one; a resumed one is cleaned of stale temporary files.

A run killed before its first checkpoint leaves config.json and event files but no checkpoint.pt;
writing a new run there would mix its TensorBoard events with the old ones, so any non-empty folder
is refused unless resumed. A SIGKILL during an atomic write leaves `.<name>.<12 hex>.tmp`
(`homoecon_env.files`); its `remove_stale_temporaries` deletes those on the next start.
"""
from __future__ import annotations

import os
import re
import time

from homoecon_env.files import remove_stale_temporaries

__all__ = ["check_new_run_dir", "check_resumable", "remove_stale_temporaries", "wait_to_sort_after_existing_events"]

EVENT_FILE = re.compile(r"events\.out\.tfevents\.(\d+)\.")


def check_new_run_dir(path: str) -> None:
    """ValueError unless ``path`` is missing or an empty folder."""
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise ValueError(f"{path!r} is a file, not a folder; choose another --run-name/--run-dir")
    entries = sorted(os.listdir(path))
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        hint = ("continue it with --resume" if "checkpoint.pt" in entries else
                "it holds an earlier run's files (no checkpoint to resume from)")
        raise ValueError(f"{path!r} already holds a run ({len(entries)} entries: {shown}); {hint}, "
                         "or choose another --run-name/--run-dir")


def check_resumable(path: str) -> None:
    """ValueError unless ``path`` is a folder holding checkpoint.pt and config.json."""
    if not os.path.isdir(path):
        raise ValueError(f"{path!r} is not a folder (a train.py run folder holds checkpoint.pt and config.json)")
    missing = [name for name in ("checkpoint.pt", "config.json") if not os.path.isfile(os.path.join(path, name))]
    if missing:
        raise ValueError(f"{path!r} must hold checkpoint.pt and config.json; missing {missing}")


def wait_to_sort_after_existing_events(path: str) -> None:
    """Sleep (under a second) until a new event file's name sorts after the run's existing ones.

    TensorBoard reads a folder's event files in name order: events.out.tfevents.<unix seconds>.<host>.
    <pid>.<per-process counter>, compared as text. A file created in the same second as the last one
    may sort before it (pid 10000 < 9999, counter 10 < 9), and the purge that a resumed run's file
    starts with would then be read before the events it is meant to drop.
    """
    stamps = [int(match[1]) for match in map(EVENT_FILE.match, os.listdir(path)) if match]
    while stamps and time.time() < max(stamps) + 1:
        time.sleep(0.05)
