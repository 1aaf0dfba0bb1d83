"""The executor's private peer <-> zygote framing."""

from twisted.trial.unittest import SynchronousTestCase

from orb.exec._frames import HEADER, FrameDecoder, FrameError, FrameTooLarge, encode


class FrameTests(SynchronousTestCase):
    def test_round_trip(self):
        """A frame decodes to the control object and payload it was encoded from."""
        ctl = {"op": "run", "id": 7, "entry": "main.py"}
        frames = FrameDecoder(1024).feed(encode(ctl, b"\x00payload\xff"))
        self.assertEqual(frames, [(ctl, b"\x00payload\xff")])

    def test_golden_header(self):
        """The header is two big-endian u32 lengths."""
        wire = encode({"op": "stop"}, b"ab")
        # ctl_len=13 (b'{"op":"stop"}'), data_len=2, then JSON, then payload
        self.assertEqual(wire, b"\x00\x00\x00\x0d\x00\x00\x00\x02" + b'{"op":"stop"}' + b"ab")

    def test_byte_at_a_time(self):
        """Frames fed a byte at a time decode the same."""
        wire = encode({"op": "a"}, b"x" * 10) + encode({"op": "b"})
        dec = FrameDecoder(100)
        got = []
        for i in range(len(wire)):
            got += dec.feed(wire[i : i + 1])
        self.assertEqual(got, [({"op": "a"}, b"x" * 10), ({"op": "b"}, b"")])
        self.assertEqual(dec.pending_bytes(), 0)

    def test_oversized_payload_refused_at_header(self):
        """An oversized payload is refused at its header, before buffering."""
        dec = FrameDecoder(max_data_bytes=10)
        with self.assertRaises(FrameTooLarge):
            dec.feed(HEADER.pack(2, 11))

    def test_oversized_control_refused(self):
        """An oversized control object is refused."""
        dec = FrameDecoder(max_data_bytes=10, max_ctl_bytes=8)
        with self.assertRaises(FrameTooLarge):
            dec.feed(HEADER.pack(9, 0))

    def test_not_json(self):
        """A control object that is not JSON is a FrameError."""
        dec = FrameDecoder(10)
        with self.assertRaises(FrameError):
            dec.feed(HEADER.pack(3, 0) + b"{{{")

    def test_not_an_object(self):
        """A control object that is not a JSON object is a FrameError."""
        dec = FrameDecoder(10)
        with self.assertRaises(FrameError):
            dec.feed(HEADER.pack(2, 0) + b"[]")

    def test_refuses_input_after_error(self):
        """After an error the decoder refuses more input."""
        dec = FrameDecoder(10)
        with self.assertRaises(FrameError):
            dec.feed(HEADER.pack(2, 0) + b"[]")
        with self.assertRaises(FrameError):
            dec.feed(encode({"op": "x"}))

    def test_partial_frame_waits(self):
        """A partial frame yields nothing until the rest arrives."""
        wire = encode({"op": "x"}, b"12345")
        dec = FrameDecoder(10)
        self.assertEqual(dec.feed(wire[:-1]), [])
        self.assertEqual(dec.feed(wire[-1:]), [({"op": "x"}, b"12345")])
