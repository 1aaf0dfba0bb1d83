"""
Call logs (RFC 10.7): the owner-signed LOGS and its checks, the host's
bounded log of recent calls, the tracker's fan-out and merge, the owner key
that OFFER carries and the store keeps, and `orb logs`' request and output.
"""

import os
import types

import attrs
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from orb.identity import NodeKey
from orb.net import packages as pk
from orb.net.adapter import RemoteError
from orb.net.logauth import MAX_REPLAY_NONCES, WINDOW_S, ReplayCache, check_logs
from orb.peer import logs as hostlogs
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, ResultStatus, TlvType
from orb.tracker import logs as trackerlogs
from tests._memnet import PORT, MemoryNet
from tests._packages import function, open_store

NOW = 1_800_000_000


def signed(key, fid, since_us=0, max_entries=0, issued_at=NOW, nonce=None, owner_key=None):
    request = m.Logs(fid=fid, owner_key=owner_key or key.public_bytes, since_us=since_us, max_entries=max_entries,
                     issued_at=issued_at, nonce=nonce or os.urandom(16), signature=b"\0" * 64)
    return attrs.evolve(request, signature=key.sign(request.signed_bytes()))


def result(log=b"", status=ResultStatus.OK, exec_us=1500):
    return m.Result(status=int(status), queue_us=0, fetch_us=0, boot_us=0, exec_us=exec_us, output=b"", log=log)


def entry(node, time_us, log=b""):
    return m.LogEntry(node, time_us, 0, 10, b"", log)


class Record:
    """A session record that keeps what it was sent."""

    name = "client"

    def __init__(self, node_id=b"c" * 32):
        self.node_id = node_id
        self.sent = []
        self.refused = []

    def send(self, message, response_to=0):
        self.sent.append(message)

    def refuse(self, request_id, code, text):
        self.refused.append((ErrorCode(code), text))


class Store:
    """What CallLog asks of the package store."""

    def __init__(self, owners):
        self.owners = owners

    def get(self, fid):
        return object() if fid in self.owners else None

    def owner(self, fid):
        return self.owners.get(fid)


class CheckTests(SynchronousTestCase):
    def setUp(self):
        self.owner = NodeKey.generate()
        self.fid = fidmod.fid_for(b"a function")

    def test_the_owners_fresh_request_passes(self):
        """LOGS signed by the owner key, issued now, passes the check."""
        self.assertIsNone(check_logs(signed(self.owner, self.fid), self.owner.public_bytes, NOW))

    def test_another_key_is_denied(self):
        """LOGS signed by a key that is not the owner's is refused denied, however well signed."""
        other = NodeKey.generate()
        refusal = check_logs(signed(other, self.fid), self.owner.public_bytes, NOW)
        self.assertEqual(refusal.code, ErrorCode.DENIED)
        self.assertIn("owner key", refusal.text)

    def test_a_forged_signature_is_denied(self):
        """LOGS naming the owner key but signed by another key is refused denied."""
        other = NodeKey.generate()
        forged = signed(other, self.fid, owner_key=self.owner.public_bytes)
        self.assertEqual(check_logs(forged, self.owner.public_bytes, NOW).code, ErrorCode.DENIED)
        changed = attrs.evolve(signed(self.owner, self.fid), since_us=5)  # the signed bytes changed after signing
        self.assertEqual(check_logs(changed, self.owner.public_bytes, NOW).code, ErrorCode.DENIED)

    def test_no_known_owner_is_denied(self):
        """A node that knows no owner key for the function refuses denied."""
        self.assertEqual(check_logs(signed(self.owner, self.fid), None, NOW).code, ErrorCode.DENIED)

    def test_issued_at_outside_the_window_is_out_of_range(self):
        """issued_at more than 120 s from the node's clock, either way, is refused out_of_range."""
        key = self.owner.public_bytes
        self.assertIsNone(check_logs(signed(self.owner, self.fid, issued_at=NOW - WINDOW_S), key, NOW))
        self.assertIsNone(check_logs(signed(self.owner, self.fid, issued_at=NOW + WINDOW_S), key, NOW))
        for at in (NOW - WINDOW_S - 1, NOW + WINDOW_S + 1):
            refusal = check_logs(signed(self.owner, self.fid, issued_at=at), key, NOW)
            self.assertEqual(refusal.code, ErrorCode.OUT_OF_RANGE)
            self.assertIn("clock", refusal.text)

    def test_a_nonce_is_taken_once_within_the_window(self):
        """The same nonce is refused denied the second time; after the window it is refused as too old."""
        clock = Clock()
        clock.advance(NOW)
        cache = ReplayCache(clock)
        key = self.owner.public_bytes
        self.assertIsNone(cache.admit(key, b"n" * 16, NOW))
        self.assertEqual(cache.admit(key, b"n" * 16, NOW).code, ErrorCode.DENIED)
        self.assertIsNone(cache.admit(NodeKey.generate().public_bytes, b"n" * 16, NOW))  # another owner's
        clock.advance(WINDOW_S + 1)
        self.assertEqual(cache.admit(key, b"n" * 16, NOW).code, ErrorCode.OUT_OF_RANGE)
        self.assertEqual(len(cache), 0)

    def test_a_full_replay_cache_refuses_what_it_may_have_forgotten(self):
        """A full cache forgets its oldest nonce and then refuses requests issued no later than it: no replay."""
        clock = Clock()
        clock.advance(NOW)
        cache = ReplayCache(clock, max_nonces=3)
        key = self.owner.public_bytes
        for i, at in enumerate((NOW - 3, NOW - 2, NOW - 1)):
            self.assertIsNone(cache.admit(key, bytes([i]) * 16, at))
        self.assertIsNone(cache.admit(key, b"x" * 16, NOW))  # forgets the nonce issued at NOW - 3
        self.assertEqual(len(cache), 3)
        self.assertEqual(cache.admit(key, b"\0" * 16, NOW - 3).code, ErrorCode.OUT_OF_RANGE)  # the forgotten one
        self.assertEqual(MAX_REPLAY_NONCES, 4096)


class CallLogTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.owner = NodeKey.generate()
        self.fid = fidmod.fid_for(b"a function")
        self.node = b"h" * 32
        self.book = hostlogs.CallLog(self.clock, self.node, Store({self.fid: self.owner.public_bytes}))

    def ask(self, request):
        record = Record()
        self.book.on_logs(record, request, 7)
        return record

    def test_the_owner_gets_the_calls_after_since_oldest_first(self):
        """LOGS from the owner answers LOG_LINES with the calls that ended after since_us, oldest first."""
        for i in range(3):
            self.book.record(self.fid, result(f"line {i}\n".encode()), bytes([i]) * 16, NOW + i)
        record = self.ask(signed(self.owner, self.fid, since_us=NOW * 1_000_000))
        (lines,) = record.sent
        self.assertEqual([e.log for e in lines.entries], [b"line 1\n", b"line 2\n"])
        self.assertEqual([e.trace_id for e in lines.entries], [b"\1" * 16, b"\2" * 16])
        self.assertEqual({e.node_id for e in lines.entries}, {self.node})
        self.assertEqual((lines.fid, lines.more), (self.fid, 0))
        self.assertEqual(lines.entries[0].exec_us, 1500)

    def test_max_entries_limits_the_answer_and_sets_more(self):
        """At most max_entries are answered, the oldest, with more=1; 0 asks for the most (256)."""
        for i in range(5):
            self.book.record(self.fid, result(b"x"), b"", NOW + i)
        lines = self.ask(signed(self.owner, self.fid, max_entries=2)).sent[0]
        self.assertEqual(([e.time_us for e in lines.entries], lines.more), ([NOW * 10**6, (NOW + 1) * 10**6], 1))
        lines = self.ask(signed(self.owner, self.fid, max_entries=0)).sent[0]
        self.assertEqual((len(lines.entries), lines.more), (5, 0))

    def test_refusals_have_specific_codes(self):
        """Another key: denied; a fid not held: not_found; a stale request: out_of_range; a replay: denied."""
        other = NodeKey.generate()
        self.assertEqual(self.ask(signed(other, self.fid)).refused[0][0], ErrorCode.DENIED)
        self.assertEqual(self.ask(signed(self.owner, fidmod.fid_for(b"other"))).refused[0][0], ErrorCode.NOT_FOUND)
        stale = signed(self.owner, self.fid, issued_at=NOW - 600)
        self.assertEqual(self.ask(stale).refused[0][0], ErrorCode.OUT_OF_RANGE)
        request = signed(self.owner, self.fid)
        self.assertEqual(self.ask(request).refused, [])
        refused = self.ask(request).refused
        self.assertEqual((refused[0][0], "nonce" in refused[0][1]), (ErrorCode.DENIED, True))

    def test_a_refusal_logs_neither_signature_nor_logs(self):
        """Refusing or answering LOGS logs no signature and no log text at info level or above."""
        self.book.record(self.fid, result(b"SECRET-LOG-TEXT"), b"", NOW)
        request = signed(self.owner, self.fid)
        with capturedLogs() as events:
            self.ask(request)
            self.ask(request)
            self.ask(signed(NodeKey.generate(), self.fid))
        from twisted.logger import LogLevel, formatEvent

        text = " ".join(formatEvent(e) + repr(e) for e in events if e["log_level"] >= LogLevel.info)
        self.assertNotIn(request.signature.hex(), text)
        self.assertNotIn("SECRET-LOG-TEXT", text)

    def test_log_text_keeps_its_last_4096_bytes(self):
        """A call's stderr over 4096 bytes is kept as its tail."""
        self.book.record(self.fid, result(b"a" * 5000 + b"THE END"), b"", NOW)
        (kept,) = self.book.entries_after(self.fid, 0, 10)[0]
        self.assertEqual((len(kept.log), kept.log[-7:]), (4096, b"THE END"))

    def test_times_are_strictly_increasing_per_function(self):
        """Two calls that end in the same microsecond get distinct times, so since_us never splits them."""
        self.book.record(self.fid, result(b"1"), b"", NOW)
        self.book.record(self.fid, result(b"2"), b"", NOW)
        first, second = self.book.entries_after(self.fid, 0, 10)[0]
        self.assertEqual(second.time_us, first.time_us + 1)
        self.assertEqual(self.book.entries_after(self.fid, first.time_us, 10)[0], [second])

    def test_bounded_per_function_per_count_and_in_bytes(self):
        """The log keeps the last N calls per function, at most M functions, and at most its byte budget."""
        book = hostlogs.CallLog(self.clock, self.node, Store({}), max_entries_per_fid=3, max_fids=2,
                                max_total_bytes=2 * (hostlogs.ENTRY_OVERHEAD_BYTES + 100) + 50)
        fids = [fidmod.fid_for(bytes([i])) for i in range(3)]
        for i in range(5):
            book.record(fids[0], result(bytes([i]) * 10), b"", NOW + i)
        self.assertEqual([e.log[:1] for e in book.entries_after(fids[0], 0, 10)[0]], [b"\2", b"\3", b"\4"])
        book.record(fids[1], result(b"b"), b"", NOW)
        book.record(fids[2], result(b"c"), b"", NOW)  # a third function: the least recently written goes
        self.assertEqual(book.entries_after(fids[0], 0, 10)[0], [])
        book.record(fids[1], result(b"x" * 100), b"", NOW + 1)
        book.record(fids[1], result(b"y" * 100), b"", NOW + 2)
        self.assertLessEqual(book.total_bytes, book.max_total_bytes)
        self.assertEqual(book.entries_after(fids[2], 0, 10)[0], [])  # its oldest entries went first
        book.forget(fids[1])
        self.assertEqual((len(book), book.total_bytes), (0, 0))

    def test_trace_id_of_a_request(self):
        """A 16-byte trace_id TLV is the call's trace id; any other length is ignored."""
        invoke = m.Invoke(fid=self.fid, deadline_ms=1, token=b"", input=b"",
                          ext=(m.Tlv(int(TlvType.TRACE_ID), b"t" * 16),))
        self.assertEqual(hostlogs.trace_id_of(invoke), b"t" * 16)
        self.assertEqual(hostlogs.trace_id_of(attrs.evolve(invoke, ext=(m.Tlv(int(TlvType.TRACE_ID), b"t"),))), b"")


class MergeTests(SynchronousTestCase):
    def test_entries_are_merged_in_time_order(self):
        """Entries of several replicas come out in time order."""
        a, b = b"a" * 32, b"b" * 32
        merged, more = trackerlogs.merge([([entry(a, 1), entry(a, 4)], False), ([entry(b, 2), entry(b, 3)], False)],
                                         10)
        self.assertEqual([(e.node_id[:1], e.time_us) for e in merged], [(b"a", 1), (b"b", 2), (b"b", 3), (b"a", 4)])
        self.assertFalse(more)

    def test_a_replica_with_more_stops_the_merge_at_its_last_entry(self):
        """When a replica says more, later entries of the others wait for the next request: none is skipped."""
        a, b = b"a" * 32, b"b" * 32
        merged, more = trackerlogs.merge([([entry(a, 1), entry(a, 2)], True), ([entry(b, 3)], False)], 10)
        self.assertEqual([e.time_us for e in merged], [1, 2])
        self.assertTrue(more)

    def test_the_limit_cuts_between_distinct_times_only(self):
        """Over the limit, the merge sets more and never cuts between two entries of the same time."""
        a, b = b"a" * 32, b"b" * 32
        merged, more = trackerlogs.merge([([entry(a, 1), entry(a, 2)], False), ([entry(b, 2)], False)], 2)
        self.assertEqual(([e.time_us for e in merged], more), ([1], True))


class FakeChannel:
    def __init__(self, answer):
        self.answer = answer
        self.asked = []

    def request(self, message, timeout_s):
        self.asked.append((message, timeout_s))
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        if isinstance(self.answer, defer.Deferred):  # each request gets its own Deferred, fired with the answer
            mine = defer.Deferred()
            self.answer.addCallback(lambda answer: mine.callback(answer) or answer)
            return mine
        return defer.succeed(self.answer)


class FanoutTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.owner = NodeKey.generate()
        self.fid = fidmod.fid_for(b"a function")
        self.text = fidmod.to_text(self.fid)
        self.hosts = [bytes([i]) * 32 for i in (1, 2, 3)]
        self.channels = {}
        registry = types.SimpleNamespace(function=lambda fid: types.SimpleNamespace(
            fid=fid, owner=self.owner.public_bytes) if fid == self.text else None)
        replication = types.SimpleNamespace(replicas=lambda fid: [types.SimpleNamespace(node_id=h)
                                                                  for h in self.hosts])
        self.fanout = trackerlogs.LogsFanout(self.clock, registry, replication, None, channel=self.channels.get)

    def ask(self, request, node_id=b"c" * 32):
        record = Record(node_id)
        self.fanout.on_logs(record, request, 3)
        return record

    def lines(self, node, *times, more=0):
        return m.LogLines(fid=self.fid, entries=tuple(entry(node, t, b"%d" % t) for t in times), more=more)

    def test_every_replica_is_asked_and_the_answers_merged(self):
        """The signed LOGS goes unchanged to each replica; their LOG_LINES come back as one, in time order."""
        a, b, c = self.hosts
        self.channels.update({a: FakeChannel(self.lines(a, 10, 30)), b: FakeChannel(self.lines(b, 20)),
                              c: FakeChannel(self.lines(c))})
        request = signed(self.owner, self.fid)
        record = self.ask(request)
        (lines,) = record.sent
        self.assertEqual([e.time_us for e in lines.entries], [10, 20, 30])
        self.assertEqual([ch.asked[0][0] for ch in self.channels.values()], [request] * 3)
        self.assertEqual(self.fanout.in_flight, 0)

    def test_failed_replicas_are_skipped_and_counted_in_a_log_line(self):
        """A replica that fails, refuses or lies is skipped; the others' entries still reach the owner."""
        a, b, c = self.hosts
        self.channels.update({a: FakeChannel(self.lines(a, 10)), b: FakeChannel(RemoteError(13, "busy")),
                              c: FakeChannel(self.lines(a, 5))})  # c claims a's calls
        with capturedLogs() as events:
            record = self.ask(signed(self.owner, self.fid))
        self.assertEqual([e.time_us for e in record.sent[0].entries], [10])
        self.assertTrue(any("2 of 3 replicas skipped" in ev.get("log_format", "").format(**ev)
                            for ev in events if "log_format" in ev and "failed" in ev))

    def test_every_replica_failing_is_an_error(self):
        """When every replica fails the owner gets ERROR: their common code, else busy."""
        for h in self.hosts:
            self.channels[h] = FakeChannel(RemoteError(int(ErrorCode.DENIED), "no owner key is known here"))
        self.assertEqual(self.ask(signed(self.owner, self.fid)).refused[0][0], ErrorCode.DENIED)
        self.channels[self.hosts[0]] = FakeChannel(RemoteError(int(ErrorCode.INTERNAL), "oops"))
        self.assertEqual(self.ask(signed(self.owner, self.fid)).refused[0][0], ErrorCode.BUSY)
        self.channels.clear()  # none reachable
        self.assertEqual(self.ask(signed(self.owner, self.fid)).refused[0][0], ErrorCode.BUSY)

    def test_early_refusals(self):
        """An unknown fid is not_found, another key denied, a stale request out_of_range; no replica is asked."""
        channel = self.channels[self.hosts[0]] = FakeChannel(self.lines(self.hosts[0]))
        self.assertEqual(self.ask(signed(self.owner, fidmod.fid_for(b"x"))).refused[0][0], ErrorCode.NOT_FOUND)
        self.assertEqual(self.ask(signed(NodeKey.generate(), self.fid)).refused[0][0], ErrorCode.DENIED)
        self.assertEqual(self.ask(signed(self.owner, self.fid, issued_at=NOW - 300)).refused[0][0],
                         ErrorCode.OUT_OF_RANGE)
        self.assertEqual(channel.asked, [])

    def test_fanouts_in_flight_are_bounded(self):
        """Past MAX_FANOUTS requests forwarded at once, or a session's share, more are refused busy."""
        pending = defer.Deferred()
        self.channels[self.hosts[0]] = FakeChannel(pending)
        share = trackerlogs.MAX_FANOUTS_PER_SESSION
        records = [self.ask(signed(self.owner, self.fid)) for _ in range(share)]
        self.assertEqual(self.ask(signed(self.owner, self.fid)).refused[0][0], ErrorCode.BUSY)
        for i in range(trackerlogs.MAX_FANOUTS - share):
            records.append(self.ask(signed(self.owner, self.fid), node_id=bytes([i % 250 + 1]) * 32))
        self.assertEqual(self.ask(signed(self.owner, self.fid), node_id=b"z" * 32).refused[0][0], ErrorCode.BUSY)
        self.assertEqual([r.refused for r in records], [[]] * len(records))
        pending.callback(self.lines(self.hosts[0], 1))
        self.assertEqual({len(r.sent) for r in records}, {1})
        self.assertEqual((self.fanout.in_flight, self.fanout._per_session), (0, {}))
        self.assertEqual(len(self.ask(signed(self.owner, self.fid)).sent), 1)


class OwnerKeyStoreTests(SynchronousTestCase):
    def test_the_owner_key_is_kept_across_a_restart_and_goes_with_the_package(self):
        """The store keeps a package's owner key across a reopen, and forgets it with the package."""
        data, _ = function()
        fid = fidmod.fid_for(data)
        store, data_dir = open_store(self)
        self.successResultOf(store.put(data))
        self.failureResultOf(store.set_owner(fidmod.fid_for(b"not held"), b"k" * 32), pk.NotHeld)
        self.successResultOf(store.set_owner(fid, b"k" * 32))
        self.successResultOf(store.db.close())
        store, _ = open_store(self, data_dir)
        self.assertEqual(store.owner(fid), b"k" * 32)
        self.successResultOf(store.remove(fid))
        self.assertIsNone(store.owner(fid))

    def test_a_store_from_before_owner_keys_opens(self):
        """A store written before owner keys were kept is migrated: it opens with its packages, no owner known."""
        import sqlite3

        data, _ = function()
        store, data_dir = open_store(self)
        self.successResultOf(store.put(data))
        self.successResultOf(store.db.close())
        with sqlite3.connect(os.path.join(data_dir, pk.INDEX_FILE)) as conn:  # as the previous schema left it
            conn.execute("DROP TABLE owners")
            conn.execute("DROP TABLE revocations")
            conn.execute("DROP TABLE secrets")
            conn.execute("DROP TABLE deprecations")  # (added after owners)
            conn.execute("PRAGMA user_version=1")
        store, _ = open_store(self, data_dir)
        self.assertIn(fidmod.fid_for(data), store)
        self.assertIsNone(store.owner(fidmod.fid_for(data)))
        self.successResultOf(store.set_owner(fidmod.fid_for(data), b"k" * 32))


class OverTheWireTests(SynchronousTestCase):
    """Real tracker and peer cores joined in memory (tests/_memnet.py)."""

    def test_offer_carries_the_owner_key_and_the_host_keeps_it(self):
        """A tracker's OFFER names the owner key (TLV owner_key); the peer that hosts the function keeps it."""
        from orb.net.serving import PackageServer
        from orb.protocol.federation import FunctionRecord

        net = MemoryNet()
        tracker = net.tracker("10.1.0.1")
        tracker_store, _ = open_store(self)
        tracker.table.handlers.update(PackageServer(tracker_store).handlers())
        tracker.replication.packages = tracker_store
        store, _ = open_store(self)
        peer = net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], packages=store, outbound_peers=0,
                        outbound_trackers=1)
        net.run(2)
        data, manifest_bytes = function()
        fid = fidmod.fid_for(data)
        self.successResultOf(tracker_store.put(data))
        owner = NodeKey.generate()
        record = FunctionRecord(fidmod.to_text(fid), owner.public_bytes, manifest_bytes, len(data), NOW)
        tracker.replication.offer(record, tracker.registry.peer(peer.node_id))
        net.run(2)
        self.assertIn(fid, store)
        self.assertEqual(store.owner(fid), owner.public_bytes)

    def test_logs_through_a_tracker_from_two_hosts(self):
        """LOGS sent to a tracker reaches both hosts over their sessions; the owner gets their calls merged."""
        net = MemoryNet()
        tracker = net.tracker("10.1.0.1")
        owner = NodeKey.generate()
        data, _ = function()
        fid = fidmod.fid_for(data)
        peers = []
        for i in (2, 3):
            store, _ = open_store(self)
            self.successResultOf(store.put(data))
            self.successResultOf(store.set_owner(fid, owner.public_bytes))
            peers.append(net.peer(f"10.{i}.0.1", trackers=[("10.1.0.1", PORT)], packages=store, outbound_peers=0,
                                  outbound_trackers=1))
        net.run(2)
        now = net.clock.seconds()
        peers[0].call_log.record(fid, result(b"first\n"), b"", now - 2)
        peers[1].call_log.record(fid, result(b"second\n", ResultStatus.ERROR), b"", now - 1)
        peers[0].call_log.record(fid, result(b"third\n"), b"", now)
        tracker.logs.registry = types.SimpleNamespace(
            function=lambda text: types.SimpleNamespace(fid=text, owner=owner.public_bytes))
        tracker.logs.replication = types.SimpleNamespace(
            replicas=lambda text: [types.SimpleNamespace(node_id=p.node_id) for p in peers])
        to_tracker = peers[0].table.get(tracker.node_id)
        d = to_tracker.request(signed(owner, fid, issued_at=int(now)))
        net.run(1)
        lines = self.successResultOf(d)
        self.assertEqual([e.log for e in lines.entries], [b"first\n", b"second\n", b"third\n"])
        self.assertEqual([e.node_id for e in lines.entries], [peers[0].node_id, peers[1].node_id, peers[0].node_id])
        self.assertEqual(lines.entries[1].status, int(ResultStatus.ERROR))
        d = to_tracker.request(signed(NodeKey.generate(), fid, issued_at=int(now)))
        net.run(1)
        self.assertEqual(self.failureResultOf(d, RemoteError).value.code, ErrorCode.DENIED)


    def test_a_host_that_kept_no_owner_key_is_reminded(self):
        """A host that refuses LOGS for want of the owner key gets the OFFER again, and then answers the owner."""
        from orb.protocol.federation import FunctionRecord

        net = MemoryNet()
        tracker = net.tracker("10.1.0.1")
        owner = NodeKey.generate()
        data, manifest_bytes = function()
        fid = fidmod.fid_for(data)
        store, _ = open_store(self)
        self.successResultOf(store.put(data))  # held from before OFFER named owners: no owner key
        peer = net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], packages=store, outbound_peers=0,
                        outbound_trackers=1)
        net.run(2)
        peer.call_log.record(fid, result(b"hello\n"), b"", net.clock.seconds())
        record = FunctionRecord(fidmod.to_text(fid), owner.public_bytes, manifest_bytes, len(data), NOW)
        tracker.logs.registry = types.SimpleNamespace(function=lambda text: record, peer=tracker.registry.peer)
        tracker.logs.replication.replicas = lambda text: [tracker.registry.peer(peer.node_id)]
        to_tracker = peer.table.get(tracker.node_id)
        d = to_tracker.request(signed(owner, fid, issued_at=int(net.clock.seconds())))
        net.run(1)
        failure = self.failureResultOf(d, RemoteError)
        self.assertEqual(failure.value.code, ErrorCode.DENIED)
        self.assertIn("no owner key", failure.value.text)
        self.assertEqual(store.owner(fid), owner.public_bytes)  # reminded by the OFFER
        d = to_tracker.request(signed(owner, fid, issued_at=int(net.clock.seconds())))
        net.run(1)
        self.assertEqual([e.log for e in self.successResultOf(d).entries], [b"hello\n"])


class OfferOwnerTrustTests(SynchronousTestCase):
    def offer(self, inbound, owner_key):
        from orb.peer.hosting import Hosting

        data, manifest_bytes = function()
        fid = fidmod.fid_for(data)
        store, _ = open_store(self)
        self.successResultOf(store.put(data))
        homing = types.SimpleNamespace(functions={}, announce=lambda: None)
        hosting = Hosting(Clock(), None, store, None, homing)
        record = Record(b"t" * 32)
        record.is_tracker, record.inbound = True, inbound
        hosting.on_offer(record, m.Offer(fid=fid, package_size=len(data), sources=(), manifest=manifest_bytes,
                                         ext=(m.Tlv(int(TlvType.OWNER_KEY), owner_key),)), 5)
        self.assertEqual(record.sent[0].status, 0)
        return store.owner(fid)

    def test_the_owner_key_is_taken_only_from_a_tracker_the_peer_dialled(self):
        """OFFER's owner_key is kept from a tracker session the peer opened, ignored on one the remote opened."""
        self.assertEqual(self.offer(False, b"k" * 32), b"k" * 32)
        self.assertIsNone(self.offer(True, b"k" * 32))


class CliTests(SynchronousTestCase):
    def test_the_request_is_the_owners_signed_logs(self):
        """`orb logs` signs LOGS with the owner key, a fresh nonce each time, issued now: it passes the check."""
        from orb.cli import _logs

        owner = NodeKey.generate()
        fid = fidmod.fid_for(b"f")
        first = _logs.signed_request(owner, fid, 5, NOW)
        second = _logs.signed_request(owner, fid, 5, NOW)
        self.assertIsNone(check_logs(first, owner.public_bytes, NOW))
        self.assertNotEqual(first.nonce, second.nonce)
        self.assertEqual((first.since_us, first.max_entries, first.issued_at), (5, m.MAX_LOG_ENTRIES, NOW))

    def test_an_entry_prints_its_header_and_its_stderr_safely(self):
        """Each entry prints time, replica, status, exec time and trace id, then its stderr indented, escaped."""
        from orb.cli import _logs

        e = m.LogEntry(bytes.fromhex("ab" * 32), 1_800_000_000_250_000, int(ResultStatus.ERROR), 3500, b"\x01" * 16,
                       b"Traceback:\nValueError: \x1b[31mbad\n")
        doc = _logs.entry_json(e)
        self.assertEqual((doc["status"], doc["exec_ms"], doc["replica"]), ("error", 3.5, "ab" * 32))
        text = _logs.format_entry(doc)
        header, first, second = text.splitlines()
        self.assertEqual(header, "2027-01-15 08:00:00.250Z  abababababab  error       3.500 ms  trace " + "01" * 16)
        self.assertEqual((first, second), ("    Traceback:", "    ValueError: \\x1b[31mbad"))
        binary = _logs.entry_json(attrs.evolve(e, log=b"\xff\xfe"))
        self.assertEqual(binary["log_base64"], "//4=")

    def test_refusals_map_to_exit_statuses(self):
        """Not the owner is exit 7, an unknown function 10, no replica answering 8, a non-tracker 6."""
        from orb.cli import _logs
        from orb.cli import _ui

        self.assertEqual(_logs.refusal(int(ErrorCode.DENIED), "owner_key is not the owner's").exit_code,
                         _ui.EXIT_REFUSED)
        self.assertEqual(_logs.refusal(int(ErrorCode.NOT_FOUND), "").exit_code, _ui.EXIT_NOT_FOUND)
        self.assertEqual(_logs.refusal(int(ErrorCode.BUSY), "").exit_code, _ui.EXIT_BUSY)
        self.assertEqual(_logs.refusal(int(ErrorCode.UNSUPPORTED), "").exit_code, _ui.EXIT_NETWORK)
        self.assertIn("not the function's owner key", str(_logs.refusal(int(ErrorCode.DENIED), "x")))


class FakeSession:
    """The tracker end of `orb logs`' session: answers each LOGS from a script, keeps what it was asked."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.asked = []

    def request(self, message, timeout_s):
        self.asked.append(message)
        answer = self.answers.pop(0) if self.answers else m.LogLines(fid=message.fid, entries=(), more=0)
        return defer.fail(answer) if isinstance(answer, Exception) else defer.succeed(answer)


class CliFlowTests(SynchronousTestCase):
    def setUp(self):
        from orb.cli import _logs, _network

        self.clock = Clock()
        self.clock.advance(NOW)
        self.owner = NodeKey.generate()
        self.fid = fidmod.fid_for(b"f")
        self.node = b"n" * 32
        self.plan = _logs.LogsPlan(self.fid, self.owner, "127.0.0.1:7400", "itest", 0, True, False)
        self.session = None
        self.patch(_network, "connect", lambda reactor, tracker, network, client: defer.succeed(self.session))
        self.patch(_network, "close_session", lambda reactor, p, client: defer.succeed(None))

    def lines(self, *times, more=0):
        return m.LogLines(fid=self.fid, entries=tuple(entry(self.node, t, b"call %d\n" % t) for t in times), more=more)

    def test_pages_are_followed_while_the_tracker_says_more(self):
        """Without -f, `orb logs` asks again from the last time_us while the answer says more, then stops."""
        from orb.cli import _logs

        self.session = FakeSession([self.lines(1, 2, more=1), self.lines(3)])
        doc = self.successResultOf(_logs.logs_flow(self.clock, self.plan))
        self.assertEqual([e["log"] for e in doc["entries"]], ["call 1\n", "call 2\n", "call 3\n"])
        self.assertEqual([a.since_us for a in self.session.asked], [0, 2])
        self.assertEqual(len({a.nonce for a in self.session.asked}), 2)
        self.assertFalse(doc["more"])

    def test_follow_polls_every_second_from_the_last_entry_seen(self):
        """-f prints each entry once, then asks every second for calls after the last one it printed."""
        import io

        from orb.cli import _logs

        self.session = FakeSession([self.lines(1), self.lines(), self.lines(5), RemoteError(13, "no replica")])
        out, err = io.StringIO(), io.StringIO()
        d = _logs.follow_flow(self.clock, self.plan, {}, out, err)
        self.assertEqual([a.since_us for a in self.session.asked], [0])
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual([a.since_us for a in self.session.asked], [0, 1, 1])
        self.assertEqual((out.getvalue().count("call 1"), out.getvalue().count("call 5")), (1, 1))
        self.clock.advance(1)  # a busy answer is not the end: -f keeps asking
        self.clock.advance(1)
        self.assertEqual([a.since_us for a in self.session.asked], [0, 1, 1, 5, 5])
        self.assertIn("still trying", err.getvalue())
        self.assertNoResult(d)
        self.session.answers = [RemoteError(int(ErrorCode.DENIED), "owner_key is not the function's owner key")]
        self.clock.advance(1)
        self.assertEqual(self.failureResultOf(d).value.exit_code, 7)
