"""Durable waits: suspend the run (exit 0) and resume in the next attempt.

A durable wait writes a ``wait`` event and exits the process with code 0
(``raise SystemExit(0)``): code after the call does not run in this attempt.
The run is ``paused`` without a process; when the awaited signal, decision
or timer comes, Dispatch starts the next attempt from the start of the
program with ``$DISPATCH_RESUME`` naming a JSON file that says what woke
it. Calling the same wait again then returns at once (replay, like
LangGraph's ``interrupt()``). Checkpoint before waiting, so the next
attempt can skip the work already done.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, NoReturn, Optional

from ._events import emit

_consumed = False


class SignalTimeout(Exception):
    """No signal ``name`` came within the wait's ``timeout_s``."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no signal `{name}` came in time")
        self.name = name


def resume_info() -> Optional[Dict[str, Any]]:
    """The contents of ``$DISPATCH_RESUME`` (what woke this attempt), or None."""
    path = os.environ.get("DISPATCH_RESUME")
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        value = json.load(f)
    return value if isinstance(value, dict) else None


def take_resume(kind: str, **match: Any) -> Optional[Dict[str, Any]]:
    """The resume file if it is for ``kind`` with fields equal to ``match``
    and no earlier wait of this process took it; it is then taken."""
    global _consumed
    if _consumed:
        return None
    info = resume_info()
    if info is None or info.get("for") != kind:
        return None
    for key, want in match.items():
        got = info.get(key)
        if isinstance(want, (int, float)) and isinstance(got, (int, float)):
            if float(got) != float(want):
                return None
        elif got != want:
            return None
    _consumed = True
    return info


def suspend(kind: str, **fields: Any) -> NoReturn:
    """Writes ``{"type":"wait","for":kind,…}`` and exits the process with 0."""
    emit("wait", **{"for": kind}, **fields)
    raise SystemExit(0)


def wait_for_signal(name: str, timeout_s: Optional[float] = None) -> Any:
    """Waits durably for ``dispatch signal RUN NAME --value JSON``; returns the
    value (None when sent without one).

    The first time, this suspends the run (the process exits 0). In the
    attempt the signal wakes, it returns the value. Raises
    :class:`SignalTimeout` when ``timeout_s`` passed without the signal.
    """
    if not name:
        raise ValueError("a signal needs a non-empty name")
    info = take_resume("signal", name=name)
    if info is None:
        suspend("signal", name=name, timeout_s=timeout_s)
    if info.get("timed_out"):
        raise SignalTimeout(name)
    return info.get("value")


def sleep(seconds: float) -> None:
    """A durable timer: suspends the run for ``seconds`` (the process exits 0)
    and returns in the attempt the timer wakes. Holds no process meanwhile.
    """
    if seconds < 0:
        raise ValueError(f"seconds must not be negative, got {seconds!r}")
    if take_resume("timer", seconds=seconds) is None:
        suspend("timer", seconds=seconds)
