import json
import os
from pathlib import Path

import dispatch_agent as da
from tests.helpers import DispatchCase


class Checkpoints(DispatchCase):
    def setUp(self) -> None:
        super().setUp()
        self.enter_dispatch()

    def test_checkpoint_event(self) -> None:
        da.checkpoint({"next": 2}, step="one")
        da.checkpoint([1])
        self.assertEqual(
            self.events(),
            [
                {"type": "checkpoint", "step": "one", "state": {"next": 2}},
                {"type": "checkpoint", "state": [1]},
            ],
        )

    def test_no_checkpoint_is_none(self) -> None:
        self.assertIsNone(da.load_checkpoint())
        os.environ["DISPATCH_CHECKPOINT"] = str(self.tmp / "missing.json")
        self.assertIsNone(da.load_checkpoint())

    def test_load_the_last_checkpoint(self) -> None:
        path = self.tmp / "checkpoint.json"
        path.write_text('{"type":"checkpoint","step":"s2","state":{"next":3}}')
        os.environ["DISPATCH_CHECKPOINT"] = str(path)
        self.assertEqual(da.load_checkpoint(), {"next": 3})
        event = da.load_checkpoint_event()
        assert event is not None
        self.assertEqual(event["step"], "s2")

    def test_a_checkpoint_that_is_not_an_object_is_an_error(self) -> None:
        path = self.tmp / "checkpoint.json"
        path.write_text("[1]")
        os.environ["DISPATCH_CHECKPOINT"] = str(path)
        with self.assertRaisesRegex(ValueError, "a checkpoint is a JSON object"):
            da.load_checkpoint()


class Output(DispatchCase):
    def setUp(self) -> None:
        super().setUp()
        self.enter_dispatch()

    def test_output_is_json_written_atomically(self) -> None:
        da.set_output({"answer": 42})
        self.assertEqual(json.loads((self.tmp / "output.json").read_text()), {"answer": 42})
        da.set_output("42")
        self.assertEqual(json.loads((self.tmp / "output.json").read_text()), "42")
        leftovers = [p.name for p in self.tmp.iterdir() if p.name.endswith(".tmp")]
        self.assertEqual(leftovers, [])


class Artifacts(DispatchCase):
    def setUp(self) -> None:
        super().setUp()
        self.enter_dispatch()

    def test_bytes_text_and_files(self) -> None:
        src = self.tmp / "src.bin"
        src.write_bytes(b"\x00\x01")
        da.artifact("a.bin", b"\xff")
        da.artifact("notes/b.txt", "héllo")
        written = da.artifact("c.bin", src)
        arts = self.tmp / "artifacts"
        self.assertEqual((arts / "a.bin").read_bytes(), b"\xff")
        self.assertEqual((arts / "notes" / "b.txt").read_text(encoding="utf-8"), "héllo")
        self.assertEqual(written, arts / "c.bin")
        self.assertEqual((arts / "c.bin").read_bytes(), b"\x00\x01")

    def test_bad_names_and_data(self) -> None:
        for name in ["", "/etc/passwd", "../up", "a/../../b", "a\\b"]:
            with self.assertRaises(ValueError, msg=name):
                da.artifact(name, b"x")
        with self.assertRaises(TypeError):
            da.artifact("x", 12)  # type: ignore[arg-type]
        self.assertEqual(list((self.tmp / "artifacts").iterdir()), [])


class Paths(DispatchCase):
    def test_session_and_parcel(self) -> None:
        os.environ["DISPATCH_SESSION_FILE"] = "/s/x.json"
        os.environ["DISPATCH_PARCEL_DIR"] = "/p"
        self.assertEqual(da.session_file(), Path("/s/x.json"))
        self.assertEqual(da.parcel_dir(), Path("/p"))
