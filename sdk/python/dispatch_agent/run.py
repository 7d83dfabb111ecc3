"""What Dispatch tells the agent about its run: payload, id, attempt, paths."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

_UNSET = object()
_payload: Any = _UNSET


def in_dispatch() -> bool:
    """True when the process runs under Dispatch (``$DISPATCH_RUN_ID`` is set)."""
    return bool(os.environ.get("DISPATCH_RUN_ID"))


def payload() -> Any:
    """The run's JSON payload (read once, then cached).

    Read from ``$DISPATCH_PAYLOAD``. Outside Dispatch it is read from stdin
    when stdin is not a terminal (``echo '{"x":1}' | python3 agent.py``);
    otherwise, or when stdin is empty, it is None. Text that is not JSON is
    returned as a string.
    """
    global _payload
    if _payload is _UNSET:
        path = os.environ.get("DISPATCH_PAYLOAD")
        if path:
            text = Path(path).read_text(encoding="utf-8")
        elif sys.stdin is not None and not sys.stdin.isatty():
            text = sys.stdin.read()
        else:
            text = ""
        _payload = _parse(text)
    return _payload


def _parse(text: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def run_id() -> Optional[str]:
    """The run's id (32 hex digits), or None outside Dispatch."""
    return os.environ.get("DISPATCH_RUN_ID") or None


def attempt() -> int:
    """Which attempt of the run this is, from 1 (1 outside Dispatch)."""
    try:
        return int(os.environ.get("DISPATCH_ATTEMPT", "1"))
    except ValueError:
        return 1


def fence() -> Optional[int]:
    """The attempt's fencing token (``$DISPATCH_FENCE``); None outside Dispatch.

    Every later attempt of the run has a higher one. Send it with a side
    effect to a system that keeps the highest token it has seen and refuses
    a lower one: a write from an attempt that was overtaken (its worker cut
    off while another took the run over) is then refused.
    """
    try:
        return int(os.environ["DISPATCH_FENCE"])
    except (KeyError, ValueError):
        return None


def operation() -> Optional[str]:
    """``job``, ``heartbeat`` or ``service``; None outside Dispatch."""
    return os.environ.get("DISPATCH_OPERATION") or None


def _path(var: str) -> Optional[Path]:
    value = os.environ.get(var)
    return Path(value) if value else None


def state_dir() -> Optional[Path]:
    """``$DISPATCH_STATE_DIR``: data shared by every run of the parcel."""
    return _path("DISPATCH_STATE_DIR")


def session_file() -> Optional[Path]:
    """``$DISPATCH_SESSION_FILE`` (runs with ``--session NAME``), else None.

    Its directory exists; the file itself only once an agent wrote it.
    """
    return _path("DISPATCH_SESSION_FILE")


def parcel_dir() -> Optional[Path]:
    """``$DISPATCH_PARCEL_DIR``: the parcel's files (also the working directory)."""
    return _path("DISPATCH_PARCEL_DIR")


def brief() -> Any:
    """The brief (instructions, skills, configs, context, payload), or None."""
    path = _path("DISPATCH_BRIEF")
    if path is None:
        return None
    return json.loads(path.read_text(encoding="utf-8"))
