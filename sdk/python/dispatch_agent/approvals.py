"""Approvals: ask a human, and wait for the decision."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ._events import emit
from . import waits

POLL_INTERVAL_S = 0.05
_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Decision:
    """A decision on an approval: ``approved``, who decided and why."""

    id: str
    approved: bool
    by: Optional[str] = None
    rationale: Optional[str] = None
    at: Optional[int] = None
    """When, in milliseconds since the epoch (polling mode only)."""

    @classmethod
    def from_json(cls, approval_id: str, doc: Dict[str, Any]) -> "Decision":
        return cls(
            id=approval_id,
            approved=doc.get("decision") == "approve",
            by=doc.get("by"),
            rationale=doc.get("rationale"),
            at=doc.get("at"),
        )


def request_approval(
    id: str,
    summary: str,
    timeout_s: Optional[float] = None,
    suspend: bool = False,
) -> Decision:
    """Asks for approval ``id`` and returns the decision.

    Someone decides with ``dispatch approve RUN ID`` or ``dispatch deny RUN
    ID``; after ``timeout_s`` seconds without a decision Dispatch denies it.

    By default the process keeps running: the ``approval`` event pauses the
    run and this call polls ``$DISPATCH_APPROVALS/<id>.json`` every 50 ms
    until the decision appears. Outside Dispatch (``$DISPATCH_APPROVALS``
    unset) it returns a denial at once.

    With ``suspend=True`` it is a durable wait (see :mod:`dispatch_agent.waits`):
    the process exits 0 and the decision wakes the next attempt, in which
    this call returns it. Code after the call does not run in the first
    attempt: checkpoint before.
    """
    if not _ID.match(id):
        raise ValueError(f"invalid approval id {id!r}: use letters, digits, `-`, `_` and `.`")
    if suspend:
        return _durable(id, summary, timeout_s)
    directory = os.environ.get("DISPATCH_APPROVALS")
    emit("approval", id=id, summary=summary, timeout_s=timeout_s)
    if not directory:
        return Decision(id, False, "dispatch-agent", "not running under Dispatch")
    path = os.path.join(directory, f"{id}.json")
    while True:
        doc = _read(path)
        if doc is not None:
            return Decision.from_json(id, doc)
        time.sleep(POLL_INTERVAL_S)


def _durable(id: str, summary: str, timeout_s: Optional[float]) -> Decision:
    info = waits.take_resume("approval", id=id)
    if info is None:
        waits.suspend("approval", id=id, summary=summary, timeout_s=timeout_s)
    return Decision.from_json(id, info)


def _read(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # not written completely yet; try again
    return doc if isinstance(doc, dict) else None
