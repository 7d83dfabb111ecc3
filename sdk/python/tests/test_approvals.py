import json
import os
import threading
import time

import dispatch_agent as da
from tests.helpers import DispatchCase


class PollingApproval(DispatchCase):
    def setUp(self) -> None:
        super().setUp()
        self.enter_dispatch()

    def decide_later(self, approval_id: str, doc: dict, delay: float = 0.2) -> threading.Thread:
        directory = self.tmp / "approvals"

        def decide() -> None:
            time.sleep(delay)
            directory.mkdir(exist_ok=True)
            tmp = directory / f".{approval_id}.tmp"
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, directory / f"{approval_id}.json")

        t = threading.Thread(target=decide)
        t.start()
        self.addCleanup(t.join)
        return t

    def test_waits_for_the_decision_file(self) -> None:
        self.decide_later("send-email", {"decision": "approve", "by": "ada", "rationale": "ok", "at": 17})
        started = time.monotonic()
        d = da.request_approval("send-email", "Send it?", timeout_s=3600)
        self.assertGreaterEqual(time.monotonic() - started, 0.15)
        self.assertEqual(d, da.Decision("send-email", True, "ada", "ok", 17))
        self.assertEqual(
            self.events(),
            [{"type": "approval", "id": "send-email", "summary": "Send it?", "timeout_s": 3600}],
        )

    def test_a_denial(self) -> None:
        self.decide_later("x.1", {"decision": "deny", "by": "dispatch"}, delay=0.05)
        d = da.request_approval("x.1", "?")
        self.assertFalse(d.approved)
        self.assertEqual(d.by, "dispatch")
        self.assertNotIn("timeout_s", self.events()[0])

    def test_bad_ids_are_refused(self) -> None:
        for bad in ["", "a/b", "a b"]:
            with self.assertRaises(ValueError):
                da.request_approval(bad, "?")
        self.assertEqual(self.events(), [])


class SuspendingApproval(DispatchCase):
    def setUp(self) -> None:
        super().setUp()
        self.enter_dispatch()

    def test_first_attempt_suspends(self) -> None:
        with self.assertRaises(SystemExit) as exit:
            da.request_approval("pay", "Pay 10 EUR?", timeout_s=60, suspend=True)
        self.assertEqual(exit.exception.code, 0)
        self.assertEqual(
            self.events(),
            [{"type": "wait", "for": "approval", "id": "pay", "summary": "Pay 10 EUR?", "timeout_s": 60}],
        )

    def test_the_next_attempt_replays_the_decision(self) -> None:
        self.resume_with({"for": "approval", "id": "pay", "decision": "approve", "by": "bo", "rationale": "fine"})
        d = da.request_approval("pay", "Pay 10 EUR?", suspend=True)
        self.assertEqual((d.approved, d.by, d.rationale), (True, "bo", "fine"))
        self.assertEqual(self.events(), [])

    def test_a_resume_for_another_approval_suspends_again(self) -> None:
        self.resume_with({"for": "approval", "id": "other", "decision": "approve"})
        with self.assertRaises(SystemExit):
            da.request_approval("pay", "?", suspend=True)
        self.assertEqual(self.events()[0]["id"], "pay")
