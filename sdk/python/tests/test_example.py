"""examples/py-agent runs by hand from a checkout, without Dispatch or pip."""

import json
import os
import subprocess
import sys
import unittest
from pathlib import Path

AGENT = Path(__file__).resolve().parents[3] / "examples" / "py-agent" / "agent.py"


@unittest.skipUnless(AGENT.exists(), "not in a Dispatch checkout")
class ExampleByHand(unittest.TestCase):
    def run_agent(self, payload: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_") and k != "PYTHONPATH"}
        return subprocess.run(
            [sys.executable, str(AGENT)], input=payload, env=env, capture_output=True, text=True, timeout=60
        )

    def test_it_finds_the_sdk_and_prints_events_and_output(self) -> None:
        done = self.run_agent('{"topic":"python"}')
        self.assertEqual(done.returncode, 0, done.stderr)
        output = json.loads(done.stdout.splitlines()[-1])
        self.assertEqual(output, {"topic": "python", "facts": 2, "attempt": 1})
        self.assertIn('dispatch event: {"type":"tool_call","name":"search"', done.stderr)

    def test_a_durable_wait_exits_0_with_its_event(self) -> None:
        done = self.run_agent('{"review":true}')
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn('{"type":"wait","for":"signal","name":"review","timeout_s":3600}', done.stderr)
