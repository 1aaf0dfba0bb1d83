"""Tests for orb.tracker.registry: the registry core and its federation."""

import json

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orb._db import Database
from orb.tracker import registry as regmod
from orb.tracker.registry import (
    ApplyResult,
    Change,
    Delta,
    Digest,
    FunctionRecord,
    Registry,
    RegistryChangeError,
    RegistryFull,
    Snapshot,
)

A = b"\xaa" * 32
B = b"\xbb" * 32
C = b"\xcc" * 32
OWNER = b"\x0f" * 32


def pid(n):
    return n.to_bytes(2, "big") * 16


def make(tracker_id=A, clock=None, **kw):
    clock = clock or Clock()
    return Registry(clock, tracker_id, **kw), clock


def sync(src, dst):
    """One anti-entropy round from src to dst, repeated while `more`."""
    for _ in range(100):
        answer = src.delta_since(dst.digest())
        if isinstance(answer, Snapshot):
            for part in src.snapshot_parts():
                dst.apply_snapshot(Snapshot.from_bytes(part.to_bytes()))
            return "snapshot"
        answer = Delta.from_bytes(answer.to_bytes())
        for c in answer.changes:
            assert dst.apply_remote(c) in (ApplyResult.APPLIED, ApplyResult.STALE)
        if not answer.more:
            return "delta"
    raise AssertionError("sync did not finish")


class LocalTests(SynchronousTestCase):
    def test_upsert_peer_emits_change(self):
        reg, clock = make()
        seen = []
        reg.subscribe(seen.append)
        ch = reg.upsert_peer(pid(1), [("127.0.0.1", 7401)], "reachable", functions={"abc": 1})
        self.assertEqual((ch.origin, ch.seq, ch.lamport, ch.kind), (A, 1, 1, "peer_upsert"))
        self.assertEqual(seen, [ch])
        p = reg.peer(pid(1))
        self.assertEqual(p.home, A)
        self.assertEqual(p.function_map, {"abc": 1})
        self.assertEqual(reg.counts()["peers"], 1)
        # Re-announcing the same thing replicates nothing.
        self.assertIsNone(reg.upsert_peer(pid(1), [("127.0.0.1", 7401)], "reachable", functions={"abc": 1}))
        self.assertEqual(reg.update_peer(pid(1), load=0.5).seq, 2)

    def test_bad_local_input_is_refused(self):
        reg, _ = make()
        with self.assertRaises(RegistryChangeError):
            reg.upsert_peer(pid(1), reachability="maybe")
        with self.assertRaises(RegistryChangeError):
            reg.upsert_function("NOT-BASE32", 1, OWNER)
        with self.assertRaises(ValueError):
            reg.upsert_peer(b"short")
        with self.assertRaises(TypeError):
            reg.upsert_peer(pid(1))
            reg.update_peer(pid(1), colour="blue")
        self.assertEqual(reg.seq, 1)

    def test_functions_and_hosts(self):
        reg, _ = make()
        reg.upsert_function("abc", 2, OWNER, replicas=2)
        reg.upsert_peer(pid(1), functions={"abc": 2}, rtt_ms=30.0)
        reg.upsert_peer(pid(2), functions={"abc": 2}, rtt_ms=5.0)
        reg.upsert_peer(pid(3), functions={"zzz": 1}, rtt_ms=1.0)
        reg.upsert_peer(pid(4), functions={"abc": 2})
        self.assertEqual([p.node_id for p in reg.hosts_of("abc")], [pid(2), pid(1), pid(4)])
        self.assertEqual(reg.function("abc"), FunctionRecord("abc", 2, OWNER, 2))
        reg.remove_function("abc")
        self.assertIsNone(reg.function("abc"))

    def test_rtt_replicated_only_on_big_moves(self):
        reg, _ = make()
        reg.upsert_peer(pid(1))
        self.assertIsNotNone(reg.record_rtt(pid(1), 100.0))
        self.assertIsNone(reg.record_rtt(pid(1), 110.0))
        self.assertEqual(reg.peer(pid(1)).rtt_ms, 100.0)
        self.assertIsNotNone(reg.record_rtt(pid(1), 200.0))
        self.assertEqual(reg.peer(pid(1)).rtt_ms, 200.0)

    def test_bounds(self):
        self.patch(regmod, "MAX_PEERS", 3)
        self.patch(regmod, "MAX_FUNCTIONS", 1)
        reg, _ = make()
        for i in range(3):
            reg.upsert_peer(pid(i))
        with self.assertRaises(RegistryFull):
            reg.upsert_peer(pid(9))
        reg.upsert_peer(pid(0), load=1.0)  # updating a known one is fine
        reg.upsert_function("abc", 1, OWNER)
        with self.assertRaises(RegistryFull):
            reg.upsert_function("abd", 1, OWNER)
        # A remote peer beyond the bound is dropped, not crashed on.
        other, _ = make(B)
        ch = other.upsert_peer(pid(10))
        self.assertEqual(reg.apply_remote(ch), ApplyResult.APPLIED)
        self.assertIsNone(reg.peer(pid(10)))
        self.assertEqual(len(reg.peers()), 3)

    def test_change_log_bounded(self):
        self.patch(regmod, "MAX_CHANGE_LOG", 10)
        reg, _ = make()
        for i in range(50):
            reg.upsert_peer(pid(1), load=float(i))
        self.assertEqual(reg.counts()["changes_logged"], 10)


class LivenessTests(SynchronousTestCase):
    def test_expire_own_peers(self):
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
        a, clock = make(A, peer_ttl_s=90)
        b, _ = make(B, clock=clock, peer_ttl_s=90)
        a.apply_remote(b.upsert_tracker(B, [("127.0.0.2", 7400)]))
        a.apply_remote(b.upsert_peer(pid(1)))
        a.set_tracker_connected(B, True)
        clock.advance(500)
        self.assertEqual(a.expire(), [])  # B is connected: its peers are its business
        a.set_tracker_connected(B, False)
        clock.advance(a.tracker_ttl_s + 1)
        gone = a.expire()
        self.assertEqual([(c.ident, c.reason) for c in gone], [(pid(1).hex(), "home-gone")])

    def test_tombstones_expire(self):
        reg, clock = make(tombstone_ttl_s=100)
        reg.upsert_peer(pid(1))
        reg.remove_peer(pid(1))
        self.assertEqual(reg.counts()["tombstones"], 1)
        clock.advance(101)
        reg.expire()
        self.assertEqual(reg.counts()["tombstones"], 0)


class FederationTests(SynchronousTestCase):
    def test_live_replication_via_subscribe(self):
        a, clock = make(A)
        b, _ = make(B, clock=clock)
        a.subscribe(lambda ch: b.apply_remote(Change.from_bytes(ch.to_bytes())))
        a.upsert_peer(pid(1), [("127.0.0.1", 7401)], "relayed")
        a.upsert_function("abc", 1, OWNER)
        self.assertEqual(b.peer(pid(1)).reachability, "relayed")
        self.assertEqual(b.peer(pid(1)).home, A)
        self.assertEqual(b.function("abc").version, 1)
        self.assertEqual(a.state_hash(), b.state_hash())
        self.assertEqual(a.digest().known, b.digest().known)

    def test_apply_remote_idempotent_and_ordered(self):
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
        self.patch(regmod, "MAX_ORIGINS", 2)
        a, _ = make(A)
        a.upsert_function("abc", 1, OWNER)
        self.assertEqual(a.apply_remote(Registry(Clock(), B).upsert_peer(pid(1))), ApplyResult.APPLIED)
        self.assertEqual(a.apply_remote(Registry(Clock(), C).upsert_peer(pid(2))), ApplyResult.REFUSED)
        self.assertIsNone(a.peer(pid(2)))

    def test_own_changes_coming_back_are_stale(self):
        a, _ = make(A)
        ch = a.upsert_peer(pid(1))
        self.assertEqual(a.apply_remote(ch), ApplyResult.STALE)

    def test_lost_database_never_reuses_seq(self):
        a, _ = make(A)
        old = [a.upsert_peer(pid(i)) for i in range(1, 4)]
        fresh, _ = make(A)
        self.assertEqual(fresh.apply_remote(old[2]), ApplyResult.APPLIED)
        self.assertEqual(fresh.upsert_peer(pid(9)).seq, 4)

    def test_seq_jump_after_restore_does_not_leave_gaps(self):
        """A tracker restored from an old backup hears its newer past: the
        others must not be fed a log with holes in it."""
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
        a, clock = make(A)
        b, _ = make(B, clock=clock)
        a.upsert_function("abc", 1, OWNER)
        sync(a, b)
        # Partition: both sides change things.
        for i in range(5):
            a.upsert_peer(pid(i))
        b.upsert_peer(pid(100))
        b.upsert_function("abc", 2, OWNER)
        self.assertNotEqual(a.state_hash(), b.state_hash())
        self.assertEqual(sync(a, b), "delta")
        self.assertEqual(sync(b, a), "delta")
        self.assertEqual(a.state_hash(), b.state_hash())
        self.assertEqual(a.function("abc").version, 2)
        self.assertEqual(len(b.peers()), 6)
        # Nothing more to say.
        self.assertEqual(a.delta_since(b.digest()), Delta(changes=()))

    def test_truncated_log_falls_back_to_snapshot(self):
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
        # Afterwards B can serve a third tracker with a snapshot too.
        c, _ = make(C)
        sync(b, c)
        self.assertEqual(c.state_hash(), a.state_hash())

    def test_snapshot_parts(self):
        a, _ = make(A)
        b, _ = make(B)
        for i in range(50):
            a.upsert_peer(pid(i), [("127.0.0.1", 1000 + i)], functions={"abc": 1})
        parts = a.snapshot_parts(max_bytes=8000)
        self.assertGreater(len(parts), 2)
        for p in parts:
            self.assertLessEqual(len(p.to_bytes()), 8000)
        self.assertEqual([bool(p.known) for p in parts], [False] * (len(parts) - 1) + [True])
        for p in parts:
            b.apply_snapshot(p)
        self.assertEqual(a.state_hash(), b.state_hash())

    def test_delta_respects_byte_budget(self):
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
        a, _ = make(A)
        b, _ = make(B)
        a.upsert_peer(pid(1))
        sync(a, b)
        b._merge("fn:zzz", 1, C, FunctionRecord("zzz", 1, OWNER), 0.0)  # corruption
        self.assertIsInstance(a.delta_since(b.digest()), Snapshot)

    def test_remote_removal_of_live_home_peer_is_undone(self):
        a, clock = make(A)
        b, _ = make(B, clock=clock)
        sync(a, b)
        a.upsert_peer(pid(1))
        sync(a, b)
        # B wrongly thinks A is gone and removes A's peer.
        wrong = b.remove_peer(pid(1), "home-gone")
        a.apply_remote(wrong)
        self.assertIsNotNone(a.peer(pid(1)))
        sync(a, b)
        self.assertIsNotNone(b.peer(pid(1)))
        self.assertEqual(a.state_hash(), b.state_hash())

    def test_rehome(self):
        a, clock = make(A)
        b, _ = make(B, clock=clock)
        b.upsert_tracker(B, [("127.0.0.2", 7400)])
        a.upsert_peer(pid(1))
        sync(a, b)
        b.upsert_peer(pid(1))  # the peer moved to B
        sync(b, a)
        self.assertEqual(a.peer(pid(1)).home, B)
        a.set_tracker_connected(B, True)
        clock.advance(200)
        self.assertEqual(a.expire(), [])  # no longer A's to expire while B lives
        self.assertEqual(b.expire()[0].reason, "timeout")  # but B's, once it stops hearing from it


fids = st.sampled_from(["abc", "def", "ghi"])
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
    for origin, op, n, fid in script:
        r = regs[origin]
        if op == "peer":
            ch = r.upsert_peer(pid(n), load=float(len(out)))
        elif op == "rm_peer":
            ch = r.remove_peer(pid(n))
        elif op == "fn":
            ch = r.upsert_function(fid, len(out), OWNER)
        else:
            ch = r.remove_function(fid)
        # Let the others see it sometimes, so lamports interleave.
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
        changes = make_changes(script)
        shuffled = list(changes)
        rnd.shuffle(shuffled)
        x = Registry(Clock(), b"\x01" * 32)
        y = Registry(Clock(), b"\x02" * 32)
        apply_all(x, changes)
        apply_all(y, shuffled)
        self.assertEqual(x.state_hash(), y.state_hash())
        self.assertEqual(sorted(x.peers(), key=lambda p: p.node_id), sorted(y.peers(), key=lambda p: p.node_id))
        # Idempotent: everything again changes nothing.
        before = x.state_hash()
        self.assertEqual([x.apply_remote(c) for c in shuffled], [ApplyResult.STALE] * len(shuffled))
        self.assertEqual(x.state_hash(), before)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_raise_only_change_error(self, data):
        for cls in (Change, Digest, Delta, Snapshot):
            try:
                cls.from_bytes(data)
            except RegistryChangeError:
                pass

    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def test_mutated_changes_raise_only_change_error(self, data):
        reg, _ = make()
        ch = reg.upsert_peer(pid(1), [("127.0.0.1", 7401)], functions={"abc": 1}, rtt_ms=3.5)
        d = ch.to_dict()
        path = data.draw(st.sampled_from([("seq",), ("origin",), ("kind",), ("body", "node_id"),
                                          ("body", "addresses"), ("body", "functions"), ("body", "rtt_ms"),
                                          ("body", "reachability"), ("body", "load"), ("body",)]))
        value = data.draw(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=70),
                                    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=3)))
        target = d
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value
        try:
            back = Change.from_dict(d)
        except RegistryChangeError:
            return
        # Whatever was accepted re-encodes to something that decodes the same.
        self.assertEqual(Change.from_bytes(back.to_bytes()), back)


class WireFormatTests(SynchronousTestCase):
    def test_round_trips(self):
        reg, _ = make()
        changes = [
            reg.upsert_peer(pid(1), [("127.0.0.1", 7401), ("::1", 7402)], "reachable", 12.5, 0.25, {"abc": 3}, 5),
            reg.upsert_function("abc", 3, OWNER, 4),
            reg.upsert_tracker(B, [("127.0.0.2", 7400)]),
            reg.remove_peer(pid(1), "left"),
            reg.remove_function("abc"),
            reg.remove_tracker(B),
        ]
        for ch in changes:
            self.assertEqual(Change.from_bytes(ch.to_bytes()), ch)
        d = reg.digest()
        self.assertEqual(Digest.from_bytes(d.to_bytes()), d)
        s = reg.snapshot()
        self.assertEqual(Snapshot.from_bytes(s.to_bytes()), s)

    def test_canonical_json(self):
        reg, _ = make()
        ch = reg.upsert_peer(pid(1), functions={"b": 1, "a": 2})
        data = ch.to_bytes()
        self.assertEqual(data, json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode())
        self.assertIn(b'"functions":{"a":2,"b":1}', data)

    def good(self):
        reg, _ = make()
        return reg.upsert_peer(pid(1), [("127.0.0.1", 7401)]).to_dict()

    def assertBad(self, data):
        with self.assertRaises(RegistryChangeError):
            Change.from_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())

    def test_malformed(self):
        self.assertBad(b"")
        self.assertBad(b"\xff\xfe")
        self.assertBad(b"[" * 100_000)  # too big
        self.assertBad(b"[" * 5000 + b"]" * 5000)  # deep
        self.assertBad(b'{"seq": 1, "seq": 2}')
        self.assertBad(b'{"x": NaN}')
        self.assertBad([])
        d = self.good()
        d["extra"] = 1
        self.assertBad(d)
        for field, value in [
            ("seq", 0), ("seq", True), ("seq", 1.0), ("seq", 2**63), ("lamport", "1"),
            ("origin", "zz" * 32), ("origin", "aa"), ("kind", "peer_delete"),
        ]:
            d = self.good()
            d[field] = value
            self.assertBad(d)
        for field, value in [
            ("addresses", [["999.1.1.1", 1]]), ("addresses", [["127.0.0.1", 0]]), ("addresses", [["::1", 1]] * 9),
            ("reachability", "yes"), ("rtt_ms", -1), ("load", float("inf")), ("functions", {"ABC": 1}),
            ("functions", {"abc": -1}), ("roles", 2**40), ("home", None),
        ]:
            d = self.good()
            d["body"][field] = value
            try:
                self.assertBad(d)
            except ValueError:  # json.dumps refuses inf itself
                pass
        d = self.good()
        d["kind"] = "peer_remove"
        self.assertBad(d)  # a removal has a different body

    def test_size_bound_before_parsing(self):
        with self.assertRaises(RegistryChangeError) as e:
            Change.from_bytes(b" " * (regmod.MAX_CHANGE_BYTES + 1))
        self.assertIn("limit", str(e.exception))


class PersistenceTests(SynchronousTestCase):
    def open_db(self, path):
        db = self.successResultOf(Database.open(None, path, regmod.MIGRATIONS, inline=True))
        self.addCleanup(db.close)
        return db

    def test_round_trip(self):
        reg, clock = make(peer_ttl_s=90)
        clock.advance(1000)
        reg.upsert_peer(pid(1), [("127.0.0.1", 7401)], "reachable", functions={"abc": 1})
        reg.upsert_function("abc", 1, OWNER)
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
        self.assertEqual(loaded.function("abc"), reg.function("abc"))
        self.assertEqual(loaded.tracker(B), reg.tracker(B))
        self.assertEqual(loaded.peer(pid(1)), reg.peer(pid(1)))
        # Sequence numbers continue, never restart.
        self.assertEqual(loaded.upsert_peer(pid(4)).seq, reg.seq + 1)
        # Peers are soft state: without a touch they expire.
        clock.advance(91)
        self.assertIn(pid(1).hex(), [c.ident for c in loaded.expire()])
        self.assertIsNotNone(loaded.function("abc"))

    def test_other_trackers_database_is_not_adopted(self):
        reg, clock = make(A)
        reg.upsert_function("abc", 1, OWNER)
        db = self.open_db(self.mktemp() + ".sqlite")
        self.successResultOf(reg.save(db))
        other = self.successResultOf(Registry.load(db, clock, B))
        self.assertEqual(other.functions(), [])

    def test_corrupt_rows_skipped(self):
        reg, clock = make(A)
        reg.upsert_function("abc", 1, OWNER)
        db = self.open_db(self.mktemp() + ".sqlite")
        self.successResultOf(reg.save(db))
        self.successResultOf(
            db.run(lambda c: c.execute("INSERT INTO registry_entry VALUES ('fn:x', 1, 'zz', '{', 0, NULL)"))
        )
        loaded = self.successResultOf(Registry.load(db, clock, A))
        self.assertEqual([f.fid for f in loaded.functions()], ["abc"])


class ThreadedPersistenceTests(TestCase):
    """save/load through the real worker thread and a file on disk."""

    @inlineCallbacks
    def test_round_trip_on_disk(self):
        path = self.mktemp() + ".sqlite"
        db = yield Database.open(reactor, path, regmod.MIGRATIONS)
        reg = Registry(reactor, A)
        for i in range(200):
            reg.upsert_peer(pid(i), [("127.0.0.1", 1000 + i)], functions={"abc": 1})
        reg.upsert_function("abc", 1, OWNER)
        yield reg.save(db)
        reg.upsert_function("abd", 1, OWNER)  # after the snapshot: not saved
        yield db.close()
        db = yield Database.open(reactor, path, regmod.MIGRATIONS)
        self.addCleanup(db.close)
        loaded = yield Registry.load(db, reactor, A)
        self.assertEqual(len(loaded.peers()), 200)
        self.assertEqual([f.fid for f in loaded.functions()], ["abc"])
        self.assertEqual(loaded.seq, 201)
