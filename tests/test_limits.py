"""
Bounds on what a remote can make a daemon do: token buckets, and log
lines that are escaped, filtered by level and rate-limited per remote.
"""

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from orb.net import logs
from orb.net.limits import TokenBuckets
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode
from tests._memnet import PORT, MemoryNet


class TokenBucketTests(SynchronousTestCase):
    def test_burst_then_rate(self):
        """A key gets its burst at once, then one token per 1/rate seconds."""
        clock = Clock()
        buckets = TokenBuckets(clock, rate_per_s=0.5, burst=3)
        self.assertEqual([buckets.allow("a") for _ in range(4)], [True, True, True, False])
        clock.advance(1.9)
        self.assertFalse(buckets.allow("a"))
        clock.advance(0.1)
        self.assertTrue(buckets.allow("a"))
        self.assertTrue(buckets.allow("b"))  # keys are independent

    def test_remembered_keys_are_bounded(self):
        """However many keys ask, at most max_keys buckets are held."""
        buckets = TokenBuckets(Clock(), rate_per_s=1, burst=1, max_keys=100)
        for i in range(10_000):
            buckets.allow(i)
        self.assertEqual(len(buckets), 100)


class EscapeTests(SynchronousTestCase):
    def test_control_and_bidi_characters_are_escaped(self):
        """Control characters and a right-to-left override in remote text are shown as escapes."""
        text = "ok\x1b[31m red\n\u202eevil\x00"
        self.assertEqual(logs.escape(text), "ok\\u001b[31m red\\n\\u202eevil\\u0000")

    def test_long_text_and_bytes_are_bounded(self):
        """Remote text is cut to the bound with an ellipsis; bytes are shown as a bounded repr."""
        self.assertEqual(logs.escape("x" * 500, 10), "x" * 10 + "…")
        self.assertEqual(logs.escape(b"\x00\xffabc" * 100, 5), repr(b"\x00\xffabc"))

    def test_debug_is_off_by_default(self):
        """ORB's debug lines are dropped at the default level, and appear when the operator asks."""
        log = logs.orb_logger()
        self.addCleanup(logs.set_level, LogLevel.info)
        with capturedLogs() as events:
            log.debug("hidden")
            log.info("shown")
            logs.set_level(LogLevel.debug)
            log.debug("now shown")
        self.assertEqual([e["log_format"] for e in events], ["shown", "now shown"])


class RemoteLogTests(SynchronousTestCase):
    def test_one_remote_cannot_flood_the_log(self):
        """A peer sending 100 ERROR notifications with control characters yields a few escaped lines, no more."""
        net = MemoryNet()
        tracker = net.tracker("10.1.0.1")
        peer = net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], outbound_trackers=1)
        net.run(2)
        record = peer.table.get(tracker.node_id)
        with capturedLogs() as events:
            for _ in range(100):
                record.send(m.Error(code=int(ErrorCode.BUSY), ref_request_id=0, text="\u202egnp.exe\x1b[2J"))
            net.flush()
        lines = [e for e in events if "sent ERROR" in e.get("log_format", "")]
        self.assertLessEqual(len(lines), logs.LOG_LINES_PER_REMOTE_BURST)
        self.assertGreater(len(lines), 0)
        self.assertEqual(lines[0]["text"], "\\u202egnp.exe\\u001b[2J")
        self.assertIn(peer.node_id, tracker.table)  # still served
