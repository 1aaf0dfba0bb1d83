"""
Spot checks (orb.tracker.canary, RFC 10.10.1): a tracker's canary calls to
the hosts of pure functions, with real tracker and peer cores on the
in-memory network; a host that lies is suspect for the penalty: no calls
from the router, no counted calls or epochs, then forgiven. The tables of
answers seen are checked on their own with fakes.
"""

import json
import os
import random

import attrs
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from orb.exec import ExecResult
from orb.pay import voucher as V
from orb.pay.tally import Tally
from orb.protocol import fid as fidmod
from orb.protocol import manifest as mf
from orb.protocol import messages as m
from orb.protocol.codes import ResultStatus, TlvType
from orb.protocol.deploy import sign_deploy
from orb.protocol.federation import FunctionRecord
from orb.protocol.messages import MessageType
from orb.protocol.package import PackageFile, pack
from orb.tracker import canary as C
from orb.tracker import payments as P
from orb.tracker.router import Answer
from tests import _records as records
from tests._memnet import PORT, MemoryNet
from tests._packages import TOML, open_store

DOMAIN = V.Domain(chain_id=31337, contract="0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC")
SIGNER_KEY = bytes.fromhex("11" * 32)
PENALTY_S = 40.0
SAMPLE_INPUT = b'{"a":2,"b":3}'


def pure_function(pure=True, visibility="public"):
    """(package, manifest bytes) of the tests' adder, pure, on two replicas."""
    manifest = mf.from_toml(TOML.format(runtime="python", entry="main.py", memory_mb=256))
    manifest = attrs.evolve(manifest, pure=pure, idempotent=pure, replicas=2, visibility=visibility)
    data = pack([PackageFile("main.py", b"def handler(event, context):\n    return event\n")], manifest.to_json())
    return data, mf.canonical_bytes(manifest)


def add(input_bytes):
    """What the honest adder answers."""
    try:
        args = json.loads(input_bytes)
        return json.dumps(args["a"] + args["b"]).encode()
    except (ValueError, KeyError, TypeError):
        return b'"' + input_bytes.hex().encode() + b'"'


@attrs.frozen
class _Config:
    input_max_bytes: int = 1024


class AdderExecutor:
    """The jail as Invocations sees it: answers at once with the sum, or holds every call (``hold``)."""

    def __init__(self):
        self.config = _Config()
        self.running = self.queued = 0
        self.capacity = 8
        self.hold = False
        self.inputs = []

    def start(self):
        return defer.succeed({})

    def stop(self):
        return defer.succeed(None)

    def invoke(self, fid, package_dir, spec, input_bytes, deadline_s=None, request_id="", secrets=None):
        self.inputs.append(input_bytes)
        if self.hold:
            return defer.Deferred()
        return defer.succeed(ExecResult(status=ResultStatus.OK, output=add(input_bytes), log=b""))


def inline(fn, *args, **kw):
    return defer.maybeDeferred(fn, *args, **kw)


class CanaryNetTests(SynchronousTestCase):
    """A tracker with payments managing a pure function; two peers host it."""

    def setUp(self):
        self.net = MemoryNet()
        self.payments = P.Payments(self.net.clock, Tally(":memory:", SIGNER_KEY, DOMAIN, clock=self.net.clock),
                                   P.Bindings(":memory:"), epoch_s=3600, run_in_thread=inline)
        self.addCleanup(self.payments.close)
        self.tracker = self.net.tracker("10.1.0.1", payments=self.payments)
        self.canary = self.tracker.canary
        self.canary.rng = random.Random(5)
        self.canary.penalty_s = PENALTY_S
        self.canary.interval_s = 60.0  # on, though the test ticks it by hand
        self.data, manifest = pure_function()
        self.fid = fidmod.fid_for(self.data)
        self.fid_text = fidmod.to_text(self.fid)
        store, _ = open_store(self, clock=self.net.clock)
        self.successResultOf(store.put(self.data))
        self.tracker.replication.packages = store  # to challenge the hosts
        owner = self.owner = records.key("canary-owner")
        issued = int(self.net.clock.seconds())
        self.tracker.registry.upsert_function(FunctionRecord(
            self.fid_text, owner.public_bytes, manifest, len(self.data), issued,
            sign_deploy(owner, self.fid, manifest, len(self.data), issued)))
        self.honest, self.liar = self.host("10.2.0.1"), self.host("10.3.0.1")
        self.invokes = {self.honest.node_id: [], self.liar.node_id: []}
        for peer in (self.honest, self.liar):
            self.watch(peer)
        self.net.run(3)
        self.assertEqual({p.node_id for p in self.tracker.replication.replicas(self.fid_text)},
                         {self.honest.node_id, self.liar.node_id})

    def host(self, address):
        store, _ = open_store(self, clock=self.net.clock)
        self.successResultOf(store.put(self.data))
        peer = self.net.peer(address, trackers=[("10.1.0.1", PORT)], packages=store, outbound_peers=0,
                             outbound_trackers=1)
        peer.executor = AdderExecutor()
        peer.invocations.executor_factory = lambda: peer.executor
        return peer

    def watch(self, peer):
        """Record every INVOKE the peer receives, as it received it."""
        handle = peer.table.handlers[MessageType.INVOKE]

        def on_invoke(record, message, request_id):
            self.invokes[peer.node_id].append(message)
            handle(record, message, request_id)

        peer.table.handlers[MessageType.INVOKE] = on_invoke

    def lie(self, peer, output=b"6"):
        """Make ``peer`` answer every INVOKE ok with ``output``, running nothing."""
        def on_invoke(record, message, request_id):
            self.invokes[peer.node_id].append(message)
            record.send(m.Result(status=int(ResultStatus.OK), queue_us=0, fetch_us=0, boot_us=0, exec_us=1,
                                 output=output, log=b""), response_to=request_id)

        peer.table.handlers[MessageType.INVOKE] = on_invoke

    def tick_until(self, condition, ticks=20):
        for _ in range(ticks):
            if condition():
                return
            self.canary.tick()
            self.net.run(1)
        self.assertTrue(condition())

    def calls(self, n, prefix=b"call"):
        """``n`` routed calls with distinct inputs, made by the owner (so they earn): the replicas that answered."""
        replicas = []
        for i in range(n):
            d = self.tracker.router.call(self.fid, prefix + b"%d" % i, caller=self.owner.public_bytes)
            self.net.run(0.5)
            answer = self.successResultOf(d)
            self.assertEqual(answer.result.status_kind, ResultStatus.OK)
            replicas.append(answer.replica)
        return replicas

    def api_stats(self):
        """GET /api/v1/stats of the tracker, parsed."""
        from orb.tracker.http import build_resource
        from tests.test_tracker_http import get

        _, body = get(build_resource(self.tracker.registry, self.tracker.stats), b"/api/v1/stats")
        return json.loads(body)

    def without_honest(self):
        """One routed call while the honest host cannot be reached from the router: its Answer."""
        router = self.tracker.router
        channel = router.channel
        router.channel = lambda node_id: None if node_id == self.honest.node_id else channel(node_id)
        try:
            d = router.call(self.fid, os.urandom(8), caller=self.owner.public_bytes)
            self.net.run(0.5)
            return self.successResultOf(d)
        finally:
            router.channel = channel

    def test_an_honest_host_passes_and_keeps_its_calls_and_vouchers(self):
        """Hosts that answer canaries right stay in rotation and earn every routed call."""
        self.tick_until(lambda: self.canary.counts["passed"] >= 4)
        self.assertEqual(self.canary.counts["wrong"], 0)
        self.assertFalse(self.canary.is_suspect(self.honest.node_id) or self.canary.is_suspect(self.liar.node_id))
        replicas = self.calls(20)
        self.assertEqual(set(replicas), {self.honest.node_id, self.liar.node_id})
        self.assertEqual(self.payments.counts["calls_counted"], 20)
        self.assertEqual(self.canary.known_inputs(self.fid_text), C.MAX_KNOWN_PER_FID)  # the routed answers, bounded
        self.tick_until(lambda: self.canary.counts["probes"] >= 1)  # sent to the other replica, then known
        self.assertEqual(self.canary.counts["wrong"], 0)
        self.assertEqual(self.api_stats()["spot_checks"]["suspect_hosts"], [])

    def test_a_lying_host_is_caught_punished_and_forgiven(self):
        """A host answering wrong is suspect for the penalty: no calls, no counted calls or epochs; then back."""
        self.lie(self.liar)
        self.tick_until(lambda: self.canary.counts["wrong"] == 1)
        liar = self.liar.node_id
        self.assertTrue(self.canary.is_suspect(liar))
        [shown] = self.api_stats()["spot_checks"]["suspect_hosts"]
        self.assertEqual(shown["node_id"], liar.hex())
        self.assertIn("wrong answer to a canary call (sample)", shown["reason"])
        self.assertEqual(shown["until_s"], round(self.net.clock.seconds() - 1 + PENALTY_S, 3))
        self.assertTrue(self.tracker.replication.penalised(liar))
        self.assertEqual(set(self.calls(10)), {self.honest.node_id})  # the router offers it nothing ...
        before = len(self.invokes[liar])
        answer = self.without_honest()
        self.assertEqual(answer.result.status_kind, ResultStatus.BUSY)  # ... even with no one else to ask
        self.assertEqual(len(self.invokes[liar]), before)
        self.assertEqual(self.payments.counts["calls_counted"], 10)
        self.payments.call_ran(self.fid, Answer(m.Result(status=0, queue_us=0, fetch_us=0, boot_us=0, exec_us=0,
                                                         output=b"5", log=b""), liar), None, 1)
        self.assertEqual(self.payments.counts["calls_suspended"], 1)
        self.payments.verified_since = lambda t: [(self.fid_text, liar), (self.fid_text, self.honest.node_id)]
        self.net.clock.advance(1)
        self.payments.epoch_tick()
        self.assertEqual((self.payments.counts["epochs_counted"], self.payments.counts["epochs_suspended"]), (1, 1))
        self.net.run(PENALTY_S)
        self.assertFalse(self.canary.is_suspect(liar))
        self.payments.epoch_tick()  # an epoch that overlapped the penalty still earns nothing
        self.assertEqual(self.payments.counts["epochs_suspended"], 2)
        self.net.clock.advance(1)
        self.payments.epoch_tick()
        self.assertEqual(self.payments.counts["epochs_counted"], 4)  # the honest host's third, the forgiven's first
        self.assertEqual(self.without_honest().replica, liar)  # forgiven: offered calls again
        self.assertEqual(self.payments.counts["calls_counted"], 11)

    def test_a_timeout_is_counted_not_punished(self):
        """A host too busy to answer a canary in time keeps its calls: the timeout is only counted."""
        self.liar.executor.hold = True
        self.tick_until(lambda: self.invokes[self.liar.node_id])
        self.net.run(15)
        self.assertEqual((self.canary.counts["timeouts"], self.canary.counts["wrong"]), (1, 0))
        self.assertFalse(self.canary.is_suspect(self.liar.node_id))
        self.assertFalse(self.tracker.replication.penalised(self.liar.node_id))

    def test_canaries_look_like_calls_and_are_never_cached_or_paid(self):
        """A canary reaches the host as an ordinary call does; it leaves nothing in the cache or the tally."""
        self.tick_until(lambda: self.canary.counts["passed"] >= 3)
        self.assertEqual((len(self.tracker.router.cache), self.tracker.router.counts["calls"]), (0, 0))
        self.assertEqual(self.payments.counts["calls_counted"] + self.payments.counts["calls_ignored"], 0)
        [canary] = self.invokes[self.honest.node_id][:1] or self.invokes[self.liar.node_id][:1]
        d = self.tracker.router.call(self.fid, SAMPLE_INPUT, trace_id=os.urandom(16))
        self.net.run(1)
        replica = self.successResultOf(d).replica
        call = self.invokes[replica][-1]

        def shape(invoke):
            return (invoke.deadline_ms, invoke.token, [(t.type, len(t.value)) for t in invoke.ext])

        self.assertEqual(shape(canary), shape(call))
        self.assertEqual([t.type for t in canary.ext], [int(TlvType.TRACE_ID)])
        self.assertEqual(canary.input, SAMPLE_INPUT)

    def test_a_host_is_sent_one_canary_at_a_time(self):
        """However many ticks pass while a host is slow, it has at most one canary outstanding."""
        self.canary.max_per_tick = 10
        for peer in (self.honest, self.liar):
            peer.executor.hold = True
        for _ in range(5):
            self.canary.tick()
            self.net.run(0.5)
        self.assertEqual([len(v) for v in self.invokes.values()], [1, 1])
        self.assertEqual(self.canary.figures()["outstanding"], 2)

    def test_a_host_right_on_samples_but_wrong_on_real_inputs_is_caught(self):
        """A host that answers the public samples right but lies to callers is caught by what other hosts answered."""
        third = self.host("10.4.0.1")
        self.invokes[third.node_id] = []
        self.net.run(3)
        self.assertEqual(len(self.tracker.replication.replicas(self.fid_text)), 3)
        honest_handler = self.liar.table.handlers[MessageType.INVOKE]
        self.lie(self.liar, b"41")
        lying = self.liar.table.handlers[MessageType.INVOKE]
        self.liar.table.handlers[MessageType.INVOKE] = lambda record, message, request_id: (
            honest_handler if message.input == SAMPLE_INPUT else lying)(record, message, request_id)
        self.calls(6, prefix=b'{"a":1,"b":')
        self.tick_until(lambda: self.canary.counts["wrong"] == 1, ticks=60)
        [shown] = self.canary.report()["suspect_hosts"]
        self.assertEqual(shown["node_id"], self.liar.node_id.hex())
        self.assertIn("earlier answers", shown["reason"])
        self.assertFalse(self.canary.is_suspect(self.honest.node_id) or self.canary.is_suspect(third.node_id))

    def test_answers_of_two_replicas_catch_a_liar_on_a_real_input(self):
        """An input two hosts answered alike becomes a known answer: a third host lying on it is caught."""
        third = self.host("10.4.0.1")
        self.invokes[third.node_id] = []
        self.canary._remember(self.fid_text, b"real input", self.honest.node_id, C.answer_digest(add(b"real input")))
        self.canary._remember(self.fid_text, b"real input", self.liar.node_id, C.answer_digest(add(b"real input")))
        [entry] = self.canary._seen[self.fid_text].values()  # two hosts in two networks agreed
        check = C._digest_check(entry.known())
        self.assertIsNone(check(add(b"real input")))
        self.lie(third, b'"not the answer"')
        self.net.run(1)
        self.canary.send(self.fid_text, third.node_id, self.tracker.router.channel(third.node_id), b"real input",
                         check, "earlier answers", 2000)
        self.net.run(1)
        self.assertTrue(self.canary.is_suspect(third.node_id))
        self.assertIn("earlier answers", self.canary.report()["suspect_hosts"][0]["reason"])


# --- the tables, with fakes ----------------------------------------------------------------------


@attrs.frozen
class _Peer:
    node_id: bytes


class FakeRegistry:
    def __init__(self, *records):
        self.records = {r.fid: r for r in records}
        self.addresses = {}  # node id -> its IP (none: no address)

    def peer(self, node_id):
        ip = self.addresses.get(node_id)
        return attrs.make_class("Peer", ["addresses"])([(ip, 7400)] if ip else [])

    def functions(self):
        return list(self.records.values())

    def function(self, fid):
        return self.records.get(fid)


class FakeReplication:
    def __init__(self, hosts):
        from orb.tracker.replication import placement_group

        self.hosts = hosts
        self.penalties = {}
        self.group_of = placement_group

    def replicas(self, fid):
        return [_Peer(n) for n in self.hosts]

    def penalise(self, node_id, seconds):
        self.penalties[node_id] = seconds


class FakeChannel:
    def __init__(self):
        self.sent = []  # (node id, Invoke, Deferred)

    def __call__(self, node_id):
        channel = self

        class One:
            def request(self, message, timeout_s):
                d = defer.Deferred()
                channel.sent.append((node_id, message, d))
                return d

        return One()


def record_for(pure=True, visibility="public", seed=b""):
    data, manifest = pure_function(pure, visibility)
    fid = fidmod.fid_for(data + seed)
    owner = records.key("canary-owner")
    return FunctionRecord(fidmod.to_text(fid), owner.public_bytes, manifest, len(data), 0,
                          sign_deploy(owner, fid, manifest, len(data), 0))


def ok(output):
    return Answer(m.Result(status=0, queue_us=0, fetch_us=0, boot_us=0, exec_us=0, output=output, log=b""),
                  b"\x01" * 32)


class TableTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.record = record_for()
        self.channel = FakeChannel()
        self.canary = C.Canary(self.clock, FakeRegistry(self.record), FakeReplication([b"\x03" * 32]), self.channel,
                               rng=random.Random(1))
        self.raw = fidmod.from_text(self.record.fid)
        self.canary.interval_s = 60.0

    def seen(self, replica, data=b"x", output=b"1", fid=None):
        self.canary.run_seen(fid or self.raw, data, attrs.evolve(ok(output), replica=replica))

    def test_an_answer_is_known_when_two_replicas_agree_and_outvote_the_rest(self):
        """One answer is no proof; two alike are, unless as many replicas say otherwise."""
        self.seen(b"\x01" * 32)
        [entry] = self.canary._seen[self.record.fid].values()
        self.assertIsNone(entry.known())
        self.seen(b"\x04" * 32, output=b"2")
        self.assertIsNone(entry.known())  # one against one
        self.seen(b"\x02" * 32, output=b" 1 ")  # the same JSON value
        self.assertEqual(entry.known(), C.answer_digest(b"1"))
        self.seen(b"\x05" * 32, output=b"2")
        self.assertIsNone(entry.known())  # two against two

    def test_two_hosts_in_one_network_make_no_known_answer(self):
        """Two replicas in the same /16 agreeing cannot frame a third host; a second network can."""
        self.canary.registry.addresses.update({b"\x01" * 32: "10.9.0.1", b"\x02" * 32: "10.9.7.7",
                                               b"\x04" * 32: "10.8.0.1"})
        self.seen(b"\x01" * 32)
        self.seen(b"\x02" * 32)
        [entry] = self.canary._seen[self.record.fid].values()
        self.assertIsNone(entry.known())
        self.seen(b"\x04" * 32)
        self.assertEqual(entry.known(), C.answer_digest(b"1"))

    def test_digests_compare_json_values_and_bytes(self):
        """A JSON answer matches whatever its key order or spacing; other bytes match only exactly."""
        self.assertEqual(C.answer_digest(b'{"b": 1, "a": [true]}'), C.answer_digest(b'{"a":[true],"b":1}'))
        self.assertNotEqual(C.answer_digest(b"true"), C.answer_digest(b"1"))
        self.assertNotEqual(C.answer_digest(b"not json"), C.answer_digest(b"not  json"))
        self.assertNotEqual(C.answer_digest(b'"x"'), C.answer_digest(b"x"))

    def test_only_ok_runs_of_pure_public_functions_are_remembered(self):
        """Cached, failed, oversized or impure calls teach the checker nothing."""
        impure, private = record_for(pure=False, seed=b"1"), record_for(visibility="private", seed=b"2")
        self.canary.registry.records.update({impure.fid: impure, private.fid: private})
        for r in (impure, private):
            self.seen(b"\x01" * 32, fid=fidmod.from_text(r.fid))
        self.canary.run_seen(self.raw, b"x", attrs.evolve(ok(b"1"), cached=True))
        self.canary.run_seen(self.raw, b"x", Answer(attrs.evolve(ok(b"1").result, status=int(ResultStatus.ERROR)),
                                                    b"\x01" * 32))
        self.seen(b"\x01" * 32, data=b"y" * (C.MAX_KNOWN_INPUT_BYTES + 1))
        self.assertEqual(self.canary.figures()["known_functions"], 0)

    def test_tables_are_bounded(self):
        """Inputs per function, functions, replicas per input and suspects are all capped."""
        for i in range(C.MAX_KNOWN_PER_FID + 5):
            self.seen(b"\x01" * 32, data=b"in%d" % i)
        self.assertEqual(self.canary.known_inputs(self.record.fid), C.MAX_KNOWN_PER_FID)
        for i in range(C.MAX_REPLICAS_PER_INPUT + 3):
            self.seen(bytes([i + 1]) * 32, data=b"shared")
        self.assertEqual(len(self.canary._seen[self.record.fid][C.hashlib.sha256(b"shared").digest()].answers),
                         C.MAX_REPLICAS_PER_INPUT)
        for i in range(C.MAX_KNOWN_FIDS + 3):
            self.canary._remember(f"f{i}", b"x", b"\x01" * 32, b"d")
        self.assertEqual(len(self.canary._seen), C.MAX_KNOWN_FIDS)
        self.patch(C, "MAX_SUSPECTS", 3)
        for i in range(5):
            self.canary.punish(bytes([i]) * 32, self.record.fid, "test")
        self.assertEqual(len(self.canary._suspects), 3)

    def test_ticks_send_samples_at_most_per_tick_and_jittered(self):
        """A tick sends the sample input to a verified host; the loop comes back within interval ± jitter."""
        self.canary.interval_s = 60.0
        self.canary.start()
        self.assertEqual(self.channel.sent, [])
        self.clock.advance(60 * (1 + C.JITTER))
        [(node_id, invoke, d)] = self.channel.sent
        self.assertEqual((node_id, invoke.input, invoke.deadline_ms), (b"\x03" * 32, SAMPLE_INPUT, 10_000))
        d.callback(ok(b"5").result)
        self.assertEqual(self.canary.counts["passed"], 1)
        self.canary.stop()
        self.clock.advance(1000)
        self.assertEqual(len(self.channel.sent), 1)

    def test_interval_zero_turns_spot_checks_off(self):
        """With --canary-interval 0 no canary is ever sent and no caller's input is kept."""
        self.canary.interval_s = 0
        self.canary.start()
        self.clock.advance(10_000)
        self.seen(b"\x01" * 32)
        self.assertEqual((self.channel.sent, self.canary.figures()["known_functions"]), ([], 0))

    def test_a_wrong_sample_answer_punishes_an_error_does_not(self):
        """RESULT ok with a wrong value makes a suspect; RESULT error is only counted."""
        self.canary.tick()
        [(_, _, d)] = self.channel.sent
        d.callback(attrs.evolve(ok(b"5").result, status=int(ResultStatus.ERROR), output=b"6"))
        self.assertEqual((self.canary.counts["not_ok"], self.canary.counts["wrong"]), (1, 0))
        self.canary.tick()
        d = self.channel.sent[-1][2]
        d.callback(ok(b"6").result)
        self.assertTrue(self.canary.is_suspect(b"\x03" * 32))
        self.assertEqual(self.canary.replication.penalties, {b"\x03" * 32: C.DEFAULT_PENALTY_S})
        self.canary.tick()
        self.assertEqual(len(self.channel.sent), 2)  # a suspect is sent no more canaries


class OptionTests(SynchronousTestCase):
    def parse(self, *argv):
        from orb.tracker import tap

        from twisted.python import usage

        options = tap.Options()
        try:
            options.parseOptions(["--data-dir", self.mktemp(), "--listen", "tcp:0:interface=127.0.0.1",
                                  "--http", "tcp:0:interface=127.0.0.1", *argv])
        except SystemExit as e:
            raise usage.UsageError(str(e)) from None
        return options

    def test_canary_options(self):
        """Spot checks run every 60 s for 3600 s penalties unless told; 0 turns them off; nonsense is refused."""
        from twisted.python import usage

        default = self.parse()
        self.assertEqual((default["canary-interval"], default["canary-penalty"]), (60.0, 3600.0))
        self.assertEqual(self.parse("--canary-interval", "0", "--canary-penalty", "90")["canary-interval"], 0.0)
        for argv in (("--canary-interval", "-5"), ("--canary-penalty", "0"), ("--canary-interval", "soon")):
            self.assertRaises(usage.UsageError, self.parse, *argv)
