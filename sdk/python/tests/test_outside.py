"""Outside Dispatch (no DISPATCH_* variables) nothing crashes."""

import contextlib
import io
import json
from unittest import mock

import dispatch_agent as da
from tests.helpers import DispatchCase


class OutsideDispatch(DispatchCase):
    def test_facts(self) -> None:
        self.assertFalse(da.in_dispatch())
        self.assertIsNone(da.run_id())
        self.assertEqual(da.attempt(), 1)
        self.assertIsNone(da.fence())
        self.assertIsNone(da.load_checkpoint())
        self.assertIsNone(da.resume_info())
        self.assertIsNone(da.state_dir())
        self.assertIsNone(da.brief())

    def test_payload_from_stdin(self) -> None:
        with mock.patch("sys.stdin", io.StringIO('{"name":"ada"}')):
            self.assertEqual(da.payload(), {"name": "ada"})

    def test_no_payload(self) -> None:
        with mock.patch("sys.stdin", io.StringIO("")):
            self.assertIsNone(da.payload())

    def test_events_go_to_stderr(self) -> None:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            with da.step("s"):
                da.emit_usage("m", 1, 1)
                da.tool_call("t")
                da.checkpoint({"a": 1})
        lines = err.getvalue().splitlines()
        self.assertEqual(len(lines), 5)
        for line in lines:
            prefix, _, doc = line.partition(": ")
            self.assertEqual(prefix, "dispatch event")
            json.loads(doc)

    def test_output_goes_to_stdout_and_artifacts_are_dropped(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            da.set_output({"ok": True})
            self.assertIsNone(da.artifact("a.txt", "x"))
        self.assertEqual(json.loads(out.getvalue()), {"ok": True})
        self.assertIn("dropped", err.getvalue())

    def test_approval_is_denied_at_once(self) -> None:
        with contextlib.redirect_stderr(io.StringIO()):
            d = da.request_approval("x", "?")
        self.assertFalse(d.approved)
        self.assertEqual(d.rationale, "not running under Dispatch")

    def test_a_durable_wait_exits_and_replays_from_a_hand_made_resume_file(self) -> None:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit):
            da.wait_for_signal("go")
        self.assertIn('"type":"wait"', err.getvalue())
        self.resume_with({"for": "signal", "name": "go", "value": 5})
        self.assertEqual(da.wait_for_signal("go"), 5)
