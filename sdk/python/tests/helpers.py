"""A temporary Dispatch environment for the tests."""

from __future__ import annotations

import json
import os
import tempfile
import unittest
from pathlib import Path
from typing import Any, Dict, List
from unittest import mock

import dispatch_agent.run
import dispatch_agent.waits


class DispatchCase(unittest.TestCase):
    """Each test gets fresh files and ``DISPATCH_*`` variables pointing at them."""

    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="dispatch-sdk-"))
        self.addCleanup(_rmtree, self.tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
        patcher = mock.patch.dict(os.environ, env, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)
        dispatch_agent.run._payload = dispatch_agent.run._UNSET
        dispatch_agent.waits._consumed = False

    def enter_dispatch(self, payload: Any = None, attempt: int = 1) -> None:
        """Sets the variables Dispatch sets for an attempt."""
        (self.tmp / "artifacts").mkdir()
        (self.tmp / "payload.json").write_text(json.dumps(payload))
        os.environ.update(
            {
                "DISPATCH_RUN_ID": "0" * 32,
                "DISPATCH_ATTEMPT": str(attempt),
                "DISPATCH_FENCE": str(attempt + 4),
                "DISPATCH_OPERATION": "job",
                "DISPATCH_PAYLOAD": str(self.tmp / "payload.json"),
                "DISPATCH_EVENTS": str(self.tmp / "events.jsonl"),
                "DISPATCH_ARTIFACTS": str(self.tmp / "artifacts"),
                "DISPATCH_OUTPUT": str(self.tmp / "output.json"),
                "DISPATCH_APPROVALS": str(self.tmp / "approvals"),
                "DISPATCH_STATE_DIR": str(self.tmp / "state"),
            }
        )

    def resume_with(self, doc: Dict[str, Any]) -> None:
        """Sets ``$DISPATCH_RESUME`` to a file holding ``doc``."""
        path = self.tmp / "resume.json"
        path.write_text(json.dumps(doc))
        os.environ["DISPATCH_RESUME"] = str(path)

    def events(self) -> List[Dict[str, Any]]:
        path = self.tmp / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
