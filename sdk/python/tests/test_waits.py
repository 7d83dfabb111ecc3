import dispatch_agent as da
from tests.helpers import DispatchCase


class Signals(DispatchCase):
    def setUp(self) -> None:
        super().setUp()
        self.enter_dispatch()

    def test_without_a_resume_it_writes_the_wait_and_exits_0(self) -> None:
        with self.assertRaises(SystemExit) as exit:
            da.wait_for_signal("go", timeout_s=30)
        self.assertEqual(exit.exception.code, 0)
        self.assertEqual(self.events(), [{"type": "wait", "for": "signal", "name": "go", "timeout_s": 30}])

    def test_timeout_is_optional(self) -> None:
        with self.assertRaises(SystemExit):
            da.wait_for_signal("go")
        self.assertEqual(self.events(), [{"type": "wait", "for": "signal", "name": "go"}])

    def test_a_matching_resume_returns_the_value_once(self) -> None:
        self.resume_with({"for": "signal", "name": "go", "value": {"n": 1}})
        self.assertEqual(da.wait_for_signal("go"), {"n": 1})
        self.assertEqual(self.events(), [])
        with self.assertRaises(SystemExit):
            da.wait_for_signal("go")
        self.assertEqual(len(self.events()), 1, "a second wait in the same process suspends")

    def test_a_signal_without_a_value_is_none(self) -> None:
        self.resume_with({"for": "signal", "name": "go", "value": None})
        self.assertIsNone(da.wait_for_signal("go"))

    def test_a_timed_out_signal_raises(self) -> None:
        self.resume_with({"for": "signal", "name": "go", "timed_out": True})
        with self.assertRaises(da.SignalTimeout) as err:
            da.wait_for_signal("go", timeout_s=1)
        self.assertEqual(err.exception.name, "go")

    def test_a_resume_for_something_else_suspends(self) -> None:
        for other in [{"for": "signal", "name": "stop"}, {"for": "timer", "seconds": 5}]:
            self.resume_with(other)
            with self.assertRaises(SystemExit):
                da.wait_for_signal("go")
        self.assertEqual(len(self.events()), 2)

    def test_a_missing_resume_file_is_no_resume(self) -> None:
        import os

        os.environ["DISPATCH_RESUME"] = str(self.tmp / "gone.json")
        self.assertIsNone(da.resume_info())
        with self.assertRaises(SystemExit):
            da.wait_for_signal("go")

    def test_the_first_matching_wait_takes_the_resume(self) -> None:
        self.resume_with({"for": "signal", "name": "go", "value": 1})
        self.assertEqual(da.resume_info(), {"for": "signal", "name": "go", "value": 1})
        self.assertEqual(da.wait_for_signal("go"), 1)
        with self.assertRaises(SystemExit):
            da.sleep(5)


class Timers(DispatchCase):
    def setUp(self) -> None:
        super().setUp()
        self.enter_dispatch()

    def test_sleep_suspends_then_returns_on_resume(self) -> None:
        with self.assertRaises(SystemExit) as exit:
            da.sleep(90)
        self.assertEqual(exit.exception.code, 0)
        self.assertEqual(self.events(), [{"type": "wait", "for": "timer", "seconds": 90}])
        self.resume_with({"for": "timer", "seconds": 90.0})
        self.assertIsNone(da.sleep(90))

    def test_a_timer_of_other_seconds_suspends(self) -> None:
        self.resume_with({"for": "timer", "seconds": 30})
        with self.assertRaises(SystemExit):
            da.sleep(90)

    def test_negative_seconds(self) -> None:
        with self.assertRaises(ValueError):
            da.sleep(-1)
