"""Writing events: one JSON object per line, appended to ``$DISPATCH_EVENTS``."""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any, Dict, Optional

_lock = threading.Lock()


def events_path() -> Optional[str]:
    """The events file, or None outside Dispatch (``$DISPATCH_EVENTS`` unset)."""
    return os.environ.get("DISPATCH_EVENTS") or None


def to_json(value: Any) -> str:
    """Compact JSON; values JSON cannot represent are written as their ``str()``."""
    return json.dumps(value, separators=(",", ":"), default=str, allow_nan=False)


def emit(event_type: str, **fields: Any) -> Dict[str, Any]:
    """Writes one event of ``event_type`` with ``fields`` (None values left out).

    Inside Dispatch the event is appended to ``$DISPATCH_EVENTS`` as one whole
    line in a single ``write`` on a file opened in append mode, so events from
    several threads or processes never interleave. Outside Dispatch the line
    is written to stderr instead. Returns the event as written.
    """
    event: Dict[str, Any] = {"type": event_type}
    event.update({k: v for k, v in fields.items() if v is not None})
    line = (to_json(event) + "\n").encode("utf-8")
    path = events_path()
    with _lock:
        if path is None:
            sys.stderr.write("dispatch event: " + line.decode("utf-8"))
            sys.stderr.flush()
            return event
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    return event
