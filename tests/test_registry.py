"""
Tests for the tracker registry: the federation payloads
(orb.protocol.federation), the last-writer-wins core (orb.tracker.registry),
its SQL store (orb.tracker.store), the replica ranking (orb.tracker.routing)
and the address validator (orb.protocol.addresses).
"""

import hashlib
import json
import re

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from orb._db import Database
from orb.protocol import addresses
from orb.protocol import federation as fed
from orb.protocol import fid as fidmod
from orb.protocol import spec
from orb.tracker import registry as regmod
from orb.tracker import store
from orb.tracker.registry import (
    ApplyResult,
    Change,
    Delta,
    Digest,
    FunctionRecord,
    PeerRecord,
    Registry,
    RegistryChangeError,
    RegistryFull,
    Snapshot,
)
from orb.tracker.routing import rank_replicas

A = b"\xaa" * 32
B = b"\xbb" * 32
C = b"\xcc" * 32
OWNER = b"\x0f" * 32


def fid(label):
    """A real fid text, as a deployed package would have."""
    return fidmod.to_text(fidmod.fid_for(label.encode()))


F1, F2, F3 = fid("one"), fid("two"), fid("three")


def pid(n):
    return n.to_bytes(2, "big") * 16


def make(tracker_id=A, clock=None, **kw):
    clock = clock or Clock()
    return Registry(clock, tracker_id, **kw), clock


def small_kinds(**bounds):
    """The real kinds table with smaller bounds, e.g. ``peer=3``."""
    return fed.Kinds(attrs.evolve(s, max_records=bounds.get(s.name, s.max_records)) for s in fed.KINDS)


def sync(src, dst):
    """One anti-entropy round from src to dst, repeated while `more`."""
    for _ in range(100):
        answer = src.delta_since(dst.digest())
        if isinstance(answer, Snapshot):
            for part in src.snapshot_parts():
                dst.apply_snapshot(Snapshot.from_bytes(part.to_bytes(), src.kinds))
            return "snapshot"
        answer = Delta.from_bytes(answer.to_bytes(), src.kinds)
        for c in answer.changes:
            assert dst.apply_remote(c) in (ApplyResult.APPLIED, ApplyResult.STALE)
        if not answer.more:
            return "delta"
    raise AssertionError("sync did not finish")


# -- the core: local writes ------------------------------------------------------------


class LocalTests(SynchronousTestCase):
    def test_upsert_peer_emits_change(self):
        """A peer that announces becomes a replicated change homed here; the same announcement again replicates nothing."""
        reg, clock = make()
        seen = []
        reg.subscribe(seen.append)
        ch = reg.upsert_peer(pid(1), [("127.0.0.1", 7401)], "reachable", functions={F1: 1})
        self.assertEqual((ch.origin, ch.seq, ch.lamport, ch.kind), (A, 1, 1, "peer_upsert"))
        self.assertEqual(seen, [ch])
        p = reg.peer(pid(1))
        self.assertEqual(p.home, A)
        self.assertEqual(p.function_map, {F1: 1})
        self.assertEqual(reg.counts()["peers"], 1)
        self.assertIsNone(reg.upsert_peer(pid(1), [("127.0.0.1", 7401)], "reachable", functions={F1: 1}))
        self.assertEqual(reg.update_peer(pid(1), load_permille=500).seq, 2)
        self.assertEqual(reg.peer(pid(1)).load_permille, 500)

    def test_one_observer(self):
        """The registry feeds exactly one federation push; a second subscriber is a wiring bug."""
        reg, _ = make()
        reg.subscribe(lambda ch: None)
        with self.assertRaises(ValueError):
            reg.subscribe(lambda ch: None)

    def test_observer_failure_does_not_break_writes(self):
        """A failing federation push is logged; the registry still takes the write."""
        reg, _ = make()
        reg.subscribe(lambda ch: 1 / 0)
        reg.upsert_peer(pid(1))
        self.assertIsNotNone(reg.peer(pid(1)))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_bad_local_input_is_refused(self):
        """Local writes meet the rules remote input meets, with a specific error and no change made."""
        reg, _ = make()
        with self.assertRaises(RegistryChangeError):
            reg.upsert_peer(pid(1), reachability="maybe")
        with self.assertRaises(RegistryChangeError):
            reg.upsert_peer(pid(1), [("127.0.0.1", 0)])  # port 0 is no place to dial
        with self.assertRaises(RegistryChangeError):
            reg.upsert_peer(pid(1), [("localhost", 1)])
        with self.assertRaises(RegistryChangeError):
            reg.upsert_peer(pid(1), load_permille=1001)
        with self.assertRaises(RegistryChangeError):
            reg.upsert_function("NOT-BASE32", 1, OWNER)
        with self.assertRaises(RegistryChangeError):
            reg.upsert_function("abc", 1, OWNER)  # base32, but not a fid
        with self.assertRaises(ValueError):
            reg.upsert_peer(b"short")
        self.assertEqual(reg.seq, 0)
        reg.upsert_peer(pid(1))
        with self.assertRaises(TypeError):
            reg.update_peer(pid(1), colour="blue")
        self.assertEqual(reg.seq, 1)
        self.assertEqual(reg.peers()[0].node_id, pid(1))

    def test_addresses_are_stored_canonical(self):
        """An address is stored in one canonical spelling, so every tracker hashes the same state."""
        reg, _ = make()
        reg.upsert_peer(pid(1), [("::FFFF:10.0.0.1", 7401), ("2001:DB8:0:0:0:0:0:1", 7402)])
        self.assertEqual(reg.peer(pid(1)).addresses, (("10.0.0.1", 7401), ("2001:db8::1", 7402)))

    def test_functions(self):
        """A deployed function is listed with its version, owner and target; removing it forgets it."""
        reg, _ = make()
        reg.upsert_function(F1, 2, OWNER, replicas=2)
        self.assertEqual([f.fid for f in reg.functions()], [F1])
        self.assertEqual(reg.function(F1), FunctionRecord(F1, 2, OWNER, 2))
        reg.remove_function(F1)
        self.assertIsNone(reg.function(F1))

    def test_rtt_replicated_only_on_big_moves(self):
        """Pings do not flood federation: only an RTT that moved by a quarter is replicated, in whole ms."""
        reg, _ = make()
        reg.upsert_peer(pid(1))
        self.assertIsNotNone(reg.record_rtt(pid(1), 100.4))
        self.assertIsNone(reg.record_rtt(pid(1), 110.0))
        self.assertEqual(reg.peer(pid(1)).rtt_ms, 100)
        self.assertIsNotNone(reg.record_rtt(pid(1), 200.0))
        self.assertEqual(reg.peer(pid(1)).rtt_ms, 200)
        self.assertIsNone(reg.record_rtt(pid(1), float("nan")))
        self.assertIsNone(reg.record_rtt(pid(1), float("inf")))
        self.assertIsNone(reg.record_rtt(pid(9), 5.0))  # unknown peer

    def test_bounds(self):
        """Each kind is bounded: a local write past it raises RegistryFull, a remote one is dropped."""
        kinds = small_kinds(peer=3, function=1)
        reg, _ = make(kinds=kinds)
        for i in range(3):
            reg.upsert_peer(pid(i))
        with self.assertRaises(RegistryFull):
            reg.upsert_peer(pid(9))
        self.assertIsNone(reg.peer_last_seen(pid(9)))  # no soft state for a refused peer
        reg.upsert_peer(pid(0), load_permille=1000)  # updating a known one is fine
        reg.upsert_function(F1, 1, OWNER)
        with self.assertRaises(RegistryFull):
            reg.upsert_function(F2, 1, OWNER)
        other, _ = make(B, kinds=kinds)
        ch = other.upsert_peer(pid(10))
        self.assertEqual(reg.apply_remote(ch), ApplyResult.APPLIED)
        self.assertIsNone(reg.peer(pid(10)))
        self.assertEqual(len(reg.peers()), 3)

    def test_change_log_bounded(self):
        """The federation change log keeps at most MAX_CHANGE_LOG changes."""
        self.patch(regmod, "MAX_CHANGE_LOG", 10)
        reg, _ = make()
        for i in range(50):
            reg.upsert_peer(pid(1), load_permille=i)
        self.assertEqual(reg.counts()["changes_logged"], 10)

    def test_tombstones_bounded(self):
        """At most MAX_TOMBSTONES removals are remembered, the oldest forgotten first."""
        self.patch(regmod, "MAX_TOMBSTONES", 5)
        reg, _ = make()
        for i in range(20):
            reg.upsert_peer(pid(i))
            reg.remove_peer(pid(i))
        self.assertEqual(reg.counts()["tombstones"], 5)
        self.assertEqual(len(reg.snapshot().entries), 5)


class KindsTableTests(SynchronousTestCase):
    """A new kind of record is one entry in the kinds table, and nothing else."""

    def setUp(self):
        @attrs.frozen
        class Note:
            name: str
            text: str

            @property
            def ident(self):
                return self.name

            def to_dict(self):
                return {"name": self.name, "text": self.text}

            @classmethod
            def from_dict(cls, d):
                if not isinstance(d, dict) or set(d) != {"name", "text"}:
                    raise RegistryChangeError("note: malformed")
                return cls(note_name(d["name"]), fed.check_text(d["text"], 20, "note text"))

        def note_name(v):
            if not isinstance(v, str) or not re.fullmatch(r"[a-z]{1,16}", v):
                raise RegistryChangeError("note name: malformed")
            return v

        def no_shouting(note):
            if note.text.isupper():
                raise RegistryChangeError("note: no shouting")

        self.Note = Note
        self.kinds = fed.KINDS.with_kind(fed.KindSpec("note", "note", Note, note_name, 2, check=no_shouting))

    def test_dummy_kind_replicates_snapshots_and_persists(self):
        """A kind added in the table alone is written, replicated, snapshotted, bounded and stored like the others."""
        a, clock = make(A, kinds=self.kinds)
        b, _ = make(B, clock=clock, kinds=self.kinds)
        a.subscribe(lambda ch: b.apply_remote(Change.from_bytes(ch.to_bytes(), self.kinds)))
        ch = a.upsert(self.Note("hello", "world"))
        self.assertEqual((ch.kind, ch.key), ("note_upsert", "note:hello"))
        self.assertEqual(b.record("note", "hello"), self.Note("hello", "world"))
        a.upsert(self.Note("bye", "now"))
        with self.assertRaises(RegistryFull):
            a.upsert(self.Note("third", "one"))
        with self.assertRaises(RegistryChangeError):
            a.upsert(self.Note("loud", "HEY"))  # the kind's own check runs on local writes
        self.assertEqual(a.remove("note", "bye").kind, "note_remove")
        self.assertIsNone(b.record("note", "bye"))
        self.assertEqual(a.state_hash(), b.state_hash())
        c, _ = make(C, kinds=self.kinds)
        self.assertEqual(sync(a, c), "delta")
        self.assertEqual(c.records("note"), [self.Note("hello", "world")])
        db = self.successResultOf(Database.open(None, self.mktemp() + ".sqlite", store.MIGRATIONS, inline=True))
        self.addCleanup(db.close)
        self.successResultOf(a.save(db))
        loaded = self.successResultOf(Registry.load(db, clock, A, kinds=self.kinds))
        self.assertEqual(loaded.state_hash(), a.state_hash())

    def test_dummy_kind_remote_input_is_checked(self):
        """A remote record of the new kind meets its validator and its check."""
        good = {"origin": B.hex(), "seq": "1", "lamport": "1", "kind": "note_upsert",
                "body": {"name": "x", "text": "hi"}}
        self.assertEqual(Change.from_dict(good, self.kinds).record, self.Note("x", "hi"))
        with self.assertRaises(RegistryChangeError):
            Change.from_dict(good)  # the default table does not know notes
        for body in ({"name": "X", "text": "hi"}, {"name": "x", "text": "HI"}, {"name": "x"}):
            with self.assertRaises(RegistryChangeError):
                Change.from_dict(dict(good, body=body), self.kinds)

    def test_duplicate_kinds_are_refused(self):
        """A table cannot hold two kinds with one name, prefix or record class, nor drop one the core needs."""
        with self.assertRaises(ValueError):
            fed.KINDS.with_kind(attrs.evolve(fed.PEER, record_type=self.Note))
        with self.assertRaises(ValueError):
            Registry(Clock(), A, kinds=fed.Kinds([fed.PEER, fed.TRACKER]))


# -- the core: liveness ---------------------------------------------------------------


class LivenessTests(SynchronousTestCase):
    def test_expire_own_peers(self):
        """A peer homed here and silent for peer_ttl_s is removed, as a replicated change."""
        reg, clock = make(peer_ttl_s=90)
        reg.upsert_peer(pid(1))
        reg.upsert_peer(pid(2))
        clock.advance(60)
        self.assertTrue(reg.touch(pid(2)))
        self.assertFalse(reg.touch(pid(9)))
        clock.advance(31)
        gone = reg.expire()
        self.assertEqual([(c.kind, c.ident, c.reason) for c in gone], [("peer_remove", pid(1).hex(), "timeout")])
        self.assertEqual([p.node_id for p in reg.peers()], [pid(2)])
        self.assertEqual(reg.expire(), [])

    def test_peers_of_a_dead_home_expire(self):
        """Peers of a home tracker gone for tracker_ttl_s are removed; those of a connected one are not."""
        a, clock = make(A, peer_ttl_s=90)
        b, _ = make(B, clock=clock, peer_ttl_s=90)
        a.apply_remote(b.upsert_tracker(B, [("127.0.0.2", 7400)]))
        a.apply_remote(b.upsert_peer(pid(1)))
        a.set_tracker_connected(B, True)
        clock.advance(500)
        self.assertEqual(a.expire(), [])
        a.set_tracker_connected(B, False)
        clock.advance(a.tracker_ttl_s + 1)
        gone = a.expire()
        self.assertEqual([(c.ident, c.reason) for c in gone], [(pid(1).hex(), "home-gone")])

    def test_tombstones_expire(self):
        """A removal is remembered for tombstone_ttl_s, then forgotten."""
        reg, clock = make(tombstone_ttl_s=100)
        reg.upsert_peer(pid(1))
        reg.remove_peer(pid(1))
        self.assertEqual(reg.counts()["tombstones"], 1)
        clock.advance(101)
        reg.expire()
        self.assertEqual(reg.counts()["tombstones"], 0)

    def test_tracker_soft_state(self):
        """A tracker's liveness is local: touching, connecting and forgetting it never replicates anything."""
        reg, clock = make()
        self.assertFalse(reg.touch_tracker(B))
        reg.upsert_tracker(B, [("127.0.0.2", 7400)])
        seq = reg.seq
        clock.advance(10)
        self.assertTrue(reg.touch_tracker(B))
        self.assertEqual(reg.tracker_last_seen(B), 10)
        reg.set_tracker_connected(B, True)
        self.assertTrue(reg.tracker_connected(B))
        self.assertEqual(reg.seq, seq)
        reg.remove_tracker(B)
        self.assertFalse(reg.tracker_connected(B))
        self.assertIsNone(reg.tracker_last_seen(B))


# -- the core: federation --------------------------------------------------------------


class FederationTests(SynchronousTestCase):
    def test_live_replication_via_subscribe(self):
        """Every write at one tracker reaches another through the push, and their states hash the same."""
        a, clock = make(A)
        b, _ = make(B, clock=clock)
        a.subscribe(lambda ch: b.apply_remote(Change.from_bytes(ch.to_bytes())))
        a.upsert_peer(pid(1), [("127.0.0.1", 7401)], "relayed")
        a.upsert_function(F1, 1, OWNER)
        self.assertEqual(b.peer(pid(1)).reachability, "relayed")
        self.assertEqual(b.peer(pid(1)).home, A)
        self.assertEqual(b.function(F1).version, 1)
        self.assertEqual(a.state_hash(), b.state_hash())
        self.assertEqual(a.digest().known, b.digest().known)

    def test_state_hash_is_the_rfc_definition(self):
        """The digest hash is SHA-256 over JCS lines of the live entries in key order, as RFC 8.6 defines it, after every write."""
        reg, _ = make()

        def by_the_book():
            h = hashlib.sha256()
            for e in sorted(reg.snapshot().entries, key=lambda e: e.key):
                if e.record is not None:
                    h.update(fed.canonical_json([e.key, str(e.lamport), e.origin.hex(), e.record.to_dict()]) + b"\n")
            return h.digest()

        steps = [
            lambda: reg.upsert_peer(pid(1), [("127.0.0.1", 7401)]),
            lambda: reg.upsert_function(F1, 1, OWNER),
            lambda: reg.upsert_peer(pid(1), [("127.0.0.1", 7402)]),
            lambda: reg.remove_peer(pid(1)),
            lambda: reg.upsert_peer(pid(1)),
        ]
        for step in steps:
            step()
            self.assertEqual(reg.state_hash(), by_the_book())
            self.assertEqual(reg.state_hash(), fed.state_hash(reg.snapshot().entries))

    def test_apply_remote_idempotent_and_ordered(self):
        """A change arriving before its predecessor is a GAP; repeats are STALE and change nothing."""
        a, _ = make(A)
        b, _ = make(B)
        c1 = a.upsert_peer(pid(1))
        c2 = a.upsert_peer(pid(2))
        self.assertEqual(b.apply_remote(c2), ApplyResult.GAP)
        self.assertIsNone(b.peer(pid(2)))
        self.assertEqual(b.apply_remote(c1), ApplyResult.APPLIED)
        self.assertEqual(b.apply_remote(c1), ApplyResult.STALE)
        self.assertEqual(b.apply_remote(c2), ApplyResult.APPLIED)
        self.assertEqual(b.apply_remote(c2), ApplyResult.STALE)
        self.assertEqual(len(b.peers()), 2)

    def test_origins_bounded(self):
        """Changes from more than MAX_ORIGINS trackers are refused, not stored."""
        self.patch(regmod, "MAX_ORIGINS", 2)
        a, _ = make(A)
        a.upsert_function(F1, 1, OWNER)
        self.assertEqual(a.apply_remote(Registry(Clock(), B).upsert_peer(pid(1))), ApplyResult.APPLIED)
        self.assertEqual(a.apply_remote(Registry(Clock(), C).upsert_peer(pid(2))), ApplyResult.REFUSED)
        self.assertIsNone(a.peer(pid(2)))

    def test_own_changes_coming_back_are_stale(self):
        """Our own change echoed back by another tracker is ignored."""
        a, _ = make(A)
        ch = a.upsert_peer(pid(1))
        self.assertEqual(a.apply_remote(ch), ApplyResult.STALE)

    def test_lost_database_never_reuses_seq(self):
        """A tracker that lost its database continues after the highest seq the others saw from it."""
        a, _ = make(A)
        old = [a.upsert_peer(pid(i)) for i in range(1, 4)]
        fresh, _ = make(A)
        self.assertEqual(fresh.apply_remote(old[2]), ApplyResult.APPLIED)
        self.assertEqual(fresh.upsert_peer(pid(9)).seq, 4)

    def test_seq_jump_after_restore_does_not_leave_gaps(self):
        """A tracker restored from an old backup hears its newer past: the others get a snapshot, not a log with holes."""
        a, _ = make(A)
        b, _ = make(B)
        for i in range(5):
            a.upsert_peer(pid(i))
        sync(a, b)
        old, _ = make(A)
        old.upsert_peer(pid(100))  # seq 1 again: a stale copy
        c, _ = make(C)
        self.assertEqual(old.apply_remote(a._log[A][-1]), ApplyResult.APPLIED)  # seq 5
        old.upsert_peer(pid(101))  # seq 6
        self.assertEqual(old.seq, 6)
        self.assertEqual(sync(old, c), "snapshot")
        self.assertEqual(c.state_hash(), old.state_hash())

    def test_anti_entropy_after_partition(self):
        """After a partition both sides exchange deltas and end in the same state."""
        a, clock = make(A)
        b, _ = make(B, clock=clock)
        a.upsert_function(F1, 1, OWNER)
        sync(a, b)
        for i in range(5):
            a.upsert_peer(pid(i))
        b.upsert_peer(pid(100))
        b.upsert_function(F1, 2, OWNER)
        self.assertNotEqual(a.state_hash(), b.state_hash())
        self.assertEqual(sync(a, b), "delta")
        self.assertEqual(sync(b, a), "delta")
        self.assertEqual(a.state_hash(), b.state_hash())
        self.assertEqual(a.function(F1).version, 2)
        self.assertEqual(len(b.peers()), 6)
        self.assertEqual(a.delta_since(b.digest()), Delta(changes=()))

    def test_truncated_log_falls_back_to_snapshot(self):
        """When the change log no longer reaches back, the answer is a snapshot, tombstones included."""
        self.patch(regmod, "MAX_CHANGE_LOG", 5)
        a, _ = make(A)
        b, _ = make(B)
        for i in range(20):
            a.upsert_peer(pid(i))
        a.remove_peer(pid(3))
        self.assertIsInstance(a.delta_since(b.digest()), Snapshot)
        self.assertEqual(sync(a, b), "snapshot")
        self.assertEqual(a.state_hash(), b.state_hash())
        self.assertIsNone(b.peer(pid(3)))
        self.assertEqual(b.digest().known, a.digest().known)
        c, _ = make(C)
        sync(b, c)
        self.assertEqual(c.state_hash(), a.state_hash())

    def test_snapshot_parts(self):
        """A large snapshot is cut into parts under the byte limit; only the last carries `known`."""
        a, _ = make(A)
        b, _ = make(B)
        for i in range(50):
            a.upsert_peer(pid(i), [("127.0.0.1", 1000 + i)], functions={F1: 1})
        parts = a.snapshot_parts(max_bytes=8000)
        self.assertGreater(len(parts), 2)
        for p in parts:
            self.assertLessEqual(len(p.to_bytes()), 8000)
        self.assertEqual([bool(p.known) for p in parts], [False] * (len(parts) - 1) + [True])
        for p in parts:
            b.apply_snapshot(p)
        self.assertEqual(a.state_hash(), b.state_hash())

    def test_delta_respects_byte_budget(self):
        """A delta stops at its byte budget and says `more`; asking again finishes the job."""
        a, _ = make(A)
        b, _ = make(B)
        for i in range(40):
            a.upsert_peer(pid(i))
        first = a.delta_since(b.digest(), max_bytes=3000)
        self.assertTrue(first.more)
        self.assertLessEqual(len(first.to_bytes()), 3000)
        sync(a, b)
        self.assertEqual(len(b.peers()), 40)

    def test_diverged_hash_with_equal_digests_gives_snapshot(self):
        """Equal sequence numbers but different state hashes heal by snapshot."""
        a, _ = make(A)
        b, _ = make(B)
        a.upsert_peer(pid(1))
        sync(a, b)
        b._merge("fn:" + F3, 1, C, FunctionRecord(F3, 1, OWNER), 0.0)  # corruption
        self.assertIsInstance(a.delta_since(b.digest()), Snapshot)

    def test_remote_removal_of_live_home_peer_is_undone(self):
        """Another tracker cannot remove a peer alive and homed here: the home re-announces it."""
        a, clock = make(A)
        b, _ = make(B, clock=clock)
        sync(a, b)
        a.upsert_peer(pid(1))
        sync(a, b)
        wrong = b.remove_peer(pid(1), "home-gone")
        a.apply_remote(wrong)
        self.assertIsNotNone(a.peer(pid(1)))
        sync(a, b)
        self.assertIsNotNone(b.peer(pid(1)))
        self.assertEqual(a.state_hash(), b.state_hash())

    def test_rehome(self):
        """A peer that moves to another tracker is that tracker's to expire, no longer ours."""
        a, clock = make(A)
        b, _ = make(B, clock=clock)
        b.upsert_tracker(B, [("127.0.0.2", 7400)])
        a.upsert_peer(pid(1))
        sync(a, b)
        b.upsert_peer(pid(1))
        sync(b, a)
        self.assertEqual(a.peer(pid(1)).home, B)
        a.set_tracker_connected(B, True)
        clock.advance(200)
        self.assertEqual(a.expire(), [])
        self.assertEqual(b.expire()[0].reason, "timeout")


fids = st.sampled_from([F1, F2, F3])
ops = st.lists(
    st.tuples(
        st.sampled_from([A, B, C]),
        st.sampled_from(["peer", "rm_peer", "fn", "rm_fn"]),
        st.integers(1, 4),
        fids,
    ),
    min_size=1,
    max_size=25,
)


def make_changes(script):
    """Run the script on three trackers and return every change they
    originated (re-announcements included), in emission order."""
    regs = {o: Registry(Clock(), o) for o in (A, B, C)}
    out = []
    for o, r in regs.items():
        r.subscribe(lambda ch, o=o: out.append(ch) if ch.origin == o else None)
    for origin, op, n, f in script:
        r = regs[origin]
        if op == "peer":
            ch = r.upsert_peer(pid(n), load_permille=len(out) % 1001)
        elif op == "rm_peer":
            ch = r.remove_peer(pid(n))
        elif op == "fn":
            ch = r.upsert_function(f, len(out), OWNER)
        else:
            ch = r.remove_function(f)
        if ch is not None and n % 2:
            for o, other in regs.items():
                if o != origin:
                    apply_all(other, [c for c in out if c.origin != o])
    return out


def apply_all(reg, changes):
    """Apply in the given order, retrying GAPs, as anti-entropy would."""
    pending = list(changes)
    while pending:
        rest = [c for c in pending if reg.apply_remote(c) is ApplyResult.GAP]
        if len(rest) == len(pending):
            raise AssertionError("no progress")
        pending = rest


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=100, deadline=None)
    @given(ops, st.randoms(use_true_random=False))
    def test_converges_whatever_the_order(self, script, rnd):
        """Trackers that saw the same changes in any order hold the same registry."""
        changes = make_changes(script)
        shuffled = list(changes)
        rnd.shuffle(shuffled)
        x = Registry(Clock(), b"\x01" * 32)
        y = Registry(Clock(), b"\x02" * 32)
        apply_all(x, changes)
        apply_all(y, shuffled)
        self.assertEqual(x.state_hash(), y.state_hash())
        self.assertEqual(sorted(x.peers(), key=lambda p: p.node_id), sorted(y.peers(), key=lambda p: p.node_id))
        before = x.state_hash()
        self.assertEqual([x.apply_remote(c) for c in shuffled], [ApplyResult.STALE] * len(shuffled))
        self.assertEqual(x.state_hash(), before)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_raise_only_change_error(self, data):
        """Garbage in a SYNC or DELTA gives RegistryChangeError and nothing else."""
        for parse in (Change.from_bytes, Digest.from_bytes, Delta.from_bytes, Snapshot.from_bytes):
            try:
                parse(data)
            except RegistryChangeError:
                pass

    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def test_mutated_changes_raise_only_change_error(self, data):
        """A change with any field replaced by any JSON value is refused cleanly or round-trips exactly."""
        reg, _ = make()
        ch = reg.upsert_peer(pid(1), [("127.0.0.1", 7401)], functions={F1: 1}, rtt_ms=3)
        d = ch.to_dict()
        path = data.draw(st.sampled_from([("seq",), ("origin",), ("kind",), ("lamport",), ("body", "node_id"),
                                          ("body", "addresses"), ("body", "functions"), ("body", "rtt_ms"),
                                          ("body", "reachability"), ("body", "load_permille"), ("body",)]))
        value = data.draw(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=70),
                                    st.lists(st.integers(), max_size=3),
                                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3)))
        target = d
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value
        try:
            back = Change.from_dict(d)
        except RegistryChangeError:
            return
        self.assertEqual(Change.from_bytes(back.to_bytes()), back)


# -- the payloads on the wire ---------------------------------------------------------


class WireFormatTests(SynchronousTestCase):
    def test_round_trips(self):
        """Every kind of change, the digest and a snapshot decode to what was encoded."""
        reg, _ = make()
        changes = [
            reg.upsert_peer(pid(1), [("127.0.0.1", 7401), ("::1", 7402)], "reachable", 12, 250, {F1: 3}, 5),
            reg.upsert_function(F1, 3, OWNER, 4),
            reg.upsert_tracker(B, [("127.0.0.2", 7400)]),
            reg.remove_peer(pid(1), "left"),
            reg.remove_function(F1),
            reg.remove_tracker(B),
        ]
        for ch in changes:
            self.assertEqual(Change.from_bytes(ch.to_bytes()), ch)
        d = reg.digest()
        self.assertEqual(Digest.from_bytes(d.to_bytes()), d)
        s = reg.snapshot()
        self.assertEqual(Snapshot.from_bytes(s.to_bytes()), s)

    def test_snapshot_bytes_are_jcs(self):
        """A snapshot part assembled from cached entry bytes is exactly the JCS of the whole document."""
        reg, _ = make()
        for i in range(5):
            reg.upsert_peer(pid(i), [("127.0.0.1", 7400 + i)], functions={F1: i})
        reg.remove_peer(pid(2), "gone — 旅")
        for part in reg.snapshot_parts(max_bytes=5000) + [reg.snapshot()]:
            document = {"entries": [e.to_list() for e in part.entries], "known": fed.known_to_dict(part.known),
                        "lamport": str(part.lamport)}
            self.assertEqual(part.to_bytes(), fed.canonical_json(document))

    def test_delta_bytes_are_jcs(self):
        """A delta assembled from cached change bytes is exactly the JCS of the whole document."""
        reg, _ = make()
        changes = [reg.upsert_peer(pid(i), [("::1", 7400 + i)]) for i in range(3)] + [reg.remove_peer(pid(1), "é")]
        self.assertTrue(all(c.encoded for c in changes))
        for more in (False, True):
            delta = Delta(changes=tuple(changes), more=more)
            document = {"changes": [c.to_dict() for c in changes], "more": more}
            self.assertEqual(delta.to_bytes(), fed.canonical_json(document))
        self.assertEqual(Delta(changes=()).to_bytes(), b'{"changes":[],"more":false}')

    def test_jcs_canonical_form(self):
        """Payloads are RFC 8785 JCS: sorted members, no whitespace, non-ASCII text as UTF-8."""
        reg, _ = make()
        reg.upsert_peer(pid(1))
        data = reg.remove_peer(pid(1), "départ").to_bytes()
        self.assertIn("départ".encode(), data)
        self.assertEqual(data, json.dumps(json.loads(data), sort_keys=True, separators=(",", ":"),
                                          ensure_ascii=False).encode())
        ch = reg.upsert_peer(pid(2), functions={F2: 1, F1: 2})
        self.assertIn(json.dumps({F1: 2, F2: 1}, sort_keys=True, separators=(",", ":")).encode(), ch.to_bytes())

    def test_integers_only_and_counters_as_strings(self):
        """A JavaScript JSON.parse reads every number exactly: all are small integers, counters are strings."""
        reg, _ = make()
        reg.upsert_peer(pid(1), [("127.0.0.1", 7401)], rtt_ms=3.7, load_permille=5, functions={F1: 1})
        big = 2**63 - 1
        change = Change(A, big, big, fed.PEER, record=reg.peer(pid(1)))
        payloads = [change.to_bytes(), reg.digest().to_bytes(), reg.snapshot().to_bytes()]

        def numbers(v):
            if isinstance(v, dict):
                return [n for x in v.values() for n in numbers(x)]
            if isinstance(v, list):
                return [n for x in v for n in numbers(x)]
            return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else []

        for data in payloads:
            for n in numbers(json.loads(data)):
                self.assertIs(type(n), int)
                self.assertLess(abs(n), 2**53)
        d = json.loads(change.to_bytes())
        self.assertEqual((d["seq"], d["lamport"]), (str(big), str(big)))
        self.assertEqual(d["body"]["rtt_ms"], 4)

    def test_rfc_change_example(self):
        """The change example in RFC section 8.6 is what the code produces, byte for byte."""
        change = Change(b"\x10" * 32, 7, 9007199254740993, fed.PEER, removed="01" * 32, reason="départ — 旅")
        data = change.to_bytes()
        with open(spec.RFC_PATH, encoding="utf-8") as f:
            text = f.read()
        block = text.split("<!-- example:federation-change -->\n```\n", 1)[1].split("\n```", 1)[0]
        self.assertEqual(block.encode("utf-8"), data)
        self.assertIn(f"{len(data)} bytes", text)
        self.assertIn(hashlib.sha256(data).hexdigest(), text)
        self.assertEqual(Change.from_bytes(data), change)

    def good(self):
        reg, _ = make()
        return reg.upsert_peer(pid(1), [("127.0.0.1", 7401)]).to_dict()

    def assertBad(self, data):
        with self.assertRaises(RegistryChangeError):
            Change.from_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())

    def test_malformed(self):
        """Each way a change can be malformed is refused with RegistryChangeError."""
        self.assertBad(b"")
        self.assertBad(b"\xff\xfe")
        self.assertBad(b"[" * 100_000)  # too big
        self.assertBad(b"[" * 5000 + b"]" * 5000)  # deep
        self.assertBad(b'{"seq": "1", "seq": "2"}')
        self.assertBad(b'{"x": NaN}')
        self.assertBad(b'{"x": 1.5}')
        self.assertBad(b'{"x": 1e3}')
        self.assertBad([])
        d = self.good()
        d["extra"] = 1
        self.assertBad(d)
        for field, value in [
            ("seq", "0"), ("seq", 1), ("seq", True), ("seq", "01"), ("seq", "+1"), ("seq", " 1"),
            ("seq", str(2**63)), ("lamport", 1), ("lamport", "1.0"),
            ("origin", "zz" * 32), ("origin", "AA" * 32), ("origin", "aa"), ("kind", "peer_delete"),
        ]:
            d = self.good()
            d[field] = value
            self.assertBad(d)
        for field, value in [
            ("addresses", [["999.1.1.1", 1]]), ("addresses", [["127.0.0.1", 0]]), ("addresses", [["::1", 1]] * 9),
            ("addresses", [["::0:1", 1]]), ("addresses", [["::ffff:1.2.3.4", 1]]), ("addresses", [["fe80::1%eth0", 1]]),
            ("reachability", "yes"), ("rtt_ms", -1), ("rtt_ms", 600_001), ("load_permille", 1001),
            ("load_permille", None), ("functions", {"ABC": 1}), ("functions", {"abc": 1}), ("functions", {F1: -1}),
            ("roles", 2**40), ("home", None),
        ]:
            d = self.good()
            d["body"][field] = value
            self.assertBad(d)
        d = self.good()
        d["kind"] = "peer_remove"
        self.assertBad(d)  # a removal has a different body
        d = self.good()
        d["kind"], d["body"] = "peer_remove", {"id": pid(1).hex(), "reason": "\ud800"}
        self.assertBad(d)  # not Unicode text: it could not be written back out

    def test_parser_refuses_what_ijson_forbids(self):
        """Fractions, exponents, NaN and duplicate keys are refused by the parser itself, whatever the field."""
        self.assertEqual(fed.parse_json(b'{"a":[1,-2,"3"]}', 100, "x"), {"a": [1, -2, "3"]})
        for bad in (b"[1.5]", b"[1e3]", b"[1E-2]", b"[NaN]", b"[-Infinity]", b'{"a":1,"a":1}'):
            with self.assertRaises(RegistryChangeError):
                fed.parse_json(bad, 100, "x")

    def test_size_bound_before_parsing(self):
        """An oversized change is refused by its length, before any parsing."""
        with self.assertRaises(RegistryChangeError) as e:
            Change.from_bytes(b" " * (fed.MAX_CHANGE_BYTES + 1))
        self.assertIn("limit", str(e.exception))

    def test_one_limit_for_registry_json(self):
        """A DELTA payload the codec accepts is one the registry accepts: one limit, defined once."""
        from orb.protocol import messages

        self.assertEqual(fed.MAX_PAYLOAD_BYTES, messages.MAX_REGISTRY_JSON_BYTES)
        self.assertEqual(fed.MAX_ADDRESSES, messages.MAX_LISTEN_ADDRESSES)

    def test_snapshot_entry_must_match_its_key(self):
        """A snapshot entry whose record is not the one its key names is refused."""
        reg, _ = make()
        reg.upsert_peer(pid(1))
        entry = reg.snapshot().entries[0].to_list()
        entry[0] = "peer:" + pid(2).hex()
        with self.assertRaises(RegistryChangeError):
            fed.SnapshotEntry.from_list(entry)
        entry[0] = "nope:" + pid(1).hex()
        with self.assertRaises(RegistryChangeError):
            fed.SnapshotEntry.from_list(entry)


class AddressTests(SynchronousTestCase):
    def test_canonical_ip(self):
        """Every spelling of an address comes out as one canonical text."""
        self.assertEqual(addresses.check_ip("127.0.0.1"), "127.0.0.1")
        self.assertEqual(addresses.check_ip("2001:DB8::0:1"), "2001:db8::1")
        self.assertEqual(addresses.check_ip("::ffff:10.1.2.3"), "10.1.2.3")
        self.assertTrue(addresses.is_canonical_ip("::1"))
        self.assertFalse(addresses.is_canonical_ip("::0:1"))

    def test_bad_addresses(self):
        """Names, zone ids, junk and port 0 are refused with AddressError."""
        for bad in ("localhost", "fe80::1%eth0", "", "1.2.3", None, 5, "1" * 60):
            with self.assertRaises(addresses.AddressError):
                addresses.check_ip(bad)
        for bad in (0, 65536, -1, "80", True):
            with self.assertRaises(addresses.AddressError):
                addresses.check_port(bad)
        self.assertEqual(addresses.check_endpoint("::1", 7400), ("::1", 7400))

    def test_node_ids(self):
        """A node id is 32 bytes, or 64 lowercase hex digits."""
        self.assertEqual(addresses.node_id_from_hex("ab" * 32), b"\xab" * 32)
        for bad in ("AB" * 32, "ab" * 31, "zz" * 32, None):
            with self.assertRaises(addresses.AddressError):
                addresses.node_id_from_hex(bad)
        with self.assertRaises(addresses.AddressError):
            addresses.check_node_id(b"\x00" * 31)


# -- routing ---------------------------------------------------------------------------


def peer(n, rtt_ms=None, load_permille=0, reachability="reachable"):
    return PeerRecord(pid(n), A, (("127.0.0.1", 7400 + n),), reachability, rtt_ms, load_permille, {F1: 1})


class RankingTests(SynchronousTestCase):
    def test_fastest_first_unmeasured_last(self):
        """Replicas are ranked by measured RTT; ones not yet measured come after every measured one."""
        ranked = rank_replicas([peer(1), peer(2, rtt_ms=40), peer(3, rtt_ms=5)])
        self.assertEqual([p.node_id for p in ranked], [pid(3), pid(2), pid(1)])

    def test_load_counts(self):
        """A saturated replica counts as twice as far away: an idle one slightly further wins."""
        ranked = rank_replicas([peer(1, rtt_ms=10, load_permille=1000), peer(2, rtt_ms=15)])
        self.assertEqual([p.node_id for p in ranked], [pid(2), pid(1)])
        ranked = rank_replicas([peer(1, load_permille=900), peer(2, load_permille=100)])
        self.assertEqual([p.node_id for p in ranked], [pid(2), pid(1)])

    def test_deterministic_ties_direct_and_limit(self):
        """Ties go to the lower node id; direct=True lists only dialable replicas; limit caps the answer."""
        hosts = [peer(2, rtt_ms=5), peer(1, rtt_ms=5), peer(3, rtt_ms=1, reachability="relayed")]
        self.assertEqual([p.node_id for p in rank_replicas(hosts)], [pid(3), pid(1), pid(2)])
        self.assertEqual([p.node_id for p in rank_replicas(hosts, direct=True)], [pid(1), pid(2)])
        self.assertEqual([p.node_id for p in rank_replicas(hosts, limit=1)], [pid(3)])


# -- persistence: the store alone, then the core through it ----------------------------


class StoreTests(SynchronousTestCase):
    """orb.tracker.store on its own: rows in, rows out, bad rows skipped."""

    def open_db(self, path=None, migrations=store.MIGRATIONS):
        db = self.successResultOf(Database.open(None, path or self.mktemp() + ".sqlite", migrations, inline=True))
        self.addCleanup(db.close)
        return db

    def state(self):
        rec = FunctionRecord(F1, 1, OWNER)
        entries = (
            store.StoredEntry("fn:" + F1, 3, B, rec, 5.0),
            store.StoredEntry("peer:" + pid(1).hex(), 4, A, None, 6.0),
        )
        return store.StoredState(A, 7, 9, {A: 7, B: 3}, entries)

    def test_round_trip(self):
        """What is saved is loaded back the same: entries, tombstones, counters."""
        db = self.open_db()
        self.successResultOf(store.save(db, self.state()))
        self.assertEqual(self.successResultOf(store.load(db, A)), self.state())

    def test_save_replaces(self):
        """Each save replaces the previous one entirely."""
        db = self.open_db()
        self.successResultOf(store.save(db, self.state()))
        self.successResultOf(store.save(db, attrs.evolve(self.state(), entries=())))
        self.assertEqual(self.successResultOf(store.load(db, A)).entries, ())

    def test_other_trackers_file_is_not_adopted(self):
        """A database written by another tracker id loads as nothing, with a warning."""
        db = self.open_db()
        self.successResultOf(store.save(db, self.state()))
        with capturedLogs() as events:
            self.assertIsNone(self.successResultOf(store.load(db, B)))
        self.assertTrue(any("another tracker" in e.get("log_format", "") for e in events))

    def test_corrupt_rows_and_meta_are_skipped(self):
        """Rows that would not pass as remote input are skipped, never adopted or crashed on."""
        db = self.open_db()
        self.successResultOf(store.save(db, self.state()))
        bad_rows = [
            ("fn:x", 1, "zz", "{", 0, None),
            ("fn:" + F2, 1, B.hex(), '{"fid":"%s","version":1.5,"owner":"%s","replicas":1}' % (F2, OWNER.hex()), 0, None),
            ("fn:" + F3, "one", B.hex(), None, 0, None),
            ("peer:" + pid(2).hex(), 1, B.hex(), '{"fid":"%s","version":1,"owner":"%s","replicas":1}' % (F1, OWNER.hex()), 0, None),
        ]
        self.successResultOf(db.run(lambda c: c.executemany("INSERT INTO registry_entry VALUES (?, ?, ?, ?, ?, ?)", bad_rows)))
        self.successResultOf(db.run(lambda c: c.execute("UPDATE registry_meta SET v = ? WHERE k = 'known'", ("[" * 5000,))))
        with capturedLogs() as events:
            loaded = self.successResultOf(store.load(db, A))
        self.assertEqual(set(loaded.entries), set(self.state().entries))
        self.assertEqual((loaded.seq, loaded.known), (0, {}))
        self.assertTrue(any(e.get("count") == 4 for e in events))

    def test_runs_on_the_database_thread(self):
        """save and load go through Database.run, so SQL never runs on the reactor thread."""
        real = self.open_db()
        calls = []

        class Recording:
            def run(self, fn, *args):
                calls.append(fn.__name__)
                return real.run(fn, *args)

        self.successResultOf(store.save(Recording(), self.state()))
        self.successResultOf(store.load(Recording(), A))
        self.assertEqual(calls, ["_write", "_read"])

    def test_pre_jcs_rows_are_upgraded(self):
        """A registry file from before integer-only payloads keeps its records after the upgrade; junk rows do not stop it."""
        path = self.mktemp() + ".sqlite"
        old = self.open_db(path, store.MIGRATIONS[:1])
        old_peer = {"node_id": pid(1).hex(), "home": A.hex(), "addresses": [["127.0.0.1", 7401]],
                    "reachability": "reachable", "rtt_ms": 12.6, "load": 0.25, "functions": {F1: 1}, "roles": 1}
        old_fn = {"fid": F1, "version": 1, "owner": OWNER.hex(), "replicas": 3}

        def write(c):
            c.execute("INSERT INTO registry_entry VALUES (?, 5, ?, ?, 1.0, 1.0)",
                      ("peer:" + pid(1).hex(), A.hex(), json.dumps(old_peer)))
            c.execute("INSERT INTO registry_entry VALUES (?, 6, ?, ?, 2.0, NULL)", ("fn:" + F1, A.hex(), json.dumps(old_fn)))
            c.execute("INSERT INTO registry_entry VALUES (?, 1, ?, ?, 0, NULL)", ("peer:" + pid(2).hex(), A.hex(), b"\x00"))
            c.execute("INSERT INTO registry_entry VALUES (?, 1, ?, ?, 0, NULL)", ("peer:" + pid(3).hex(), A.hex(), "[" * 5000))
            c.executemany("INSERT INTO registry_meta VALUES (?, ?)",
                          [("tracker_id", A.hex()), ("seq", "6"), ("lamport", "6"), ("known", json.dumps({A.hex(): 6}))])

        self.successResultOf(old.run(write))
        self.successResultOf(old.close())
        loaded = self.successResultOf(store.load(self.open_db(path), A))
        self.assertEqual(loaded.known, {A: 6})
        records = {e.key: e.record for e in loaded.entries}
        p = records["peer:" + pid(1).hex()]
        self.assertEqual((p.load_permille, p.rtt_ms), (250, 13))
        self.assertEqual(records["fn:" + F1], FunctionRecord(F1, 1, OWNER, 3))
        self.assertEqual(len(records), 2)


class PersistenceTests(SynchronousTestCase):
    """The core saved and loaded through the store."""

    def open_db(self, path):
        db = self.successResultOf(Database.open(None, path, regmod.MIGRATIONS, inline=True))
        self.addCleanup(db.close)
        return db

    def test_round_trip(self):
        """A restarted tracker has the same registry, continues its seq, and still expires silent peers."""
        reg, clock = make(peer_ttl_s=90)
        clock.advance(1000)
        reg.upsert_peer(pid(1), [("127.0.0.1", 7401)], "reachable", functions={F1: 1})
        reg.upsert_function(F1, 1, OWNER)
        reg.upsert_tracker(B, [("127.0.0.2", 7400)])
        remote, _ = make(B)
        reg.apply_remote(remote.upsert_peer(pid(2)))
        reg.upsert_peer(pid(3))
        reg.remove_peer(pid(3))
        path = self.mktemp() + ".sqlite"
        self.successResultOf(reg.save(self.open_db(path)))

        loaded = self.successResultOf(Registry.load(self.open_db(path), clock, A, peer_ttl_s=90))
        self.assertEqual(loaded.state_hash(), reg.state_hash())
        self.assertEqual(loaded.digest(), reg.digest())
        self.assertEqual(loaded.function(F1), reg.function(F1))
        self.assertEqual(loaded.tracker(B), reg.tracker(B))
        self.assertEqual(loaded.peer(pid(1)), reg.peer(pid(1)))
        self.assertEqual(loaded.counts()["tombstones"], 1)
        self.assertEqual(loaded.upsert_peer(pid(4)).seq, reg.seq + 1)
        clock.advance(91)
        self.assertIn(pid(1).hex(), [c.ident for c in loaded.expire()])
        self.assertIsNotNone(loaded.function(F1))

    def test_other_trackers_database_is_not_adopted(self):
        """A tracker never adopts another tracker's registry file."""
        reg, clock = make(A)
        reg.upsert_function(F1, 1, OWNER)
        db = self.open_db(self.mktemp() + ".sqlite")
        self.successResultOf(reg.save(db))
        other = self.successResultOf(Registry.load(db, clock, B))
        self.assertEqual(other.functions(), [])

    def test_restore_respects_bounds(self):
        """A stored file larger than today's bounds loads only up to them."""
        reg, clock = make(A)
        for i in range(5):
            reg.upsert_peer(pid(i))
        db = self.open_db(self.mktemp() + ".sqlite")
        self.successResultOf(reg.save(db))
        loaded = self.successResultOf(Registry.load(db, clock, A, kinds=small_kinds(peer=2)))
        self.assertEqual(len(loaded.peers()), 2)
        self.flushLoggedErrors()


class ThreadedPersistenceTests(TestCase):
    """save/load through the real worker thread and a file on disk."""

    @inlineCallbacks
    def test_round_trip_on_disk(self):
        """Saving takes a copy at once: a write after save() is not in the file, everything before is."""
        path = self.mktemp() + ".sqlite"
        db = yield Database.open(reactor, path, regmod.MIGRATIONS)
        reg = Registry(reactor, A)
        for i in range(200):
            reg.upsert_peer(pid(i), [("127.0.0.1", 1000 + i)], functions={F1: 1})
        reg.upsert_function(F1, 1, OWNER)
        d = reg.save(db)
        reg.upsert_function(F2, 1, OWNER)  # after the copy: not saved
        yield d
        yield db.close()
        db = yield Database.open(reactor, path, regmod.MIGRATIONS)
        self.addCleanup(db.close)
        loaded = yield Registry.load(db, reactor, A)
        self.assertEqual(len(loaded.peers()), 200)
        self.assertEqual([f.fid for f in loaded.functions()], [F1])
        self.assertEqual(loaded.seq, 201)


class StampBoundTests(SynchronousTestCase):
    def test_a_remote_cannot_push_the_clock_to_the_end(self):
        """A change stamped lamport 2^63-1 is refused, and local changes keep being made and saved."""
        clock = Clock()
        other = b"\x02" * 32
        registry = Registry(clock, b"\x01" * 32)
        record = PeerRecord(b"\x03" * 32, other, addresses=(("10.0.0.1", 7401),), roles=1)
        self.assertIs(registry.apply_remote(Change(other, 1, 2**63 - 1, fed.PEER, record=record)), ApplyResult.REFUSED)
        self.assertIsNone(registry.peer(b"\x03" * 32))
        change = registry.upsert_peer(b"\x04" * 32, addresses=[("10.0.0.2", 7401)])
        self.assertLess(change.lamport, 2**32)

    def test_our_own_seq_cannot_be_pushed_to_the_end(self):
        """A change claiming our own origin with seq 2^63-1 is refused; our next change follows our real seq."""
        me = b"\x01" * 32
        registry = Registry(Clock(), me)
        first = registry.upsert_peer(b"\x05" * 32, addresses=[("10.0.0.3", 7401)])
        record = PeerRecord(b"\x06" * 32, me, addresses=(("10.0.0.4", 7401),), roles=1)
        self.assertIs(registry.apply_remote(Change(me, 2**63 - 1, 5, fed.PEER, record=record)), ApplyResult.REFUSED)
        self.assertEqual(registry.upsert_peer(b"\x07" * 32, addresses=[("10.0.0.5", 7401)]).seq, first.seq + 1)
