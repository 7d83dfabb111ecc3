"""Checkpoints, the run's output and artifacts."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Optional, Union

from ._events import emit, to_json


def checkpoint(state: Any, step: Optional[str] = None) -> None:
    """Records a checkpoint: ``state`` (any JSON) is handed to the next
    attempt of the run, which reads it with :func:`load_checkpoint`."""
    emit("checkpoint", step=step, state=state)


def load_checkpoint_event() -> Optional[Dict[str, Any]]:
    """The whole last checkpoint event of an earlier attempt
    (``{"type":"checkpoint","step":…,"state":…}``), or None when there is none.
    """
    path = os.environ.get("DISPATCH_CHECKPOINT")
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        event = json.load(f)
    if not isinstance(event, dict):
        raise ValueError(f"{path}: a checkpoint is a JSON object, got {type(event).__name__}")
    return event


def load_checkpoint() -> Any:
    """The ``state`` of the run's last checkpoint written by an earlier attempt
    (``$DISPATCH_CHECKPOINT``), or None when there is none. Checkpoints
    written by this attempt are not seen here."""
    event = load_checkpoint_event()
    return None if event is None else event.get("state")


def set_output(value: Any) -> None:
    """Writes the run's result to ``$DISPATCH_OUTPUT``, always as JSON (a
    ``str`` becomes a JSON string), atomically (temporary file + rename).

    Outside Dispatch the JSON is printed on stdout.
    """
    text = to_json(value) + "\n"
    path = os.environ.get("DISPATCH_OUTPUT")
    if not path:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    _write_atomically(Path(path), text.encode("utf-8"))


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def artifact(name: str, data: Union[bytes, str, "os.PathLike[str]"]) -> Optional[Path]:
    """Leaves a file named ``name`` in ``$DISPATCH_ARTIFACTS``; Dispatch stores
    it with the run (content-addressed, with sha256 and size) when the attempt
    ends.

    ``data`` is ``bytes``, a ``str`` (written as UTF-8 text) or a path
    (``pathlib.Path`` or other ``os.PathLike``) of a file to copy. ``name``
    is relative and may contain ``/`` (subdirectories are created), but no
    ``..``. Returns the written file's path; outside Dispatch nothing is
    written (a line on stderr says so) and None is returned.
    """
    relative = _artifact_name(name)
    root = os.environ.get("DISPATCH_ARTIFACTS")
    if not root:
        sys.stderr.write(f"dispatch: artifact {name!r} dropped ($DISPATCH_ARTIFACTS is not set)\n")
        return None
    dest = Path(root).joinpath(*relative.parts)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        dest.write_bytes(data)
    elif isinstance(data, str):
        dest.write_text(data, encoding="utf-8")
    elif isinstance(data, os.PathLike):
        shutil.copyfile(os.fspath(data), dest)
    else:
        raise TypeError(f"artifact data must be bytes, str or a path, got {type(data).__name__}")
    return dest


def _artifact_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or not path.parts or "\\" in name:
        raise ValueError(f"invalid artifact name {name!r}: use a relative path without `..`")
    return path
