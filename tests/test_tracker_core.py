"""
The tracker core, driven without sockets: real cores joined by in-memory
transports on a task.Clock (tests/_memnet.py). Join, announce, dial-back,
departures and expiry, and federation sync.
"""

import attrs
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from orb.net.sessions import Reachability
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, Role
from orb.protocol.messages import MessageType
from tests import _records as records
from tests._memnet import PORT, MemoryNet


class JoinTests(SynchronousTestCase):
    def setUp(self):
        self.net = MemoryNet()
        self.tracker = self.net.tracker("10.1.0.1")

    def test_peer_enters_the_registry_with_its_first_announce(self):
        """A joining peer is listed at its tracker, homed there, with the address it advertises."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)])
        self.net.run(2)
        record = self.tracker.registry.peer(peer.node_id)
        self.assertIsNotNone(record)
        self.assertEqual(record.home, self.tracker.node_id)
        self.assertEqual(list(record.addresses), [("10.2.0.1", PORT)])

    def test_no_announce_no_registry_entry(self):
        """A session alone does not register a peer: only its ANNOUNCE does (RFC 8.6)."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)])
        peer.homing.announce = lambda: None  # a peer that never announces
        peer.homing.set_primary = lambda record: setattr(peer.homing, "primary", record)
        self.net.run(2)
        self.assertIn(peer.node_id, self.tracker.table)
        self.assertIsNone(self.tracker.registry.peer(peer.node_id))

    def test_announced_functions_and_load_are_recorded(self):
        """The registry shows the fids and load a peer announces."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)])
        peer.homing.functions = {b"\x01" + bytes(32): 3}
        peer.homing.load_permille = 250
        self.net.run(31)  # the next periodic ANNOUNCE
        record = self.tracker.registry.peer(peer.node_id)
        self.assertEqual(len(record.functions), 1)
        self.assertEqual(list(dict(record.functions).values()), [3])

    def test_listening_peer_is_dialled_back_and_reachable(self):
        """The tracker dials the advertised address back; a peer that answers is reachable on both sides."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)])
        self.net.run(2)
        self.assertEqual(self.tracker.membership.reachability[peer.node_id], Reachability.REACHABLE)
        self.assertEqual(self.tracker.registry.peer(peer.node_id).reachability, "reachable")
        self.assertIs(peer.reachability, Reachability.REACHABLE)

    def test_unreachable_peer_is_relayed(self):
        """A peer nobody can dial is relayed, in the tracker's registry and in its own view."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], listen=False)
        self.net.run(12)
        self.assertEqual(self.tracker.registry.peer(peer.node_id).reachability, "relayed")
        self.assertIs(peer.reachability, Reachability.RELAYED)

    def test_departed_peer_is_dropped_after_the_grace(self):
        """A home peer whose session ends is out of service after a 1 s grace, not after the 90 s TTL."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)])
        self.net.run(2)
        self.net.kill(peer)
        self.net.run(0.5, step_s=0.1)
        self.assertIsNotNone(self.tracker.registry.peer(peer.node_id))
        self.net.run(1, step_s=0.1)
        self.assertIsNone(self.tracker.registry.peer(peer.node_id))
        self.assertFalse(self.tracker.registry.stored("peer", peer.node_id.hex()).connected)

    def test_unserved_request_is_unsupported(self):
        """FETCH to a tracker that keeps no packages gets ERROR(unsupported) and the session stays."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)])
        self.net.run(2)
        record = peer.table.get(self.tracker.node_id)
        failures = []
        for _ in range(10):
            record.request(m.Fetch(fid=b"\x01" + bytes(32), offset=0, length=1)).addErrback(failures.append)
        self.net.run(1)
        self.assertEqual([f.value.code for f in failures], [ErrorCode.UNSUPPORTED] * 10)
        self.assertIn(peer.node_id, self.tracker.table)

    def test_a_proof_for_a_challenge_never_sent_is_refused(self):
        """A PROOF that answers no CHALLENGE of the tracker gets ERROR(unexpected); the session and registry stay."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)])
        self.net.run(2)
        record = peer.table.get(self.tracker.node_id)
        with capturedLogs() as events:
            record.protocol.send(m.Proof(fid=b"\x01" + bytes(32), digest=bytes(32)), response_to=4242)
            self.net.run(1)
        self.assertIn(peer.node_id, self.tracker.table)
        self.assertIsNotNone(self.tracker.registry.peer(peer.node_id))
        self.assertGreater(self.tracker.table.get(peer.node_id).score, 0)  # it counts as misbehaviour
        said = [e for e in events if e.get("code") == "unexpected" and "answers no request" in e.get("text", "")]
        self.assertTrue(said, "the peer is told ERROR(unexpected): PROOF answers no request")

    def test_metrics_count_the_real_bytes_of_each_frame(self):
        """/metrics byte counters add up each frame's real size, header included: one ANNOUNCE is 16 + body."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)])
        peer.homing.functions = {b"\x01" + bytes(32): 3}
        self.net.run(2)
        before = self.tracker.stats.byte_totals().get(("in", "ANNOUNCE"), 0)
        peer.homing.announce()
        self.net.flush()
        announce = m.Announce(seq=1, time=1, load_permille=0, roles=1, listen=[m.Endpoint("10.2.0.1", PORT)],
                              functions=[m.FunctionEntry(b"\x01" + bytes(32), 3)], signature=bytes(64))
        self.assertEqual(self.tracker.stats.byte_totals()[("in", "ANNOUNCE")] - before,
                         16 + len(announce.encode_body()))
        self.assertGreater(self.tracker.stats.byte_totals()[("out", "PING")], 0)

    def test_every_served_type_has_a_handler_in_the_wiring(self):
        """The tracker's dispatch table names each type it serves, and nothing else."""
        self.assertEqual(set(self.tracker.table.handlers), {
            MessageType.GETADDR, MessageType.ADDR, MessageType.ANNOUNCE, MessageType.SYNC, MessageType.DELTA,
            MessageType.LOOKUP, MessageType.INVOKE, MessageType.LOGS, MessageType.RELAY, MessageType.CANCEL,
            MessageType.REVOKE, MessageType.SECRET,
            MessageType.NAME, MessageType.DEPRECATE})


class FederationTests(SynchronousTestCase):
    def setUp(self):
        self.net = MemoryNet()
        self.t1 = self.net.tracker("10.1.0.1")
        self.t2 = self.net.tracker("10.1.0.2", join=[("10.1.0.1", PORT)])

    def test_trackers_link_and_list_each_other(self):
        """A tracker started with --join links to the other; each lists the other as connected."""
        self.net.run(3)
        self.assertIn(self.t2.node_id, self.t1.table)
        self.assertIn(self.t1.node_id, {t.node_id for t in self.t2.registry.trackers()})
        self.assertIn(self.t2.node_id, {t.node_id for t in self.t1.registry.trackers()})

    def test_a_peer_registered_at_one_tracker_appears_at_the_other(self):
        """Registry changes federate: the other tracker lists the peer, homed at its first tracker."""
        self.net.run(3)
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], outbound_trackers=1)
        self.net.run(3)
        record = self.t2.registry.peer(peer.node_id)
        self.assertIsNotNone(record)
        self.assertEqual(record.home, self.t1.node_id)

    def test_sync_on_link_brings_a_late_tracker_up_to_date(self):
        """A tracker that links after peers registered gets them by SYNC, not only by later pushes."""
        net = MemoryNet()
        t1 = net.tracker("10.1.0.1")
        peers = [net.peer(f"10.2.{i}.1", trackers=[("10.1.0.1", PORT)], outbound_trackers=1) for i in range(3)]
        net.run(3)
        late = net.tracker("10.1.0.9", join=[("10.1.0.1", PORT)])
        net.run(3)
        self.assertEqual({p.node_id for p in peers} <= {r.node_id for r in late.registry.peers()}, True)
        self.assertIn(late.node_id, t1.table)

    def test_peers_of_a_dead_tracker_expire_elsewhere(self):
        """When a home tracker dies, the other tracker drops its peers that do not re-home."""
        self.net.run(3)
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], outbound_trackers=1)
        self.net.run(3)
        peer.connections.maintain = lambda: None  # it will not find another tracker
        self.net.kill(self.t1)
        self.net.kill(peer)
        self.assertIsNotNone(self.t2.registry.peer(peer.node_id))
        self.net.run(2 * 90 + 10, step_s=5)
        self.assertIsNone(self.t2.registry.peer(peer.node_id))

    def test_sync_is_rate_limited_per_link(self):
        """An admitted tracker that SYNCs in a loop gets its burst answered, then ERROR(rate_limited)."""
        from orb.tracker.federation import SYNC_BURST

        self.net.run(3)
        record = self.t2.table.get(self.t1.node_id)
        outcomes = []
        for _ in range(SYNC_BURST + 5):
            d = record.request(m.Sync(digest=self.t2.registry.digest().to_bytes()))
            d.addCallbacks(lambda delta: outcomes.append("delta"), lambda f: outcomes.append(f.value.code))
        self.net.flush()
        self.assertEqual(outcomes.count(ErrorCode.RATE_LIMITED), 5 + 1)  # the link's own first SYNC took one
        self.assertIn("delta", outcomes)
        self.assertIn(self.t2.node_id, self.t1.table)

    def test_a_second_snapshot_within_the_window_is_refused(self):
        """A tracker sends one link at most one full snapshot a minute; the next ask gets ERROR(rate_limited)."""
        from orb.tracker import registry as reg

        self.net.run(3)
        record = self.t2.table.get(self.t1.node_id)
        mine = self.t1.registry.digest()
        stale = reg.Digest(known=dict(mine.known), state_hash=bytes(32)).to_bytes()  # same log, other state
        got = []
        for _ in range(2):
            record.request(m.Sync(digest=stale)).addCallbacks(
                lambda d: got.append(d.kind), lambda f: got.append(f.value.code))
            self.net.flush()
        self.assertEqual(got, [int(m.DeltaKind.SNAPSHOT), ErrorCode.RATE_LIMITED])
        self.net.run(61, step_s=5)
        mine = self.t1.registry.digest()  # t1 has re-signed its own record since
        stale = reg.Digest(known=dict(mine.known), state_hash=bytes(32)).to_bytes()
        record.request(m.Sync(digest=stale)).addCallbacks(lambda d: got.append(d.kind), lambda f: got.append(f))
        self.net.flush()
        self.assertEqual(got[-1], int(m.DeltaKind.SNAPSHOT))

    def test_in_a_star_the_leaves_keep_each_others_peers(self):
        """Two trackers admitted only by a hub keep listing each other's peers: no judge of a tracker it never sees."""
        net = MemoryNet()
        hub = net.tracker("10.1.0.1", admitted=False)
        left = net.tracker("10.1.0.2", join=[("10.1.0.1", PORT)], admitted=False)
        right = net.tracker("10.1.0.3", join=[("10.1.0.1", PORT)], admitted=False)
        hub.federation.admitted |= {left.node_id, right.node_id}
        peer = net.peer("10.2.0.3", trackers=[("10.1.0.3", PORT)], outbound_trackers=1)
        peer.connections.maintain = lambda: None  # it stays homed at the right leaf
        net.run(5)
        gaps = []
        for second in range(0, 400, 5):
            net.run(5, step_s=1)
            gaps += [(second, t.local.advertise) for t in (hub, left) if t.registry.peer(peer.node_id) is None]
        self.assertEqual(gaps, [])

    def test_a_large_delta_is_applied_in_paced_batches(self):
        """3,000 changes from a link are applied 200 at a time, at most 2,000 a second, and all arrive."""
        from orb.tracker.federation import APPLY_BATCH, APPLY_CHANGES_PER_S

        net = MemoryNet()
        t1 = net.tracker("10.1.0.1")
        t2 = net.tracker("10.1.0.2")
        now = int(net.clock.seconds())
        for i in range(3000):
            t2.registry.announce_peer(records.statement(records.key(i), t2.node_id, time=now,
                                                        addresses=[(f"10.7.{i // 250}.{i % 250 + 1}", 7401)]))
        t1.federation.bootstrap = (("10.1.0.2", PORT),)
        applied = []
        original = t1.registry.apply_remote

        def counting(change, now=None, link=None):
            applied.append(net.clock.seconds())
            return original(change, now, link)

        t1.registry.apply_remote = counting
        net.run(3.5, step_s=0.05)
        start = applied[0]
        self.assertGreaterEqual(len(applied), 3000)
        for second in (0.25, 0.5, 1.0):
            done = sum(1 for t in applied if t < start + second)
            self.assertLessEqual(done, APPLY_CHANGES_PER_S * second + APPLY_BATCH)
        self.assertEqual(sum(1 for p in t1.registry.peers() if p.home == t2.node_id), 3000)

    def test_snapshot_parts_wait_for_the_remote_to_read(self):
        """A snapshot's next part is sent only once the remote has read the one before; all parts arrive."""
        from orb.tracker import registry as reg

        self.net.run(3)
        parts = self.t1.registry.snapshot_parts() * 3  # three parts of the same state
        self.t1.registry.snapshot_parts = lambda: list(parts)
        t1_side = self.t1.table.get(self.t2.node_id)
        received = []
        original = self.t2.federation.apply
        self.t2.federation.apply = lambda record, message: (received.append(message.kind), original(record, message))
        send = t1_side.protocol.send

        def send_then_fill(message, response_to=0):
            send(message, response_to)
            if isinstance(message, m.Delta) and message.kind == m.DeltaKind.SNAPSHOT:
                t1_side.protocol.pauseProducing()  # what the transport does when its buffer fills

        t1_side.protocol.send = send_then_fill
        mine = self.t2.registry.digest()
        stale = reg.Digest(known=dict(mine.known), state_hash=bytes(32)).to_bytes()
        answer = self.t2.table.get(self.t1.node_id).request(m.Sync(digest=stale))
        answer.addCallback(lambda delta: received.append(("answer", delta.kind)))
        self.net.run(1)
        self.assertEqual(len(received), 1)  # the first part only
        for _ in range(2):
            t1_side.protocol.resumeProducing()  # the remote read it
            self.net.run(0.5)
        self.assertEqual(received, [int(m.DeltaKind.SNAPSHOT)] * 2 + [("answer", int(m.DeltaKind.SNAPSHOT))])

    def test_delta_from_a_peer_is_refused_with_an_error(self):
        """A DELTA from a non-tracker is answered with ERROR(denied) before the close, and changes nothing."""
        self.net.run(3)
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], outbound_trackers=1)
        self.net.run(2)
        before = self.t1.registry.digest().to_bytes()
        record = peer.table.get(self.t1.node_id)
        with capturedLogs() as events:
            record.send(m.Delta(kind=int(m.DeltaKind.CHANGES), payload=b"{}"))
            self.net.flush()
        self.assertNotIn(peer.node_id, self.t1.table)
        self.assertEqual(self.t1.registry.digest().to_bytes(), before)
        self.assertTrue(self.t1.table.is_banned(peer.node_id))
        received = [e.get("code") for e in events if "sent ERROR" in e.get("log_format", "")]
        self.assertEqual(received, ["denied"])



class AdmissionTests(SynchronousTestCase):
    """Claiming the tracker role in HELLO is not enough to federate (RFC 8.6)."""

    def setUp(self):
        self.net = MemoryNet()
        self.t1 = self.net.tracker("10.1.0.1")
        self.victim = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], outbound_trackers=1)
        self.net.run(2)
        # A node that claims the tracker role; t1 was never told to admit it.
        self.fake = self.net.tracker("10.66.0.1", join=[("10.1.0.1", PORT)], admitted=False)
        self.net.run(3)

    def test_an_unadmitted_tracker_cannot_rewrite_a_peer(self):
        """A DELTA from an unadmitted 'tracker' that moves a live peer to 10.66.6.6:6666 changes nothing."""
        from orb.tracker import registry as reg

        before = self.t1.registry.peer(self.victim.node_id)
        forged = attrs.evolve(before.statement, seq=before.seq + 10**9, addresses=(("10.66.6.6", 6666),))
        change = reg.Change(self.fake.node_id, 1, reg.PEER, attrs.evolve(before, statement=forged))
        record = self.fake.table.get(self.t1.node_id)
        record.send(m.Delta(kind=int(m.DeltaKind.CHANGES), payload=reg.Delta(changes=(change,)).to_bytes()))
        self.net.run(1)
        self.assertEqual(self.t1.registry.peer(self.victim.node_id), before)
        self.assertEqual(list(before.addresses), [("10.2.0.1", PORT)])

    def test_its_sync_is_denied_and_it_stops_asking(self):
        """The unadmitted tracker's SYNC gets ERROR(denied); it then stops syncing and pushing on that link."""
        self.assertIn(self.t1.node_id, self.fake.federation._refused_by)
        self.assertEqual(self.fake.federation.links(), [])
        self.assertIn(self.fake.node_id, self.t1.table)  # still served, as a peer
        self.assertFalse(self.t1.table.is_banned(self.fake.node_id))

    def test_it_gets_no_tracker_record_and_no_link(self):
        """An unadmitted tracker is not listed in the tracker table, and is not a federation link."""
        self.assertNotIn(self.fake.node_id, {t.node_id for t in self.t1.registry.trackers()})
        self.assertEqual([r.node_id for r in self.t1.federation.links()], [])

    def test_its_announce_registers_a_peer_without_the_tracker_role(self):
        """Served as a peer, its ANNOUNCE lists it as a plain peer, so nobody is sent to it as a tracker."""
        record = self.fake.table.get(self.t1.node_id)
        now = int(self.net.clock.seconds())
        record.send(records.announce(self.fake.local.key, self.t1.node_id, time=now, roles=int(self.fake.local.roles),
                                     addresses=[("10.66.0.1", PORT)]))
        self.net.run(1)
        listed = self.t1.registry.peer(self.fake.node_id)
        self.assertIsNotNone(listed)
        self.assertFalse(listed.roles & int(Role.TRACKER))

    def test_vouched_trackers_are_admitted_only_with_admit_vouched(self):
        """With --admit-vouched a tracker federates with one whose own record an admitted tracker relayed; without, not."""
        for vouched in (True, False):
            net = MemoryNet()
            edge = net.tracker("10.1.0.1", admitted=False, admit_vouched=vouched)
            hub = net.tracker("10.1.0.2", join=[("10.1.0.1", PORT)], admitted=False)
            far = net.tracker("10.1.0.3", join=[("10.1.0.2", PORT)], admitted=False)
            edge.federation.admitted.add(hub.node_id)
            hub.federation.admitted |= {edge.node_id, far.node_id}
            far.federation.admitted.add(edge.node_id)  # far admits edge; the question is whether edge admits far
            net.run(10)
            self.assertIsNotNone(edge.registry.tracker(far.node_id))  # its own record, relayed by the hub
            far.table.dial("10.1.0.1", PORT)
            net.run(5)
            linked = far.node_id in {r.node_id for r in edge.federation.links()}
            self.assertEqual(linked, vouched)

    def test_admitted_tracker_federates(self):
        """The same setup with t1 admitting the node id federates: the victim is replicated to it."""
        self.t1.federation.admitted.add(self.fake.node_id)
        self.net.kill(self.fake)
        net = self.net
        again = net.tracker("10.66.0.2", join=[("10.1.0.1", PORT)], admitted=False)
        self.t1.federation.admitted.add(again.node_id)
        net.run(3)
        self.assertIn(again.node_id, {r.node_id for r in self.t1.federation.links()})
        self.assertIsNotNone(again.registry.peer(self.victim.node_id))

    def test_a_pinned_join_refuses_another_node_at_that_address(self):
        """--join NODEID@HOST:PORT dials expecting that node id: a different node there is not linked."""
        net = MemoryNet()
        t1 = net.tracker("10.1.0.1", admitted=False)
        impostor_id = b"\x55" * 32
        t2 = net.tracker("10.1.0.2", admitted=False)
        t2.federation.pinned[("10.1.0.1", PORT)] = impostor_id
        t2.federation.bootstrap = (("10.1.0.1", PORT),)
        t1.federation.admitted.add(t2.node_id)
        net.run(3)
        self.assertNotIn(t1.node_id, t2.table)
        self.assertNotIn(t1.node_id, t2.federation.admitted)


class DialBackLimitTests(SynchronousTestCase):
    def test_dialbacks_are_rate_limited_per_source_ip(self):
        """Sessions from one IP that all list a listen address get three dial-backs, then none until the rate allows."""
        from twisted.internet import defer
        from twisted.internet.task import Clock

        from orb.tracker.membership import DIALBACKS_PER_IP_BURST, Membership

        clock = Clock()
        dials = []

        class Table:
            log_limit = _Always()

            def dial(self, host, port, expected_node_id=None, purpose=None):
                dials.append((host, port))
                return defer.Deferred()

        membership = Membership(clock, None, Table(), None, None, is_tracker=lambda r: False)
        for i in range(10):
            membership.dial_back(_Record("203.0.113.7", ("203.0.113.7", 7000 + i)))
        self.assertEqual(len(dials), DIALBACKS_PER_IP_BURST)
        membership.dial_back(_Record("198.51.100.1", ("198.51.100.1", 7000)))
        self.assertEqual(len(dials), DIALBACKS_PER_IP_BURST + 1)  # another source is not held back
        clock.advance(10)
        membership.dial_back(_Record("203.0.113.7", ("203.0.113.7", 7100)))
        self.assertEqual(len(dials), DIALBACKS_PER_IP_BURST + 2)


class _Always:
    def allow(self, key):
        return True


class _Record:
    """Stands in for a SessionRecord whose remote lists one listen address."""

    def __init__(self, ip, listen):
        import os

        self.ip = ip
        self.node_id = os.urandom(32)
        self.name = self.node_id.hex()[:16]
        self.remote = type("Remote", (), {"listen": (m.Endpoint(*listen),)})()
