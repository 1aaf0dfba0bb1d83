"""
Tests for the tracker registry: the federation payloads and signed records
(orb.protocol.federation), the registry core (orb.tracker.registry), its SQL
store (orb.tracker.store), the replica ranking (orb.tracker.routing) and the
address validator (orb.protocol.addresses).
"""

import hashlib
import json
import random
import re

import attrs
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
    BadSignature,
    Change,
    Delta,
    Digest,
    PeerRecord,
    Registry,
    RegistryChangeError,
    RegistryFull,
    Snapshot,
)
from orb.tracker.routing import rank_replicas
from tests import _records as records

KA, KB, KC = records.key("tracker-a"), records.key("tracker-b"), records.key("tracker-c")
A, B, C = KA.node_id, KB.node_id, KC.node_id
OWNER = records.key("owner")
T0 = 1_000_000  # the clock's start: statements are dated by it


def fid(label):
    """A real fid text, as a deployed package would have."""
    return fidmod.to_text(fidmod.fid_for(label.encode()))


F1, F2, F3 = fid("one"), fid("two"), fid("three")


def pkey(n):
    return records.key(f"peer-{n}")


def pid(n):
    return pkey(n).node_id


def make(key=KA, clock=None, **kw):
    if clock is None:
        clock = Clock()
        clock.advance(T0)
    return Registry(clock, key, **kw), clock


def small_kinds(**bounds):
    """The real kinds table with smaller bounds, e.g. ``peer=3``."""
    return fed.Kinds(attrs.evolve(s, max_records=bounds.get(s.name, s.max_records)) for s in fed.KINDS)


def announce(reg, n, seq=1, addresses=(("10.2.0.1", 7401),), **kw):
    """Peer n announces itself to ``reg`` (its home), now."""
    st = records.statement(pkey(n), reg.tracker_id, seq, int(reg.now()), addresses, **kw)
    return reg.announce_peer(st, reachability="reachable")


def sync(src, dst, link=None):
    """One anti-entropy round from src to dst, repeated while `more`."""
    for _ in range(100):
        answer = src.delta_since(dst.digest())
        if isinstance(answer, Snapshot):
            for part in src.snapshot_parts():
                dst.apply_snapshot(Snapshot.from_bytes(part.to_bytes(), src.kinds), link=link)
            return "snapshot"
        answer = Delta.from_bytes(answer.to_bytes(), src.kinds)
        for c in answer.changes:
            assert dst.apply_remote(c, link=link) in (ApplyResult.APPLIED, ApplyResult.STALE)
        if not answer.more:
            return "delta"
    raise AssertionError("sync did not finish")


def forged(record, **statement_fields):
    """``record`` with its peer statement altered and the old signature kept: what a lying relay sends."""
    return attrs.evolve(record, statement=attrs.evolve(record.statement, **statement_fields))


# -- the core: taking records in --------------------------------------------------------


class LocalTests(SynchronousTestCase):
    def test_announce_registers_the_peer_with_our_observation(self):
        """A peer's signed statement is listed, homed here, with this tracker's signed observation beside it."""
        reg, _ = make()
        change = announce(reg, 1, functions={F1: 2})
        self.assertEqual((change.origin, change.seq, change.kind), (A, 1, "peer"))
        rec = reg.peer(pid(1))
        self.assertEqual((rec.home, rec.addresses, rec.function_map), (A, (("10.2.0.1", 7401),), {F1: 2}))
        self.assertEqual((rec.observation.tracker, rec.reachability, rec.connected), (A, "reachable", True))
        rec.verify()  # both signatures hold

    def test_a_statement_for_another_home_is_refused(self):
        """A peer statement naming another tracker as home is refused here, and nothing is stored."""
        reg, _ = make()
        st = records.statement(pkey(1), B, time=T0)
        with self.assertRaises(BadSignature):
            reg.announce_peer(st)
        self.assertEqual(reg.counts()["entries"], 0)

    def test_a_badly_signed_statement_is_refused(self):
        """A statement whose signature does not match its content is refused and not stored."""
        reg, _ = make()
        st = records.statement(pkey(1), A, time=T0)
        with self.assertRaises(BadSignature):
            reg.announce_peer(attrs.evolve(st, addresses=(("10.66.6.6", 6666),)))
        with self.assertRaises(BadSignature):
            reg.announce_peer(attrs.evolve(st, key=pkey(2).public_bytes))  # another key: not this node id
        self.assertIsNone(reg.peer(pid(1)))

    def test_an_older_statement_does_not_replace_a_newer(self):
        """A replayed statement with a lower seq changes nothing: the peer's own counter orders its statements."""
        reg, _ = make()
        announce(reg, 1, seq=5, addresses=[("10.2.0.5", 7401)])
        self.assertIsNone(announce(reg, 1, seq=4, addresses=[("10.2.0.4", 7401)]))
        self.assertEqual(reg.peer(pid(1)).addresses, (("10.2.0.5", 7401),))
        self.assertIsNotNone(announce(reg, 1, seq=6, addresses=[("10.2.0.6", 7401)]))
        self.assertEqual(reg.peer(pid(1)).addresses, (("10.2.0.6", 7401),))

    def test_a_statement_from_the_future_is_refused(self):
        """A statement dated more than MAX_CLOCK_AHEAD_S ahead of the tracker's clock is refused with a clear error."""
        reg, _ = make()
        st = records.statement(pkey(1), A, time=T0 + regmod.MAX_CLOCK_AHEAD_S + 5)
        with self.assertRaises(RegistryChangeError) as e:
            reg.announce_peer(st)
        self.assertIn("clock", str(e.exception))

    def test_observations_are_re_signed_only_for_our_peers(self):
        """Reachability and RTT go into a new signed observation of a peer homed here; never of one homed elsewhere."""
        reg, clock = make()
        announce(reg, 1)
        obs_seq = reg.peer(pid(1)).observation.seq
        self.assertIsNotNone(reg.observe_peer(pid(1), reachability="relayed"))
        rec = reg.peer(pid(1))
        self.assertEqual(rec.reachability, "relayed")
        self.assertGreater(rec.observation.seq, obs_seq)
        self.assertIsNone(reg.observe_peer(pid(1), reachability="relayed"))  # nothing changed
        other, _ = make(KB, clock)
        announce(other, 2)
        sync(other, reg)
        self.assertIsNone(reg.observe_peer(pid(2), reachability="relayed"))
        self.assertEqual(reg.peer(pid(2)).reachability, "reachable")

    def test_rtt_is_re_signed_only_when_it_moves(self):
        """An RTT within a quarter of the last one is not re-signed, so pings do not flood federation."""
        reg, _ = make()
        announce(reg, 1)
        self.assertIsNotNone(reg.record_rtt(pid(1), 20.4))
        self.assertEqual(reg.peer(pid(1)).rtt_ms, 20)
        self.assertIsNone(reg.record_rtt(pid(1), 24))
        self.assertIsNotNone(reg.record_rtt(pid(1), 40))
        self.assertIsNone(reg.record_rtt(pid(9), 5))  # unknown peer

    def test_own_tracker_record_is_signed_and_re_signed(self):
        """A tracker's own record is signed by it; each re-sign has a higher seq and a fresh time."""
        reg, clock = make()
        first = reg.publish_self([("127.0.0.1", 7400)]).record
        first.verify()
        clock.advance(60)
        second = reg.publish_self([("127.0.0.1", 7400)]).record
        self.assertGreater(second.seq, first.seq)
        self.assertEqual(second.time, T0 + 60)
        self.assertEqual(reg.tracker(A), second)

    def test_functions_are_signed_by_their_owner(self):
        """A function record signed by its owner is taken; one whose signature does not match is refused."""
        reg, _ = make()
        good = records.function_record(OWNER, F1, time=T0, version="2.0.0")
        self.assertIsNotNone(reg.upsert_function(good))
        self.assertEqual(reg.function(F1).version, "2.0.0")
        with self.assertRaises(BadSignature):
            reg.upsert_function(attrs.evolve(good, issued_at=T0 + 1, manifest=records.manifest_bytes(version="3")))
        with self.assertRaises(BadSignature):
            reg.upsert_function(attrs.evolve(good, owner=records.key("thief").public_bytes))
        self.assertEqual(reg.function(F1), good)

    def test_a_full_peer_table_gives_way_only_to_fresher_statements(self):
        """At the bound, a newer statement takes the place of the oldest; a function table that is full says so."""
        reg, clock = make(kinds=small_kinds(peer=2, function=1))
        announce(reg, 1)
        clock.advance(10)
        announce(reg, 2)
        clock.advance(10)
        announce(reg, 3)
        self.assertEqual({p.node_id for p in reg.peers()}, {pid(2), pid(3)})
        reg.upsert_function(records.function_record(OWNER, F1, time=T0))
        with self.assertRaises(RegistryFull):
            reg.upsert_function(records.function_record(OWNER, F2, time=T0))

    def test_statement_seq_follows_the_clock(self):
        """Our statement counter only grows, and after a restart starts above where it was (it follows the clock)."""
        reg, clock = make()
        a, b = reg.next_statement_seq(), reg.next_statement_seq()
        self.assertGreater(b, a)
        again, _ = make(clock=clock)
        clock.advance(0.001)
        self.assertGreater(again.next_statement_seq(), b)


# -- the kinds table --------------------------------------------------------------------


class KindsTableTests(SynchronousTestCase):
    """A new kind of record is one entry in the kinds table, and nothing else."""

    def setUp(self):
        @attrs.frozen
        class Note:
            """A note signed by its author: the smallest signed kind."""

            name: str
            author: bytes
            seq: int
            text: str
            sig: bytes = b""

            @property
            def ident(self):
                return self.name

            def statement(self):
                return {"name": self.name, "author": self.author.hex(), "seq": str(self.seq), "text": self.text}

            def to_dict(self):
                return {**self.statement(), "sig": self.sig.hex()}

            def signed(self, key):
                return attrs.evolve(self, sig=key.sign(fed.signed_bytes(b"ORB-NOTE-v1\x00", self.statement())))

            def verify(self):
                if not fed.verify_statement(b"ORB-NOTE-v1\x00", self.statement(), self.author, self.sig):
                    raise BadSignature("note: bad signature")

            def order(self):
                return (self.seq, self.text)

            @classmethod
            def from_dict(cls, d):
                if not isinstance(d, dict) or set(d) != {"name", "author", "seq", "text", "sig"}:
                    raise RegistryChangeError("note: malformed")
                return cls(note_name(d["name"]), fed.check_hex_id(d["author"], "author"),
                           fed.check_u64_text(d["seq"], 1, fed.MAX_STAMP, "seq"),
                           fed.check_text(d["text"], 20, "note text"), bytes.fromhex(d["sig"]))

        def note_name(v):
            if not isinstance(v, str) or not re.fullmatch(r"[a-z]{1,16}", v):
                raise RegistryChangeError("note name: malformed")
            return v

        self.Note = Note
        self.author = records.key("author")
        self.kinds = fed.KINDS.with_kind(fed.KindSpec("note", "note", Note, note_name, 2))

    def note(self, name, text, seq=1):
        return self.Note(name, self.author.public_bytes, seq, text).signed(self.author)

    def test_dummy_kind_replicates_snapshots_and_persists(self):
        """A kind added in the table alone is taken in, replicated, snapshotted, bounded and stored like the others."""
        a, clock = make(KA, kinds=self.kinds)
        b, _ = make(KB, clock=clock, kinds=self.kinds)
        a.subscribe(lambda ch: b.apply_remote(Change.from_bytes(ch.to_bytes(), self.kinds)))
        ch = a.accept(self.note("hello", "world"))
        self.assertEqual((ch.kind, ch.key), ("note", "note:hello"))
        self.assertEqual(b.record("note", "hello"), self.note("hello", "world"))
        a.accept(self.note("bye", "now"))
        with self.assertRaises(RegistryFull):
            a.accept(self.note("third", "one"))
        with self.assertRaises(BadSignature):
            a.accept(attrs.evolve(self.note("hello", "world"), seq=2, text="forged"))
        a.accept(self.note("bye", "later", seq=2))
        self.assertEqual(b.record("note", "bye").text, "later")
        self.assertEqual(a.state_hash(), b.state_hash())
        c, _ = make(KC, clock=clock, kinds=self.kinds)
        self.assertEqual(sync(a, c), "delta")
        self.assertEqual(c.state_hash(), a.state_hash())
        db = self.successResultOf(Database.open(None, self.mktemp() + ".sqlite", store.MIGRATIONS, inline=True))
        self.addCleanup(db.close)
        self.successResultOf(a.save(db))
        loaded = self.successResultOf(Registry.load(db, clock, KA, kinds=self.kinds))
        self.assertEqual(loaded.state_hash(), a.state_hash())

    def test_dummy_kind_remote_input_is_checked(self):
        """A remote record of the new kind meets its validator, and its signature before it is taken."""
        good = {"origin": B.hex(), "seq": "1", "kind": "note", "body": self.note("x", "hi").to_dict()}
        self.assertEqual(Change.from_dict(good, self.kinds).record, self.note("x", "hi"))
        with self.assertRaises(RegistryChangeError):
            Change.from_dict(good)  # the default table does not know notes
        for body in ({**good["body"], "name": "X"}, {"name": "x"}):
            with self.assertRaises(RegistryChangeError):
                Change.from_dict(dict(good, body=body), self.kinds)
        reg, _ = make(kinds=self.kinds)
        tampered = Change.from_dict(dict(good, body={**good["body"], "text": "HI"}), self.kinds)
        self.assertIs(reg.apply_remote(tampered), ApplyResult.REFUSED)

    def test_duplicate_kinds_are_refused(self):
        """A table cannot hold two kinds with one name, prefix or record class, nor drop one the core needs."""
        with self.assertRaises(ValueError):
            fed.KINDS.with_kind(attrs.evolve(fed.PEER, record_type=self.Note))
        with self.assertRaises(ValueError):
            Registry(Clock(), KA, kinds=fed.Kinds([fed.PEER, fed.TRACKER]))


# -- liveness -------------------------------------------------------------------------


class LivenessTests(SynchronousTestCase):
    def test_a_peer_is_stale_when_its_statement_is_old(self):
        """A peer whose latest statement is older than the TTL is no longer listed, but still held; a new one revives it."""
        reg, clock = make(peer_ttl_s=90)
        announce(reg, 1)
        held = reg.state_hash()
        clock.advance(91)
        self.assertEqual(reg.expire(), ["peer:" + pid(1).hex()])
        self.assertIsNone(reg.peer(pid(1)))
        self.assertEqual(reg.state_hash(), held)  # every tracker keeps the same map
        announce(reg, 1, seq=2)
        self.assertIsNotNone(reg.peer(pid(1)))

    def test_a_peer_its_home_sees_gone_is_not_served(self):
        """When the home observes the peer's session gone, the peer is not listed, here and at other trackers."""
        reg, clock = make()
        other, _ = make(KB, clock)
        announce(reg, 1)
        sync(reg, other)
        reg.observe_peer(pid(1), connected=False)
        sync(reg, other)
        self.assertIsNone(reg.peer(pid(1)))
        self.assertIsNone(other.peer(pid(1)))

    def test_each_tracker_judges_remote_peers_by_statement_age(self):
        """A peer homed elsewhere goes stale here from its statement's age alone, whatever its home says."""
        home, clock = make(KB)
        here, _ = make(KA, clock)
        announce(home, 1)
        sync(home, here)
        clock.advance(60)
        home.record_rtt(pid(1), 500)  # the home re-signs its observation: the statement itself is no newer
        sync(home, here)
        clock.advance(31)
        here.expire()
        self.assertIsNone(here.peer(pid(1)))

    def test_stale_tracker_records_expire(self):
        """A tracker record not re-signed for the tracker TTL is no longer listed; a re-sign brings it back."""
        reg, clock = make()
        other, _ = make(KB, clock)
        other.publish_self([("10.1.0.2", 7400)])
        sync(other, reg)
        self.assertIsNotNone(reg.tracker(B))
        clock.advance(reg.tracker_ttl_s + 1)
        reg.expire()
        self.assertIsNone(reg.tracker(B))
        other.publish_self([("10.1.0.2", 7400)])
        sync(other, reg)
        self.assertIsNotNone(reg.tracker(B))

    def test_old_records_are_purged(self):
        """A record whose statement is more than PURGE_AFTER_S old is forgotten, and not taken in again."""
        reg, clock = make()
        announce(reg, 1)
        old = reg.stored("peer", pid(1).hex())
        clock.advance(regmod.PURGE_AFTER_S + 1)
        reg.expire()
        self.assertEqual(reg.counts()["entries"], 0)
        other, _ = make(KB, clock)
        self.assertIs(other.apply_remote(Change(A, 1, fed.PEER, old)), ApplyResult.APPLIED)
        self.assertIsNone(other.stored("peer", pid(1).hex()))


# -- federation -----------------------------------------------------------------------


class FederationTests(SynchronousTestCase):
    def test_two_trackers_converge(self):
        """Peers, trackers and functions taken in at either tracker end up at both, with equal state hashes."""
        a, clock = make(KA)
        b, _ = make(KB, clock)
        a.publish_self([("10.1.0.1", 7400)])
        b.publish_self([("10.1.0.2", 7400)])
        announce(a, 1)
        announce(b, 2)
        a.upsert_function(records.function_record(OWNER, F1, time=T0))
        self.assertEqual(sync(a, b), "delta")
        self.assertEqual(sync(b, a), "delta")
        self.assertEqual(a.state_hash(), b.state_hash())
        self.assertEqual({p.node_id for p in b.peers()}, {pid(1), pid(2)})
        self.assertEqual(b.peer(pid(1)).home, A)
        self.assertEqual({t.node_id for t in a.trackers()}, {A, B})

    def test_a_forged_address_rewrite_has_no_effect(self):
        """The attack of issue 9: a change moving a live peer to 10.66.6.6 with a high seq is refused, and scored."""
        a, clock = make(KA)
        liar, _ = make(KB, clock)
        announce(a, 1)
        sync(a, liar)
        real = a.peer(pid(1))
        fake = forged(real, seq=2**62, addresses=(("10.66.6.6", 6666),), home=B)
        self.assertIs(a.apply_remote(Change(B, 1, fed.PEER, fake), link=B), ApplyResult.REFUSED)
        self.assertEqual(a.peer(pid(1)), real)
        self.assertNotIn(B, a.digest().known)  # not delivered: the next try is refused again

    def test_an_observation_by_another_tracker_is_refused(self):
        """Only the tracker the peer named home may observe it: another tracker's signed observation is refused."""
        a, clock = make(KA)
        announce(a, 1)
        rec = a.peer(pid(1))
        theirs = records.observation(KB, rec.statement, seq=rec.observation.seq + 1, reachability="relayed")
        other, _ = make(KC, clock)
        self.assertIs(other.apply_remote(Change(B, 1, fed.PEER, attrs.evolve(rec, observation=theirs))),
                      ApplyResult.REFUSED)

    def test_an_observation_cannot_move_to_another_statement(self):
        """An observation is bound to one statement: attached to a newer statement of the peer, it is refused."""
        a, _ = make(KA)
        announce(a, 1)
        rec = a.peer(pid(1))
        newer = records.statement(pkey(1), A, seq=2, time=T0, addresses=[("10.2.0.9", 7401)])
        self.assertIs(a.apply_remote(Change(B, 1, fed.PEER, PeerRecord(newer, rec.observation))),
                      ApplyResult.REFUSED)

    def test_a_replayed_statement_is_delivered_but_changes_nothing(self):
        """An old but validly signed record relayed again advances delivery and leaves the newer record in place."""
        a, clock = make(KA)
        announce(a, 1, seq=1)
        old = a.peer(pid(1))
        announce(a, 1, seq=2, addresses=[("10.2.0.2", 7401)])
        b, _ = make(KB, clock)
        sync(a, b)
        self.assertIs(b.apply_remote(Change(C, 1, fed.PEER, old)), ApplyResult.APPLIED)
        self.assertEqual(b.peer(pid(1)).addresses, (("10.2.0.2", 7401),))

    def test_a_tracker_record_enters_only_as_its_own_change(self):
        """A tracker record relayed under another origin is refused: throwaway tracker identities need their own origin."""
        a, _ = make(KA)
        rec = records.tracker_record(KC, time=T0)
        self.assertIs(a.apply_remote(Change(B, 1, fed.TRACKER, rec)), ApplyResult.REFUSED)
        self.assertIs(a.apply_remote(Change(C, 1, fed.TRACKER, rec)), ApplyResult.APPLIED)
        self.assertIsNotNone(a.tracker(C))

    def test_one_link_introduces_a_bounded_number_of_origins(self):
        """One federation link may introduce MAX_ORIGINS_PER_LINK origins; another link is not affected."""
        self.patch(regmod, "MAX_ORIGINS_PER_LINK", 3)
        a, _ = make(KA)
        results = []
        for i in range(5):
            k = records.key(f"throwaway-{i}")
            results.append(a.apply_remote(Change(k.node_id, 1, fed.TRACKER, records.tracker_record(k, time=T0)),
                                          link=B))
        self.assertEqual(results, [ApplyResult.APPLIED] * 3 + [ApplyResult.REFUSED] * 2)
        self.assertEqual(len(a.trackers()), 3)
        self.assertIs(a.apply_remote(Change(C, 1, fed.TRACKER, records.tracker_record(KC, time=T0)), link=C),
                      ApplyResult.APPLIED)

    def test_origins_are_bounded_in_all(self):
        """Changes from more than MAX_ORIGINS trackers are refused, not stored."""
        self.patch(regmod, "MAX_ORIGINS", 2)
        a, _ = make(KA)
        announce(a, 1)  # our own origin is the first
        self.assertIs(a.apply_remote(Change(B, 1, fed.TRACKER, records.tracker_record(KB, time=T0))),
                      ApplyResult.APPLIED)
        self.assertIs(a.apply_remote(Change(C, 1, fed.TRACKER, records.tracker_record(KC, time=T0))),
                      ApplyResult.REFUSED)

    def test_gaps_are_detected(self):
        """A change that skips an earlier one from its origin is a GAP, and is applied after the gap is filled."""
        a, clock = make(KA)
        announce(a, 1)
        announce(a, 2)
        ch1, ch2 = a.delta_since(Digest({}, b"\0" * 32)).changes
        b, _ = make(KB, clock)
        self.assertIs(b.apply_remote(ch2), ApplyResult.GAP)
        self.assertIs(b.apply_remote(ch1), ApplyResult.APPLIED)
        self.assertIs(b.apply_remote(ch1), ApplyResult.STALE)
        self.assertIs(b.apply_remote(ch2), ApplyResult.APPLIED)

    def test_our_own_seq_cannot_be_pushed_to_the_end(self):
        """A change claiming our own origin at seq 2^63-1 is refused; our next change follows our real seq."""
        a, _ = make(KA)
        first = announce(a, 1)
        rec = a.peer(pid(1))
        self.assertIs(a.apply_remote(Change(A, 2**63 - 1, fed.PEER, rec)), ApplyResult.REFUSED)
        self.assertEqual(announce(a, 2).seq, first.seq + 1)

    def test_a_maximal_statement_seq_is_only_that_peers_business(self):
        """A peer statement at seq 2^63-1 is stored and saved as it is, and moves no other counter."""
        a, _ = make(KA)
        announce(a, 1, seq=2**63 - 1)
        self.assertEqual(a.peer(pid(1)).seq, 2**63 - 1)
        self.assertEqual(announce(a, 2).seq, 2)
        db = self.successResultOf(Database.open(None, self.mktemp() + ".sqlite", regmod.MIGRATIONS, inline=True))
        self.addCleanup(db.close)
        self.successResultOf(a.save(db))
        self.assertEqual(self.successResultOf(Registry.load(db, a._clock, KA)).state_hash(), a.state_hash())

    def test_snapshot_when_the_log_is_short(self):
        """When the change log no longer reaches back, a snapshot brings the other tracker level."""
        self.patch(regmod, "MAX_CHANGE_LOG", 3)
        a, clock = make(KA)
        b, _ = make(KB, clock)
        for n in range(6):
            announce(a, n)
        self.assertEqual(sync(a, b), "snapshot")
        self.assertEqual(b.state_hash(), a.state_hash())
        self.assertEqual(b.digest().known, a.digest().known)
        announce(a, 7)
        self.assertEqual(sync(a, b), "delta")
        self.assertEqual(b.state_hash(), a.state_hash())

    def test_snapshot_when_hashes_differ(self):
        """Equal counters but different maps (a lost database) are repaired by a snapshot."""
        a, clock = make(KA)
        b, _ = make(KB, clock)
        announce(a, 1)
        sync(a, b)
        b._entries.clear()  # as if its map were lost
        b._hash = None
        self.assertIsInstance(a.delta_since(b.digest()), Snapshot)
        sync(a, b)
        self.assertEqual(b.state_hash(), a.state_hash())

    def test_a_snapshot_with_a_forged_entry_is_refused_at_that_entry(self):
        """A snapshot part carrying a record that is not validly signed raises BadSignature; valid entries stand."""
        a, clock = make(KA)
        announce(a, 1)
        announce(a, 2)
        snap = a.snapshot()
        bad = fed.SnapshotEntry(snap.entries[1].key, forged(snap.entries[1].record, addresses=(("10.66.6.6", 1),)))
        b, _ = make(KB, clock)
        with self.assertRaises(BadSignature):
            b.apply_snapshot(Snapshot(entries=(snap.entries[0], bad)))
        self.assertEqual(b.counts()["entries"], 1)

    def test_delta_is_cut_at_the_byte_budget(self):
        """A delta that would pass the byte budget says `more`, and the rest comes on the next round."""
        a, clock = make(KA)
        for n in range(20):
            announce(a, n)
        b, _ = make(KB, clock)
        first = a.delta_since(b.digest(), max_bytes=5000)
        self.assertTrue(first.more)
        self.assertLess(len(first.changes), 20)
        self.assertEqual(sync(a, b), "delta")
        self.assertEqual(b.state_hash(), a.state_hash())

    def test_any_delivery_order_gives_one_state(self):
        """Three trackers' changes applied in any interleaving (per-origin order kept) give one state hash."""
        clock = Clock()
        clock.advance(T0)
        origins = [make(k, clock)[0] for k in (KA, KB, KC)]
        for i, reg in enumerate(origins):
            reg.publish_self([(f"10.1.0.{i + 1}", 7400)])
            for n in range(4):
                announce(reg, 10 * i + n)
            announce(origins[0] if i else origins[1], 99, seq=i + 1)  # one peer re-homing between trackers
        streams = [list(reg.delta_since(Digest({}, b"\0" * 32)).changes) for reg in origins]
        hashes = set()
        for trial in range(8):
            rnd = random.Random(trial)
            queues = [list(s) for s in streams]
            target, _ = make(records.key("observer"), clock)
            while any(queues):
                q = rnd.choice([q for q in queues if q])
                target.apply_remote(q.pop(0))
            hashes.add(target.state_hash())
            self.assertEqual(target.peer(pid(99)).seq, 3)
        self.assertEqual(len(hashes), 1)


# -- the payloads on the wire ---------------------------------------------------------


class WireFormatTests(SynchronousTestCase):
    def test_deep_json_is_refused_even_when_a_library_raised_the_recursion_limit(self):
        """A DELTA payload nested 200,000 deep is refused, not a crash, in a process where py-evm set the limit to 100,000."""
        import subprocess
        import sys

        code = ("import sys; sys.setrecursionlimit(100000)\n"
                "from orb.protocol import federation as fed\n"
                "try:\n    fed.parse_json(b'[' * 200000 + b']' * 200000, 3 << 20, 'delta')\n"
                "except fed.RegistryChangeError as e:\n    print(e)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        self.assertEqual(done.stdout.strip(), "delta: arrays and objects nested deeper than 64")
        self.assertEqual(fed.json_depth(b'{"a":[1,[2,{"b":"\\"[[["}]]}'), 4)  # brackets in strings do not count

    def populated(self):
        reg, _ = make()
        changes = [
            announce(reg, 1, addresses=[("127.0.0.1", 7401), ("::1", 7402)], load_permille=250, functions={F1: 3}),
            reg.upsert_function(records.function_record(OWNER, F1, time=T0, version="3", replicas=4)),
            reg.publish_self([("127.0.0.2", 7400)]),
            reg.observe_peer(pid(1), rtt_ms=12, connected=False),
        ]
        return reg, changes

    def test_round_trips(self):
        """Every kind of change, the digest and a snapshot decode to what was encoded."""
        reg, changes = self.populated()
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
            announce(reg, i, functions={F1: i})
        for part in reg.snapshot_parts(max_bytes=5000) + [reg.snapshot()]:
            document = {"entries": [e.to_list() for e in part.entries], "known": fed.known_to_dict(part.known)}
            self.assertEqual(part.to_bytes(), fed.canonical_json(document))

    def test_delta_bytes_are_jcs(self):
        """A delta assembled from cached change bytes is exactly the JCS of the whole document."""
        reg, _ = make()
        changes = [announce(reg, i, addresses=[("::1", 7400 + i)]) for i in range(3)]
        self.assertTrue(all(c.encoded for c in changes))
        for more in (False, True):
            delta = Delta(changes=tuple(changes), more=more)
            document = {"changes": [c.to_dict() for c in changes], "more": more}
            self.assertEqual(delta.to_bytes(), fed.canonical_json(document))
        self.assertEqual(Delta(changes=()).to_bytes(), b'{"changes":[],"more":false}')

    def test_signed_bytes_are_prefix_and_jcs(self):
        """What a statement's signature covers is its kind's prefix, a zero byte, and the JCS without `sig`."""
        st = records.statement(pkey(1), A, time=T0, functions={F2: 1, F1: 2})
        signed = fed.signed_bytes(fed.PEER_DOMAIN, st.to_dict())
        self.assertTrue(signed.startswith(b"ORB-PEER-v1\x00{"))
        body = json.loads(signed[len(b"ORB-PEER-v1\x00"):])
        self.assertNotIn("sig", body)
        self.assertEqual(signed[len(b"ORB-PEER-v1\x00"):], json.dumps(body, sort_keys=True, separators=(",", ":"),
                                                                      ensure_ascii=False).encode())
        self.assertTrue(fed.verify_statement(fed.PEER_DOMAIN, st.statement(), st.key, st.sig))
        self.assertFalse(fed.verify_statement(fed.TRACKER_DOMAIN, st.statement(), st.key, st.sig))

    def test_integers_only_and_counters_as_strings(self):
        """A JavaScript JSON.parse reads every number exactly: all are small integers, counters are strings."""
        reg, changes = self.populated()
        big = 2**63 - 1
        change = Change(A, big, fed.PEER, reg.stored("peer", pid(1).hex()))
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
        self.assertEqual(d["seq"], str(big))
        self.assertIsInstance(d["body"]["statement"]["seq"], str)

    def test_rfc_statement_vectors(self):
        """The signed-record vectors and the change example of RFC 8.6.1 are what the code produces and verify."""
        with open(spec.RFC_PATH, encoding="utf-8") as f:
            text = f.read()
        v = spec.statements_vector()
        for st in v["statements"]:
            self.assertIn(st["sha256"], text)
            self.assertEqual(hashlib.sha256(bytes.fromhex(st["signed_hex"])).hexdigest(), st["sha256"])
        block = text.split("<!-- example:federation-change -->\n```\n", 1)[1].split("\n```", 1)[0]
        data = block.encode("utf-8")
        self.assertEqual(data, v["change"].encode("utf-8"))
        self.assertIn(hashlib.sha256(data).hexdigest(), text)
        change = Change.from_bytes(data)
        change.record.verify()
        tracker, peer = spec.sample_keys()
        self.assertEqual((change.origin, change.record.node_id), (tracker.node_id, peer.node_id))

    def good(self):
        reg, _ = make()
        return announce(reg, 1, addresses=[("127.0.0.1", 7401)]).to_dict()

    def assertBad(self, data):
        with self.assertRaises(RegistryChangeError):
            Change.from_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())

    def test_malformed(self):
        """Each way a change can be malformed is refused with RegistryChangeError."""
        self.assertBad(b"")
        self.assertBad(b"\xff\xfe")
        self.assertBad(b"[" * 200_000)  # too big
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
            ("seq", str(2**63)), ("origin", "zz" * 32), ("origin", "AA" * 32), ("origin", "aa"),
            ("kind", "peer_upsert"), ("kind", "peer_remove"),
        ]:
            d = self.good()
            d[field] = value
            self.assertBad(d)
        for field, value in [
            ("addresses", [["999.1.1.1", 1]]), ("addresses", [["127.0.0.1", 0]]), ("addresses", [["::1", 1]] * 9),
            ("addresses", [["::0:1", 1]]), ("addresses", [["::ffff:1.2.3.4", 1]]), ("addresses", [["fe80::1%eth0", 1]]),
            ("load_permille", 1001), ("load_permille", None), ("functions", {"ABC": 1}), ("functions", {"abc": 1}),
            ("functions", {F1: -1}), ("roles", 2**40), ("home", None), ("seq", 1), ("seq", "0"), ("time", -1),
            ("time", 2**53), ("time", "1"), ("sig", "00" * 63), ("sig", "AB" * 64), ("key", None),
        ]:
            d = self.good()
            d["body"]["statement"][field] = value
            self.assertBad(d)
        for field, value in [("reachability", "yes"), ("rtt_ms", -1), ("rtt_ms", 600_001), ("connected", 1),
                             ("statement_seq", 1), ("tracker", "00")]:
            d = self.good()
            d["body"]["observation"][field] = value
            self.assertBad(d)
        d = self.good()
        del d["body"]["observation"]
        self.assertBad(d)  # a peer record always carries its home's observation

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

    def test_a_peer_listing_every_function_fits_in_a_change(self):
        """A statement listing MAX_FUNCTIONS_PER_PEER functions still fits in one change."""
        reg, _ = make()
        fns = {fid(f"f{i}"): 2**32 - 1 for i in range(fed.MAX_FUNCTIONS_PER_PEER)}
        change = announce(reg, 1, functions=fns)
        self.assertLessEqual(len(change.to_bytes()), fed.MAX_CHANGE_BYTES)

    def test_one_limit_for_registry_json(self):
        """A DELTA payload the codec accepts is one the registry accepts: one limit, defined once."""
        from orb.protocol import messages

        self.assertEqual(fed.MAX_PAYLOAD_BYTES, messages.MAX_REGISTRY_JSON_BYTES)
        self.assertEqual(fed.MAX_ADDRESSES, messages.MAX_LISTEN_ADDRESSES)
        self.assertEqual(fed.MAX_FUNCTIONS_PER_PEER, messages.MAX_ANNOUNCE_ENTRIES)

    def test_snapshot_entry_must_match_its_key(self):
        """A snapshot entry whose record is not the one its key names is refused."""
        reg, _ = make()
        announce(reg, 1)
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
    return records.peer_record(pkey(n), KA, addresses=[("127.0.0.1", 7400 + n)], reachability=reachability,
                               rtt_ms=rtt_ms, load_permille=load_permille, functions={F1: 1})


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
        low, high = sorted((1, 2), key=pid)
        hosts = [peer(high, rtt_ms=10), peer(low, rtt_ms=10), peer(3, rtt_ms=6, reachability="relayed")]
        self.assertEqual([p.node_id for p in rank_replicas(hosts)], [pid(3), pid(low), pid(high)])
        self.assertEqual([p.node_id for p in rank_replicas(hosts, direct=True)], [pid(low), pid(high)])
        self.assertEqual([p.node_id for p in rank_replicas(hosts, limit=1)], [pid(3)])


# -- persistence: the store alone, then the core through it ----------------------------


class StoreTests(SynchronousTestCase):
    """orb.tracker.store on its own: rows in, rows out, bad rows skipped."""

    def open_db(self, path=None, migrations=store.MIGRATIONS):
        db = self.successResultOf(Database.open(None, path or self.mktemp() + ".sqlite", migrations, inline=True))
        self.addCleanup(db.close)
        return db

    def state(self):
        entries = (
            store.StoredEntry("fn:" + F1, records.function_record(OWNER, F1, time=T0), 5.0),
            store.StoredEntry("peer:" + pid(1).hex(), records.peer_record(pkey(1), KA, time=T0), 6.0, 7.0),
        )
        return store.StoredState(A, 7, {A: 7, B: 3}, entries)

    def test_round_trip(self):
        """What is saved is loaded back the same: entries, soft state, counters."""
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

    def test_corrupt_and_tampered_rows_are_skipped(self):
        """Rows that would not pass as remote input, a bad signature included, are skipped, never adopted."""
        db = self.open_db()
        self.successResultOf(store.save(db, self.state()))
        tampered = records.function_record(OWNER, F2, time=T0).to_dict()
        tampered["package_size"] = 9  # the owner signed 1024
        bad_rows = [
            ("fn:x", "{", 0, None),
            ("fn:" + F3, None, 0, None),
            ("fn:" + F2, json.dumps(tampered), 0, None),
            ("peer:" + pid(2).hex(), json.dumps(records.function_record(OWNER, F1, time=T0).to_dict()), 0, None),
        ]
        self.successResultOf(db.run(lambda c: c.executemany(
            "INSERT INTO registry_signed VALUES (?, ?, ?, ?)", [r for r in bad_rows if r[1] is not None])))
        self.successResultOf(db.run(lambda c: c.execute("UPDATE registry_meta SET v = ? WHERE k = 'known'", ("[" * 5000,))))
        with capturedLogs() as events:
            loaded = self.successResultOf(store.load(db, A))
        self.assertEqual(set(loaded.entries), set(self.state().entries))
        self.assertEqual((loaded.seq, loaded.known), (0, {}))
        self.assertTrue(any(e.get("count") == 3 for e in events))

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

    def test_unsigned_rows_of_an_older_version_are_dropped(self):
        """A registry file from before signed records loads empty but keeps our own seq, so it is never reused."""
        path = self.mktemp() + ".sqlite"
        old = self.open_db(path, store.MIGRATIONS[:2])
        old_fn = {"fid": F1, "version": 1, "owner": OWNER.public_bytes.hex(), "replicas": 3}

        def write(c):
            c.execute("INSERT INTO registry_entry VALUES (?, 6, ?, ?, 2.0, NULL)", ("fn:" + F1, A.hex(), json.dumps(old_fn)))
            c.executemany("INSERT INTO registry_meta VALUES (?, ?)",
                          [("tracker_id", A.hex()), ("seq", "6"), ("lamport", "6"), ("known", json.dumps({A.hex(): "6"}))])

        self.successResultOf(old.run(write))
        self.successResultOf(old.close())
        loaded = self.successResultOf(store.load(self.open_db(path), A))
        self.assertEqual((loaded.seq, loaded.known, loaded.entries), (6, {}, ()))


class PersistenceTests(SynchronousTestCase):
    """The core saved and loaded through the store."""

    def open_db(self, path):
        db = self.successResultOf(Database.open(None, path, regmod.MIGRATIONS, inline=True))
        self.addCleanup(db.close)
        return db

    def test_round_trip(self):
        """A restarted tracker has the same registry, continues its seq, and still ages out silent peers."""
        reg, clock = make(peer_ttl_s=90)
        announce(reg, 1, functions={F1: 1})
        reg.upsert_function(records.function_record(OWNER, F1, time=T0))
        reg.publish_self([("127.0.0.2", 7400)])
        remote, _ = make(KB, clock)
        announce(remote, 2)
        sync(remote, reg)
        path = self.mktemp() + ".sqlite"
        self.successResultOf(reg.save(self.open_db(path)))

        loaded = self.successResultOf(Registry.load(self.open_db(path), clock, KA, peer_ttl_s=90))
        self.assertEqual(loaded.state_hash(), reg.state_hash())
        self.assertEqual(loaded.digest(), reg.digest())
        self.assertEqual(loaded.function(F1), reg.function(F1))
        self.assertEqual(loaded.tracker(A), reg.tracker(A))
        self.assertEqual(loaded.peer(pid(2)), reg.peer(pid(2)))
        self.assertEqual(announce(loaded, 4).seq, reg.seq + 1)
        clock.advance(91)
        self.assertIn("peer:" + pid(1).hex(), loaded.expire())
        self.assertIsNotNone(loaded.function(F1))

    def test_other_trackers_database_is_not_adopted(self):
        """A tracker never adopts another tracker's registry file."""
        reg, clock = make(KA)
        reg.upsert_function(records.function_record(OWNER, F1, time=T0))
        db = self.open_db(self.mktemp() + ".sqlite")
        self.successResultOf(reg.save(db))
        other = self.successResultOf(Registry.load(db, clock, KB))
        self.assertEqual(other.functions(), [])

    def test_restore_respects_bounds(self):
        """A stored file larger than today's bounds loads only up to them, keeping the freshest."""
        reg, clock = make(KA)
        for i in range(5):
            announce(reg, i)
            clock.advance(1)
        db = self.open_db(self.mktemp() + ".sqlite")
        self.successResultOf(reg.save(db))
        loaded = self.successResultOf(Registry.load(db, clock, KA, kinds=small_kinds(peer=2)))
        self.assertEqual({p.node_id for p in loaded.peers()}, {pid(3), pid(4)})
        self.flushLoggedErrors()


class ThreadedPersistenceTests(TestCase):
    """save/load through the real worker thread and a file on disk."""

    @inlineCallbacks
    def test_round_trip_on_disk(self):
        """Saving takes a copy at once: a write after save() is not in the file, everything before is."""
        path = self.mktemp() + ".sqlite"
        db = yield Database.open(reactor, path, regmod.MIGRATIONS)
        reg = Registry(reactor, KA)
        for i in range(50):
            announce(reg, i, addresses=[("127.0.0.1", 1000 + i)], functions={F1: 1})
        now = int(reactor.seconds())
        reg.upsert_function(records.function_record(OWNER, F1, time=now))
        d = reg.save(db)
        reg.upsert_function(records.function_record(OWNER, F2, time=now))  # after the copy: not saved
        yield d
        yield db.close()
        db = yield Database.open(reactor, path, regmod.MIGRATIONS)
        self.addCleanup(db.close)
        loaded = yield Registry.load(db, reactor, KA)
        self.assertEqual(len(loaded.peers()), 50)
        self.assertEqual([f.fid for f in loaded.functions()], [F1])
        self.assertEqual(loaded.seq, 51)


class TrackerSignerTests(SynchronousTestCase):
    """A tracker record may carry the tracker's payment voucher signer (RFC 8.6.1, 10.10), signed with it."""

    def test_the_signer_travels_signed_and_one_spelling_only(self):
        """eth_signer round-trips lowercase and verifies; a forged one breaks the signature; odd spellings are refused."""
        key = records.key("signing-tracker")
        signer = "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"
        record = fed.TrackerRecord(key.node_id, key.public_bytes, 1, 0, (("10.1.0.1", 7400),),
                                   eth_signer=signer.lower()).signed(key.sign)
        doc = json.loads(json.dumps(record.to_dict()))
        self.assertEqual(doc["eth_signer"], signer.lower())
        back = fed.TrackerRecord.from_dict(doc)
        back.verify()
        self.assertEqual(back, record)
        forged = fed.TrackerRecord.from_dict({**doc, "eth_signer": "0x" + "ab" * 20})
        self.assertRaises(fed.BadSignature, forged.verify)
        for bad in (signer, "0x" + "ab" * 19, 42, ""):
            self.assertRaises(RegistryChangeError, fed.TrackerRecord.from_dict, {**doc, "eth_signer": bad})
        plain = fed.TrackerRecord(key.node_id, key.public_bytes, 1, 0, (("10.1.0.1", 7400),)).signed(key.sign)
        self.assertNotIn("eth_signer", plain.to_dict())  # absent when none: older records keep their bytes
