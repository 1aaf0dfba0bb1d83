"""
What a remote can make a daemon hold: handshakes pending before the
session exists, and output queued for a remote that does not read. Real
cores over in-memory transports on a task.Clock (tests/_memnet.py).
"""

from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from orb.net.adapter import MAX_QUEUED_OUTPUT_BYTES, OUTPUT_STALL_S
from orb.net.sessions import MAX_PENDING_PER_IP
from orb.protocol import messages as m
from tests._memnet import PORT, MemoryNet


class Silent(Protocol):
    """Connects and never says HELLO."""

    lost = False

    def connectionLost(self, reason=None):
        self.lost = True


class PendingTests(SynchronousTestCase):
    def setUp(self):
        self.net = MemoryNet()
        self.tracker = self.net.tracker("10.1.0.1")

    def open_silent(self, host, n):
        protocols = []
        factory = Factory.forProtocol(Silent)
        for _ in range(n):
            d = self.net.connect(host, "10.1.0.1", PORT, factory)
            d.addCallback(protocols.append)
        self.net.flush()
        return protocols

    def test_one_address_holds_a_bounded_number_of_handshakes(self):
        """Connections from one IP that never say HELLO are cut at the per-IP cap; others still get in."""
        silent = self.open_silent("10.9.9.9", MAX_PENDING_PER_IP + 8)
        self.assertEqual(self.tracker.table.pending_count("10.9.9.9"), MAX_PENDING_PER_IP)
        self.assertEqual(sum(p.lost for p in silent), 8)
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], outbound_trackers=1)
        self.net.run(2)
        self.assertIn(peer.node_id, self.tracker.table)

    def test_pending_handshakes_time_out_and_free_their_slots(self):
        """Silent connections are dropped at the handshake timeout, and their slots are free again."""
        self.open_silent("10.9.9.9", MAX_PENDING_PER_IP)
        self.net.run(11)
        self.assertEqual(self.tracker.table.pending_count(), 0)
        again = self.open_silent("10.9.9.9", 1)
        self.assertFalse(again[0].lost)

    def test_at_the_inbound_cap_no_handshake_is_spent(self):
        """A full node refuses a new connection before its handshake."""
        self.tracker.table.max_inbound = 0
        silent = self.open_silent("10.9.9.8", 1)
        self.assertTrue(silent[0].lost)
        self.assertEqual(self.tracker.table.pending_count(), 0)


class BackpressureTests(SynchronousTestCase):
    def setUp(self):
        self.net = MemoryNet()
        self.tracker = self.net.tracker("10.1.0.1")
        self.peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], outbound_trackers=1)
        self.net.run(2)
        self.record = self.tracker.table.get(self.peer.node_id)

    def test_a_remote_that_stops_reading_is_dropped_after_the_stall_limit(self):
        """When the transport reports the remote is not reading, the session is dropped after 30 s of it."""
        self.record.protocol.pauseProducing()  # what the transport does when its buffer fills
        self.net.run(OUTPUT_STALL_S - 1)
        self.assertIs(self.tracker.table.get(self.peer.node_id), self.record)
        self.net.run(2)
        self.assertIsNot(self.tracker.table.get(self.peer.node_id), self.record)  # dropped (the peer may redial)

    def test_reading_again_in_time_keeps_the_session(self):
        """A remote that catches up before the stall limit keeps its session."""
        self.record.protocol.pauseProducing()
        self.net.run(OUTPUT_STALL_S / 2)
        self.record.protocol.resumeProducing()
        self.net.run(OUTPUT_STALL_S)
        self.assertIs(self.tracker.table.get(self.peer.node_id), self.record)

    def test_output_queued_for_a_paused_remote_is_capped(self):
        """While a remote does not read, at most 8 MiB is queued for it; past that it is dropped."""
        self.record.protocol.pauseProducing()
        chunk = m.Delta(kind=int(m.DeltaKind.CHANGES), payload=b"{" + b" " * (2 * 1024 * 1024) + b"}")
        sent = 0
        while self.peer.node_id in self.tracker.table and sent <= MAX_QUEUED_OUTPUT_BYTES + len(chunk.payload):
            self.record.send(chunk)
            sent += len(chunk.payload)
            self.net.flush()
        self.assertNotIn(self.peer.node_id, self.tracker.table)
        self.assertLessEqual(sent, MAX_QUEUED_OUTPUT_BYTES + len(chunk.payload))


class ClosedMidBatchTests(SynchronousTestCase):
    def test_frames_after_a_fatal_one_in_the_same_read_are_not_served(self):
        """When a frame gets its sender discouraged, the frames behind it in the same read get no answer and no traceback."""
        from orb.protocol.frame import encode_frame
        from orb.tracker import registry as reg

        net = MemoryNet()
        t1 = net.tracker("10.1.0.1")
        t2 = net.tracker("10.1.0.2", join=[("10.1.0.1", PORT)])  # admitted: its SYNC gets answers
        net.run(3)
        record = t2.table.get(t1.node_id)
        magic = record.protocol.session.config.magic
        digest = t2.registry.digest().to_bytes()
        batch = encode_frame(magic, m.Delta(kind=int(m.DeltaKind.CHANGES), payload=b"not json")) + b"".join(
            encode_frame(magic, m.Sync(digest=digest), request_id=i) for i in range(1, 6))
        self.assertIsInstance(reg.Digest.from_bytes(digest), reg.Digest)
        record.protocol.transport.write(batch)
        net.flush()
        self.assertTrue(t1.table.is_banned(t2.node_id))
        self.assertEqual(self.flushLoggedErrors(), [])
