import json
import threading

import dispatch_agent as da
from tests.helpers import DispatchCase


class RunFacts(DispatchCase):
    def test_payload_id_and_attempt(self) -> None:
        self.enter_dispatch({"name": "ada"}, attempt=3)
        self.assertEqual(da.payload(), {"name": "ada"})
        self.assertEqual(da.run_id(), "0" * 32)
        self.assertEqual(da.attempt(), 3)
        self.assertEqual(da.fence(), 7)
        self.assertEqual(da.operation(), "job")
        self.assertTrue(da.in_dispatch())
        self.assertEqual(str(da.state_dir()), str(self.tmp / "state"))
        self.assertIsNone(da.session_file())


class Telemetry(DispatchCase):
    def setUp(self) -> None:
        super().setUp()
        self.enter_dispatch()

    def test_usage(self) -> None:
        da.emit_usage("gpt-4o", 100, 20, 0.01)
        da.emit_usage("claude", 5, 0)
        self.assertEqual(
            self.events(),
            [
                {"type": "usage", "model": "gpt-4o", "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.01},
                {"type": "usage", "model": "claude", "input_tokens": 5, "output_tokens": 0, "cost_usd": 0.0},
            ],
        )

    def test_bad_usage_is_refused_before_writing(self) -> None:
        for args in [("m", -1, 0), ("m", 1.5, 0), ("m", 1, 1, -0.1), ("m", 1, 1, float("nan")), ("m", True, 1)]:
            with self.assertRaises(ValueError, msg=str(args)):
                da.emit_usage(*args)  # type: ignore[arg-type]
        self.assertEqual(self.events(), [])

    def test_step_ends_also_on_exception(self) -> None:
        with da.step("plan"):
            pass
        with self.assertRaises(KeyError):
            with da.step("act"):
                raise KeyError("k")
        self.assertEqual(
            self.events(),
            [
                {"type": "step", "name": "plan", "phase": "start"},
                {"type": "step", "name": "plan", "phase": "end"},
                {"type": "step", "name": "act", "phase": "start"},
                {"type": "step", "name": "act", "phase": "end", "error": "KeyError: 'k'"},
            ],
        )

    def test_step_as_decorator(self) -> None:
        @da.step("work")
        def work() -> int:
            return 7

        self.assertEqual(work(), 7)
        self.assertEqual([e["phase"] for e in self.events()], ["start", "end"])

    def test_tool_call(self) -> None:
        da.tool_call("search", {"q": "x"}, ["a"], ok=True, duration_ms=12)
        da.tool_call("bare")
        self.assertEqual(
            self.events(),
            [
                {"type": "tool_call", "name": "search", "input": {"q": "x"}, "output": ["a"], "ok": True, "duration_ms": 12},
                {"type": "tool_call", "name": "bare", "ok": True},
            ],
        )

    def test_tool_context_manager_times_and_records_errors(self) -> None:
        with da.tool("search", input={"q": "x"}) as call:
            call.output = "found"
        with self.assertRaises(RuntimeError):
            with da.tool("fetch"):
                raise RuntimeError("offline")
        ok, failed = self.events()
        self.assertEqual((ok["name"], ok["output"], ok["ok"]), ("search", "found", True))
        self.assertIsInstance(ok["duration_ms"], int)
        self.assertEqual((failed["ok"], failed["output"]), (False, "RuntimeError: offline"))

    def test_tool_decorator_records_arguments_and_result(self) -> None:
        @da.tool
        def add(a: int, b: int = 2) -> int:
            return a + b

        @da.tool("divide")
        def div(a: int, b: int) -> float:
            return a / b

        self.assertEqual(add(1), 3)
        with self.assertRaises(ZeroDivisionError):
            div(1, b=0)
        first, second = self.events()
        self.assertEqual((first["name"], first["input"], first["output"]), ("add", {"a": 1}, 3))
        self.assertEqual((second["name"], second["input"], second["ok"]), ("divide", {"a": 1, "b": 0}, False))

    def test_log_message_error(self) -> None:
        da.log("hello", level="info")
        da.message("hi there")
        da.error("bad input", retryable=False)
        with self.assertRaises(SystemExit) as exit:
            da.fail("gave up")
        self.assertEqual(exit.exception.code, 1)
        self.assertEqual(
            self.events(),
            [
                {"type": "log", "message": "hello", "level": "info"},
                {"type": "message", "role": "assistant", "text": "hi there"},
                {"type": "error", "message": "bad input", "retryable": False},
                {"type": "error", "message": "gave up", "retryable": True},
            ],
        )

    def test_values_json_cannot_hold_become_strings(self) -> None:
        da.tool_call("t", input={"when": object}, output=b"x")
        event = self.events()[0]
        self.assertIsInstance(event["input"]["when"], str)

    def test_concurrent_events_never_interleave(self) -> None:
        big = "x" * 100_000

        def write(n: int) -> None:
            for i in range(20):
                da.log(big, n=n, i=i)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        lines = (self.tmp / "events.jsonl").read_text().splitlines()
        self.assertEqual(len(lines), 80)
        for line in lines:
            self.assertEqual(json.loads(line)["message"], big)

    def test_concurrent_processes_never_interleave(self) -> None:
        import os
        import subprocess
        import sys

        script = "import dispatch_agent as da\nfor i in range(50): da.log('y' * 50000, i=i)\n"
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=root)
        procs = [subprocess.Popen([sys.executable, "-c", script], env=env) for _ in range(3)]
        for p in procs:
            self.assertEqual(p.wait(), 0)
        lines = (self.tmp / "events.jsonl").read_text().splitlines()
        self.assertEqual(len(lines), 150)
        for line in lines:
            self.assertEqual(len(json.loads(line)["message"]), 50000)
