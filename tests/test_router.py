"""
The tracker's call routing (orb.tracker.router, .routing, .cache), driven
with a task.Clock, a seeded RNG and fake channels: which replica a call
goes to, retries, hedging, deadlines, backpressure, the result cache, cold
replicas, and INVOKE/CANCEL at the tracker.
"""

import random

import attrs
from twisted.internet import defer, error, task
from twisted.trial.unittest import SynchronousTestCase

from orb.net.adapter import RemoteError, RequestTimeout
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, ResultStatus, TlvType
from orb.tracker import router as routermod
from orb.tracker.cache import ResultCache, cached_age_ms
from orb.tracker.router import Router
from orb.tracker.routing import choose, rank_replicas

FID_RAW = fidmod.fid_for(b"router-test")
FID = fidmod.to_text(FID_RAW)


def node(n):
    return bytes([n]) * 32


@attrs.define
class Peer:
    node_id: bytes
    rtt_ms: float | None = 1
    load_permille: int = 0
    reachability: str = "reachable"
    addresses: list = attrs.Factory(lambda: [("127.0.0.1", 7400)])


class Function:
    owner = b"\x0a" * 32  # the owner's Ed25519 key: its calls are authorized (RFC 10.10)

    def __init__(self, **manifest):
        self.manifest = {"timeout_ms": 5000, "idempotent": False, "pure": False, **manifest}

    def manifest_json(self):
        return dict(self.manifest)


class Registry:
    def __init__(self, function):
        self.functions = {FID: function}

    def function(self, fid):
        return self.functions.get(fid)


class Replication:
    def __init__(self, verified, cold=()):
        self.verified = list(verified)
        self.cold = list(cold)

    def replicas(self, fid):
        return list(self.verified)

    def cold_replicas(self, fid):
        return list(self.cold)


def ok(output=b"out", exec_us=1000):
    return m.Result(status=int(ResultStatus.OK), queue_us=0, fetch_us=0, boot_us=0, exec_us=exec_us, output=output,
                    log=b"")


def status(kind):
    return m.Result(status=int(kind), queue_us=0, fetch_us=0, boot_us=0, exec_us=0, output=b"", log=b"")


class Channel:
    """A replica as the router sees it: records each request; the test (or ``auto``, after ``delay_s``) answers."""

    def __init__(self, clock, node_id, route="direct", auto=None, delay_s=0.0):
        self.clock = clock
        self.node_id = node_id
        self.route = route
        self.auto = auto  # callable(message) -> Result | Exception, answered after delay_s
        self.delay_s = delay_s
        self.sent = []  # (message, timeout_s, Deferred)
        self.cancelled = []  # the messages whose Deferred was cancelled (CANCEL to the host)

    def request(self, message, timeout_s):
        timer = []

        def cancel(d):
            self.cancelled.append(message)
            if timer and timer[0].active():
                timer[0].cancel()

        d = defer.Deferred(cancel)
        self.sent.append((message, timeout_s, d))
        if self.auto is not None and self.delay_s:
            timer.append(self.clock.callLater(self.delay_s, self._answer, d, message))
        elif self.auto is not None:
            self._answer(d, message)  # at once, as a replica that answers within the same reactor turn
        return d

    def _answer(self, d, message):
        outcome = self.auto(message)
        if isinstance(outcome, Exception):
            d.errback(outcome)
        else:
            d.callback(outcome)

    @property
    def open(self):
        return [d for _, _, d in self.sent if not d.called]


class Record:
    """A caller's session record at the tracker."""

    def __init__(self):
        self.sent = []
        self.refused = []

    def send(self, message, response_to=0):
        self.sent.append((message, response_to))

    def refuse(self, request_id, code, text):
        self.refused.append((request_id, code, text))


class RouterTestMixin:
    def make(self, peers, function=None, cold=(), seed=1, **kwargs):
        self.clock = task.Clock()
        self.function = function or Function()
        self.channels = {p.node_id: Channel(self.clock, p.node_id) for p in list(peers) + list(cold)}
        self.replication = Replication(peers, cold)
        self.router = Router(self.clock, None, Registry(self.function), self.replication,
                             channel=lambda node_id: self.channels.get(node_id), rng=random.Random(seed), **kwargs)
        return self.router

    def only_open(self):
        """The one channel with an unanswered request, and that request's Deferred."""
        (pair,) = [(c, d) for c in self.channels.values() if c is not None for d in c.open]
        return pair


class RankingTests(RouterTestMixin, SynchronousTestCase):
    def test_outstanding_calls_count_in_the_ranking(self):
        """A replica with calls in flight ranks behind an idle one at the same RTT; the unmeasured rank last."""
        a, b, c = Peer(node(1), rtt_ms=5), Peer(node(2), rtt_ms=5), Peer(node(3), rtt_ms=None)
        busy = {node(1): 3}
        ranked = rank_replicas([a, b, c], outstanding=lambda n: busy.get(n, 0))
        self.assertEqual([p.node_id for p in ranked], [node(2), node(1), node(3)])

    def test_power_of_two_choices_takes_the_cheaper(self):
        """Of the two replicas drawn, the one with fewer calls in flight is chosen, whatever the draw order."""
        a, b = Peer(node(1)), Peer(node(2))
        for seed in range(20):
            self.assertEqual(choose([a, b], random.Random(seed), lambda n: 5 if n == node(1) else 0), b)

    def test_announced_load_counts(self):
        """A saturated replica (load 1000) counts as twice as far: an idle one 1.5x further wins."""
        ranked = rank_replicas([Peer(node(1), rtt_ms=10, load_permille=1000), Peer(node(2), rtt_ms=15)])
        self.assertEqual([p.node_id for p in ranked], [node(2), node(1)])

    def test_a_slow_replica_gets_few_calls(self):
        """With one of three replicas answering after 200 ms and the others after 5 ms, most calls go elsewhere."""
        peers = [Peer(node(1)), Peer(node(2)), Peer(node(3))]
        router = self.make(peers)
        for p in peers:
            channel = self.channels[p.node_id]
            channel.auto = lambda message: ok()
            channel.delay_s = 0.2 if p.node_id == node(3) else 0.005
        answers = []
        for _ in range(300):
            router.call(FID_RAW, b"x").addCallback(answers.append)
            self.clock.advance(0.01)
        self.clock.advance(1)
        self.assertEqual(len(answers), 300)
        self.assertTrue(all(a.result.status_kind is ResultStatus.OK for a in answers))
        slow = sum(1 for a in answers if a.replica == node(3))
        self.assertLess(slow, 300 * 0.15, f"the slow replica served {slow} of 300 calls")
        self.assertGreater(min(sum(1 for a in answers if a.replica == n) for n in (node(1), node(2))), 90)


    def test_a_slow_replica_with_the_best_rtt_still_gets_few_calls(self):
        """A replica whose PING RTT is the best (1 ms) but whose calls take 300 ms gets few calls after its first."""
        peers = [Peer(node(1), rtt_ms=1), Peer(node(2), rtt_ms=40), Peer(node(3), rtt_ms=40)]
        router = self.make(peers)
        for p in peers:
            channel = self.channels[p.node_id]
            channel.auto = lambda message: ok()
            channel.delay_s = 0.3 if p.node_id == node(1) else 0.005
        answers = []
        for _ in range(300):
            router.call(FID_RAW, b"x").addCallback(answers.append)
            self.clock.advance(0.01)
        self.clock.advance(1)
        self.assertEqual(len(answers), 300)
        slow = sum(1 for a in answers if a.replica == node(1))
        self.assertLess(slow, 300 * 0.15, f"the slow replica served {slow} of 300 calls")

    def test_the_peak_ewma_jumps_up_and_decays_down(self):
        """One slow answer sets a replica's latency at once; faster answers bring it down a quarter at a time."""
        router = self.make([Peer(node(1))])
        latency = router.latency_ms(FID_RAW)
        self.assertIsNone(latency(node(1)))
        router.observe_latency(FID_RAW, node(1), 0.010)
        router.observe_latency(FID_RAW, node(1), 0.400)
        self.assertAlmostEqual(latency(node(1)), 400.0)
        router.observe_latency(FID_RAW, node(1), 0.000)
        self.assertAlmostEqual(latency(node(1)), 300.0)


class RetryTests(RouterTestMixin, SynchronousTestCase):
    def answered_by(self, failures, idempotent=False):
        """Call with two replicas; the first asked fails with ``failures``; the second answers ok."""
        router = self.make([Peer(node(1)), Peer(node(2))], Function(idempotent=idempotent))
        d = router.call(FID_RAW, b"in")
        first, first_d = self.only_open()
        if isinstance(failures, m.Result):
            first_d.callback(failures)
        else:
            first_d.errback(failures)
        return first, d

    def test_busy_and_not_found_go_to_the_next_replica(self):
        """RESULT busy / not_found / refused, ERROR busy / rate_limited from a replica: the call goes to the other."""
        for failure in (status(ResultStatus.BUSY), status(ResultStatus.NOT_FOUND), status(ResultStatus.REFUSED),
                        RemoteError(ErrorCode.BUSY, "full"),
                        RemoteError(ErrorCode.RATE_LIMITED, "slow down")):
            first, d = self.answered_by(failure)
            second, second_d = self.only_open()
            self.assertIsNot(first, second)
            second_d.callback(ok(b"done"))
            answer = self.successResultOf(d)
            self.assertEqual((answer.result.output, answer.replica, answer.attempts), (b"done", second.node_id, 2))

    def test_a_refusal_about_the_request_reaches_the_caller(self):
        """ERROR(too_large) from the replica (an input over its cap) goes back to the INVOKE's caller as that ERROR."""
        router = self.make([Peer(node(1)), Peer(node(2))])
        caller = Record()
        router.on_invoke(caller, m.Invoke(fid=FID_RAW, deadline_ms=1000, token=b"", input=b"big"), 9)
        _, first = self.only_open()
        first.errback(RemoteError(int(ErrorCode.TOO_LARGE), "input over the cap"))
        self.assertEqual([r[:2] for r in caller.refused], [(9, ErrorCode.TOO_LARGE)])
        self.assertEqual(sum(len(c.sent) for c in self.channels.values()), 1)

    def test_an_input_over_the_manifests_cap_is_refused(self):
        """An input over max_input_bytes is refused before any replica is asked; INVOKE gets ERROR(too_large)."""
        router = self.make([Peer(node(1))], Function(max_input_bytes=4))
        answer = self.successResultOf(router.call(FID_RAW, b"12345"))
        self.assertEqual((answer.refusal, answer.attempts), (ErrorCode.TOO_LARGE, 0))
        caller = Record()
        router.on_invoke(caller, m.Invoke(fid=FID_RAW, deadline_ms=1000, token=b"", input=b"12345"), 2)
        self.assertEqual([r[:2] for r in caller.refused], [(2, ErrorCode.TOO_LARGE)])
        self.assertEqual(self.channels[node(1)].sent, [])
        router.call(FID_RAW, b"1234")
        self.assertEqual(len(self.channels[node(1)].sent), 1)

    def test_unreachable_replicas_are_skipped(self):
        """A replica with no channel is never asked; the call goes to the reachable one."""
        router = self.make([Peer(node(1)), Peer(node(2))])
        self.channels[node(1)] = None
        d = router.call(FID_RAW, b"in")
        channel, first = self.only_open()
        self.assertEqual(channel.node_id, node(2))
        first.callback(ok())
        self.assertEqual(self.successResultOf(d).attempts, 1)

    def test_a_request_that_cannot_be_sent_is_retried(self):
        """A session lost before the INVOKE went out (the request fails at once) counts as before the start."""
        router = self.make([Peer(node(1)), Peer(node(2))])
        lost = Channel(self.clock, node(1), auto=None)
        lost.request = lambda message, timeout_s: defer.fail(error.ConnectionLost("not ready"))
        self.channels[node(1)] = lost
        d = router.call(FID_RAW, b"in")
        channel, first = self.only_open()
        self.assertEqual(channel.node_id, node(2))
        first.callback(ok())
        self.assertEqual(self.successResultOf(d).replica, node(2))

    def test_lost_mid_call_is_not_retried_unless_idempotent(self):
        """A replica lost after the INVOKE was sent: a non-idempotent call gets a clear error, not a second run."""
        first, d = self.answered_by(error.ConnectionLost("gone"))
        answer = self.successResultOf(d)
        self.assertEqual(answer.result.status_kind, ResultStatus.INTERNAL)
        self.assertIn(b"lost mid-call", answer.result.log)
        self.assertIn(b"not idempotent", answer.result.log)
        self.assertEqual((answer.attempts, answer.replica), (1, first.node_id))
        self.assertEqual(sum(len(c.sent) for c in self.channels.values()), 1)

    def test_lost_mid_call_is_retried_when_idempotent(self):
        """A replica lost mid-call: an idempotent call runs again on another replica and succeeds."""
        first, d = self.answered_by(error.ConnectionLost("gone"), idempotent=True)
        second, second_d = self.only_open()
        second_d.callback(ok(b"again"))
        answer = self.successResultOf(d)
        self.assertEqual(self.router.figures()["retries"], 1)
        self.assertEqual((answer.result.output, answer.attempts, answer.replica), (b"again", 2, second.node_id))

    def test_timeout_of_a_non_idempotent_call(self):
        """A replica that never answers: a non-idempotent call answers timeout and is not run elsewhere."""
        first, d = self.answered_by(RequestTimeout("no answer"))
        self.assertEqual(self.successResultOf(d).result.status_kind, ResultStatus.TIMEOUT)
        self.assertEqual(sum(len(c.sent) for c in self.channels.values()), 1)

    def test_every_replica_failing_is_busy(self):
        """When every replica refuses, the answer is RESULT busy with a retry hint."""
        router = self.make([Peer(node(1)), Peer(node(2))])
        d = router.call(FID_RAW, b"in")
        for _ in range(2):
            _, pending = self.only_open()
            pending.callback(status(ResultStatus.BUSY))
        answer = self.successResultOf(d)
        self.assertEqual((answer.result.status_kind, answer.attempts), (ResultStatus.BUSY, 2))
        self.assertEqual(answer.retry_after_s, routermod.RETRY_AFTER_S)

    def test_unknown_fid_and_bad_fid(self):
        """A fid that is not deployed, or not a fid, is not_found without asking anyone."""
        router = self.make([Peer(node(1))])
        self.assertEqual(self.successResultOf(router.call(fidmod.fid_for(b"other"), b"")).result.status_kind,
                         ResultStatus.NOT_FOUND)
        self.assertEqual(self.successResultOf(router.call(b"\x00bad", b"")).result.status_kind, ResultStatus.NOT_FOUND)
        self.assertEqual(self.channels[node(1)].sent, [])


class HedgingTests(RouterTestMixin, SynchronousTestCase):
    def warm(self, router, node_id, seconds=0.01, count=routermod.MIN_HEDGE_SAMPLES):
        for _ in range(count):
            router.observe_latency(FID_RAW, node_id, seconds)

    def test_a_stalled_call_is_hedged_and_the_loser_cancelled(self):
        """Past its replica's p95 an idempotent call goes to another too; the first answer wins, the other is cut."""
        router = self.make([Peer(node(1), rtt_ms=1), Peer(node(2), rtt_ms=50)], Function(idempotent=True))
        self.warm(router, node(1))
        d = router.call(FID_RAW, b"in")
        self.assertEqual(len(self.channels[node(1)].open), 1)
        self.clock.advance(0.009)
        self.assertEqual(self.channels[node(2)].sent, [])
        self.clock.advance(0.002)
        (hedge,) = self.channels[node(2)].open
        hedge.callback(ok(b"hedged"))
        answer = self.successResultOf(d)
        self.assertEqual((answer.result.output, answer.replica, answer.attempts), (b"hedged", node(2), 2))
        self.assertEqual(len(self.channels[node(1)].cancelled), 1)
        self.assertEqual(router.outstanding(node(1)), 0)
        figures = router.figures()
        self.assertEqual((figures["calls"], figures["sent"], figures["hedges"], figures["retries"]), (1, 2, 1, 0))

    def test_no_hedge_for_non_idempotent_or_without_samples(self):
        """A non-idempotent call, or one with too few recent answers to know a p95, is never hedged."""
        router = self.make([Peer(node(1), rtt_ms=1), Peer(node(2), rtt_ms=50)], Function(idempotent=False))
        self.warm(router, node(1))
        router.call(FID_RAW, b"in")
        self.clock.advance(1)
        self.assertEqual(self.channels[node(2)].sent, [])
        router = self.make([Peer(node(1), rtt_ms=1), Peer(node(2), rtt_ms=50)], Function(idempotent=True))
        self.warm(router, node(1), count=routermod.MIN_HEDGE_SAMPLES - 1)
        router.call(FID_RAW, b"in")
        self.clock.advance(1)
        self.assertEqual(self.channels[node(2)].sent, [])

    def test_a_replica_without_samples_uses_the_functions_p95(self):
        """A replica with too few answers of its own is hedged on the p95 of the function's answers from any replica."""
        router = self.make([Peer(node(1), rtt_ms=1), Peer(node(2), rtt_ms=50)], Function(idempotent=True))
        self.warm(router, node(2), seconds=0.05)
        self.assertEqual(router.p95_s(FID_RAW, node(1)), 0.05)
        router.call(FID_RAW, b"in")
        self.assertEqual(len(self.channels[node(1)].open), 1)
        self.clock.advance(0.051)
        self.assertEqual(len(self.channels[node(2)].open), 1)

    def test_the_first_answer_wins_even_after_a_hedge(self):
        """If the first replica answers after the hedge went out, its answer is taken and the hedge cancelled."""
        router = self.make([Peer(node(1), rtt_ms=1), Peer(node(2), rtt_ms=50)], Function(idempotent=True))
        self.warm(router, node(1))
        d = router.call(FID_RAW, b"in")
        self.clock.advance(0.02)
        (first,) = self.channels[node(1)].open
        first.callback(ok(b"first"))
        answer = self.successResultOf(d)
        self.assertEqual((answer.result.output, answer.attempts), (b"first", 2))
        self.assertEqual(len(self.channels[node(2)].cancelled), 1)

    def test_hedges_are_at_most_a_twentieth_of_calls_under_overload(self):
        """When every call runs past its p95 (overload), hedges stop at the burst plus 5% of calls, not one per call."""
        router = self.make([Peer(node(1), rtt_ms=1), Peer(node(2), rtt_ms=50)], Function(idempotent=True),
                           max_per_replica=1000)
        self.warm(router, node(1))
        self.warm(router, node(2))
        calls = 400
        for _ in range(calls):  # none answers: each runs past its p95 before the next arrives
            router.call(FID_RAW, b"in")
            self.clock.advance(0.02)
        figures = router.figures()
        budget = routermod.HEDGE_BURST + calls * routermod.HEDGE_RATIO
        self.assertLessEqual(figures["hedges"], budget)
        self.assertGreaterEqual(figures["hedges"], budget - 2)
        self.assertEqual(figures["hedges"] + figures["hedges_over_budget"], calls)

    def test_p95_window_is_bounded(self):
        """The latency window keeps the recent answers only: old slow ones age out of the p95."""
        router = self.make([Peer(node(1))])
        self.warm(router, node(1), seconds=5.0, count=routermod.LATENCY_WINDOW)
        self.warm(router, node(1), seconds=0.01, count=routermod.LATENCY_WINDOW)
        self.assertEqual(router.p95_s(FID_RAW, node(1)), 0.01)


class DeadlineTests(RouterTestMixin, SynchronousTestCase):
    def test_each_hop_sends_the_remaining_budget(self):
        """A retry after 300 ms sends deadline_ms less the 300 ms already spent; the wait is that plus a margin."""
        router = self.make([Peer(node(1)), Peer(node(2))])
        router.call(FID_RAW, b"in", deadline_s=2.0)
        channel, first = self.only_open()
        message, timeout_s, _ = channel.sent[0]
        self.assertEqual((message.deadline_ms, timeout_s), (2000, 2.0 + routermod.REQUEST_MARGIN_S))
        self.clock.advance(0.3)
        first.callback(status(ResultStatus.BUSY))
        channel, _ = self.only_open()
        message, timeout_s, _ = channel.sent[0]
        self.assertEqual(message.deadline_ms, 1700)
        self.assertAlmostEqual(timeout_s, 1.7 + routermod.REQUEST_MARGIN_S)

    def test_no_deadline_means_the_manifest_timeout(self):
        """A deadline of 0 (or none) is the manifest's timeout_ms."""
        router = self.make([Peer(node(1))], Function(timeout_ms=1234))
        router.call(FID_RAW, b"in", deadline_s=0)
        self.assertEqual(self.channels[node(1)].sent[0][0].deadline_ms, 1234)

    def test_a_deadline_past_the_maximum_is_refused(self):
        """A deadline past MAX_DEADLINE_S is refused before any replica is asked; INVOKE gets ERROR(out_of_range)."""
        router = self.make([Peer(node(1))])
        answer = self.successResultOf(router.call(FID_RAW, b"", deadline_s=routermod.MAX_DEADLINE_S + 1))
        self.assertEqual(answer.refusal, ErrorCode.OUT_OF_RANGE)
        caller = Record()
        router.on_invoke(caller, m.Invoke(fid=FID_RAW, deadline_ms=int(routermod.MAX_DEADLINE_S * 1000) + 1,
                                          token=b"", input=b""), 7)
        self.assertEqual([r[:2] for r in caller.refused], [(7, ErrorCode.OUT_OF_RANGE)])
        self.assertEqual(self.channels[node(1)].sent, [])


class BackpressureTests(RouterTestMixin, SynchronousTestCase):
    def test_a_burst_fills_the_slots_then_the_queue_then_gets_busy(self):
        """10 calls on 2 replicas with 2 slots each and a queue of 3: 4 run, 3 wait, 3 get busy with a retry hint."""
        router = self.make([Peer(node(1)), Peer(node(2))], max_per_replica=2, max_queue=3)
        ds = [router.call(FID_RAW, b"%d" % i) for i in range(10)]
        self.assertEqual(sum(len(c.open) for c in self.channels.values()), 4)
        self.assertEqual(router.queued(), 3)
        busy = [self.successResultOf(d) for d in ds[7:]]
        figures = router.figures()
        self.assertEqual((figures["queue_length"], figures["queue_full"], figures["outstanding"]), (3, 3, 4))
        self.assertTrue(all(a.result.status_kind is ResultStatus.BUSY and a.retry_after_s > 0 for a in busy))
        for d in ds[:7]:
            self.assertNoResult(d)
        # One slot frees: the oldest waiting call (input b"4") takes it.
        channel = self.channels[node(1)]
        channel.open[0].callback(ok())
        self.assertEqual(channel.sent[-1][0].input, b"4")
        self.assertEqual(router.queued(), 2)
        self.assertEqual(router.outstanding(node(1)), 2)

    def test_a_waiting_call_times_out_at_its_deadline(self):
        """A call waiting for a free slot answers timeout at its deadline and leaves the queue."""
        router = self.make([Peer(node(1))], max_per_replica=1, max_queue=4)
        router.call(FID_RAW, b"a", deadline_s=5)
        waiting = router.call(FID_RAW, b"b", deadline_s=1)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(waiting).result.status_kind, ResultStatus.TIMEOUT)
        self.assertEqual(router.queued(), 0)

    def test_outstanding_returns_to_zero(self):
        """After every call ends, however it ended, no slot stays taken and nothing stays queued."""
        router = self.make([Peer(node(1)), Peer(node(2))], Function(idempotent=True), max_per_replica=1, max_queue=8)
        outcomes = [ok(), status(ResultStatus.BUSY), RemoteError(ErrorCode.BUSY, "x"), error.ConnectionLost("x")]
        ds = [router.call(FID_RAW, b"%d" % i) for i in range(8)]
        for i in range(40):
            for channel in self.channels.values():
                for d in channel.open:
                    outcome = outcomes[i % len(outcomes)]
                    d.errback(outcome) if isinstance(outcome, Exception) else d.callback(outcome)
        for d in ds:
            self.successResultOf(d)
        self.assertEqual((router.outstanding(node(1)), router.outstanding(node(2)), router.queued()), (0, 0, 0))


class CacheTests(RouterTestMixin, SynchronousTestCase):
    def test_a_pure_functions_second_call_is_cached(self):
        """The second identical call of a pure function is served from the cache, marked cached with its age."""
        router = self.make([Peer(node(1))], Function(pure=True, idempotent=True))
        self.channels[node(1)].auto = lambda message: ok(b"42")
        first = self.successResultOf(router.call(FID_RAW, b"in"))
        self.assertFalse(first.cached)
        self.clock.advance(2.5)
        second = self.successResultOf(router.call(FID_RAW, b"in"))
        self.assertTrue(second.cached)
        self.assertEqual((second.result.output, second.attempts, second.replica), (b"42", 0, node(1)))
        self.assertEqual(cached_age_ms(second.result), 2500)
        self.assertEqual(len(self.channels[node(1)].sent), 1)
        other = self.successResultOf(router.call(FID_RAW, b"other input"))
        self.assertFalse(other.cached)

    def test_identical_calls_share_one_run(self):
        """Identical calls of a pure function made while the first runs share its run: one INVOKE, one answer."""
        router = self.make([Peer(node(1)), Peer(node(2))], Function(pure=True, idempotent=True))
        ds = [router.call(FID_RAW, b"in") for _ in range(3)]
        other = router.call(FID_RAW, b"other")
        self.assertEqual(sum(len(c.sent) for c in self.channels.values()), 2)
        for channel in self.channels.values():
            for d in channel.open:
                d.callback(ok(b"shared"))
        answers = [self.successResultOf(d) for d in ds]
        self.assertEqual([a.result.output for a in answers], [b"shared"] * 3)
        self.assertEqual([a.attempts for a in answers], [1, 0, 0])
        self.assertEqual(self.successResultOf(other).result.output, b"shared")
        self.assertEqual(router.figures()["shared"], 2)

    def test_a_shared_run_stops_only_when_every_caller_has_left(self):
        """Cancelling one of two identical calls leaves the run going; cancelling both withdraws it at the replica."""
        router = self.make([Peer(node(1))], Function(pure=True, idempotent=True))
        first, second = router.call(FID_RAW, b"in"), router.call(FID_RAW, b"in")
        first.cancel()
        self.failureResultOf(first, defer.CancelledError)
        self.assertEqual(self.channels[node(1)].cancelled, [])
        second.cancel()
        self.failureResultOf(second, defer.CancelledError)
        self.assertEqual(len(self.channels[node(1)].cancelled), 1)
        self.assertEqual((router.outstanding(node(1)), router._runs), (0, {}))

    def test_a_joined_call_keeps_its_own_deadline(self):
        """A call that joined a running identical one answers timeout at its own, shorter deadline; the run goes on."""
        router = self.make([Peer(node(1))], Function(pure=True, idempotent=True))
        long = router.call(FID_RAW, b"in", deadline_s=10)
        short = router.call(FID_RAW, b"in", deadline_s=1)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(short).result.status_kind, ResultStatus.TIMEOUT)
        self.assertNoResult(long)
        self.channels[node(1)].open[0].callback(ok())
        self.assertEqual(self.successResultOf(long).result.status_kind, ResultStatus.OK)

    def test_errors_and_impure_functions_are_never_cached(self):
        """A failed call is not cached, nor one of an impure function, nor of a private one (the key has no token)."""
        router = self.make([Peer(node(1))], Function(pure=True, idempotent=True))
        self.channels[node(1)].auto = lambda message: status(ResultStatus.ERROR)
        router.call(FID_RAW, b"in")
        self.assertFalse(self.successResultOf(router.call(FID_RAW, b"in")).cached)
        router = self.make([Peer(node(1))], Function(pure=False))
        self.channels[node(1)].auto = lambda message: ok()
        router.call(FID_RAW, b"in")
        self.assertFalse(self.successResultOf(router.call(FID_RAW, b"in")).cached)
        router = self.make([Peer(node(1))], Function(pure=True, idempotent=True, visibility="private"))
        self.channels[node(1)].auto = lambda message: ok()
        router.call(FID_RAW, b"in", token=b"secret")
        self.assertFalse(self.successResultOf(router.call(FID_RAW, b"in")).cached)

    def test_ttl_expiry(self):
        """A cached answer older than the TTL is gone: the call runs again."""
        clock = task.Clock()
        cache = ResultCache(clock, ttl_s=10)
        self.assertTrue(cache.put(FID_RAW, b"in", ok()))
        clock.advance(9.9)
        self.assertIsNotNone(cache.get(FID_RAW, b"in"))
        clock.advance(0.1)
        self.assertIsNone(cache.get(FID_RAW, b"in"))
        self.assertEqual((len(cache), cache.size_bytes), (0, 0))

    def test_bounds(self):
        """The cache never holds more than its entry and byte bounds; the least recently used go first."""
        clock = task.Clock()
        cache = ResultCache(clock, max_entries=3, max_bytes=4 * 2000)
        for i in range(5):
            cache.put(FID_RAW, b"%d" % i, ok(b"x" * 10))
        self.assertEqual(len(cache), 3)
        self.assertIsNone(cache.get(FID_RAW, b"0"))
        self.assertIsNotNone(cache.get(FID_RAW, b"4"))
        cache = ResultCache(clock, max_entries=100, max_bytes=4 * 1000)
        for i in range(20):
            cache.put(FID_RAW, b"%d" % i, ok(b"x" * 700))
        self.assertLessEqual(cache.size_bytes, 4000)
        self.assertFalse(cache.put(FID_RAW, b"big", ok(b"x" * 2000)))  # over a quarter of the bytes: never stored

    def test_the_cached_tlv_is_on_the_wire(self):
        """A cached RESULT to an INVOKE carries the cached TLV (u32 age ms) and the replica whose run it keeps."""
        router = self.make([Peer(node(1))], Function(pure=True, idempotent=True))
        self.channels[node(1)].auto = lambda message: ok(b"42")
        router.call(FID_RAW, b"in")
        caller = Record()
        router.on_invoke(caller, m.Invoke(fid=FID_RAW, deadline_ms=1000, token=b"", input=b"in"), 3)
        ((result, response_to),) = caller.sent
        self.assertEqual(response_to, 3)
        self.assertEqual([(t.type, t.value) for t in result.ext],
                         [(TlvType.CACHED, b"\x00\x00\x00\x00"), (TlvType.REPLICA, node(1))])
        self.assertEqual(m.decode_body(m.MessageType.RESULT, result.encode_body()), result)


class ColdReplicaTests(RouterTestMixin, SynchronousTestCase):
    def test_a_cold_replica_is_used_only_when_no_verified_one_can_take_it(self):
        """A placed but unverified replica gets the call when the verified ones cannot, with the fetch allowance."""
        router = self.make([Peer(node(1))], cold=[Peer(node(2))], max_per_replica=1)
        router.call(FID_RAW, b"a", deadline_s=2)
        self.assertEqual((len(self.channels[node(1)].sent), len(self.channels[node(2)].sent)), (1, 0))
        router.call(FID_RAW, b"b", deadline_s=2)
        ((message, timeout_s, _),) = self.channels[node(2)].sent
        self.assertEqual(message.deadline_ms, 2000)
        self.assertEqual(timeout_s, 2 + routermod.REQUEST_MARGIN_S + routermod.COLD_FETCH_ALLOWANCE_S)


class InvokeAtTheTrackerTests(RouterTestMixin, SynchronousTestCase):
    def test_trace_id_is_forwarded(self):
        """The INVOKE's 16-byte trace_id TLV reaches the replica; the replica's RESULT goes back to the caller."""
        router = self.make([Peer(node(1))])
        caller = Record()
        trace = m.Tlv(int(TlvType.TRACE_ID), b"t" * 16)
        router.on_invoke(caller, m.Invoke(fid=FID_RAW, deadline_ms=1000, token=b"", input=b"",
                                          ext=(m.Tlv(int(TlvType.TRACE_ID), b"short"),)), 4)
        self.assertEqual(self.channels[node(1)].sent[0][0].ext, ())  # a trace_id not of 16 bytes is ignored
        self.channels[node(1)].sent.clear()
        router.on_invoke(caller, m.Invoke(fid=FID_RAW, deadline_ms=1000, token=b"tok", input=b"in", ext=(trace,)), 5)
        message, _, d = self.channels[node(1)].sent[0]
        self.assertEqual((message.ext, message.token, message.input), ((trace,), b"tok", b"in"))
        d.callback(ok(b"o"))
        replica = m.Tlv(int(TlvType.REPLICA), node(1))
        self.assertEqual(caller.sent, [(attrs.evolve(ok(b"o"), ext=(replica,)), 5)])

    def test_an_answered_invoke_names_its_replica_and_feeds_the_figures(self):
        """The RESULT sent to the caller carries the replica TLV, and each answered call reaches call_listeners."""
        router = self.make([Peer(node(1))])
        seen = []
        router.call_listeners.append(lambda fid, latency_s, ok_: seen.append((fid, latency_s, ok_)))
        caller = Record()
        router.on_invoke(caller, m.Invoke(fid=FID_RAW, deadline_ms=1000, token=b"", input=b""), 3)
        self.clock.advance(0.25)
        self.channels[node(1)].sent[0][2].callback(status(ResultStatus.ERROR))
        (result, _), = caller.sent
        self.assertEqual([t.value for t in result.ext if t.type == TlvType.REPLICA], [node(1)])
        self.assertEqual(seen, [(fidmod.to_text(FID_RAW), 0.25, False)])

    def test_the_callers_cancel_cancels_the_routed_call(self):
        """CANCEL for an INVOKE routed here cancels the request to the replica and frees its slot; no RESULT."""
        router = self.make([Peer(node(1))])
        caller = Record()
        router.on_invoke(caller, m.Invoke(fid=FID_RAW, deadline_ms=1000, token=b"", input=b"in"), 5)
        router.on_cancel(caller, m.Cancel(request_id=4), 0)  # not one of its calls: ignored
        self.assertEqual(self.channels[node(1)].cancelled, [])
        router.on_cancel(caller, m.Cancel(request_id=5), 0)
        self.assertEqual(len(self.channels[node(1)].cancelled), 1)
        self.assertEqual((caller.sent, router.outstanding(node(1)), router._callers), ([], 0, {}))

    def test_a_lost_caller_cancels_its_calls(self):
        """When a caller's session is lost, every call it routed here is cancelled at the replicas."""
        router = self.make([Peer(node(1)), Peer(node(2))])
        caller, other = Record(), Record()
        for rid in (1, 2):
            router.on_invoke(caller, m.Invoke(fid=FID_RAW, deadline_ms=1000, token=b"", input=b"in"), rid)
        router.on_invoke(other, m.Invoke(fid=FID_RAW, deadline_ms=1000, token=b"", input=b"in"), 1)
        router.session_lost(caller)
        self.assertEqual(sum(len(c.cancelled) for c in self.channels.values()), 2)
        self.assertEqual(len(router._callers), 1)
        for channel in self.channels.values():
            for d in channel.open:
                d.callback(ok())
        self.assertEqual(len(other.sent), 1)
        self.assertEqual(caller.sent, [])


class CallerBoundTests(RouterTestMixin, SynchronousTestCase):
    def test_unanswered_invokes_are_bounded(self):
        """Past the bound on INVOKEs held unanswered, another is refused with ERROR(busy) and nothing is sent."""
        self.patch(routermod, "MAX_CALLERS_CALLS", 2)
        router = self.make([Peer(node(1))])
        caller = Record()
        for rid in (1, 2, 3):
            router.on_invoke(caller, m.Invoke(fid=FID_RAW, deadline_ms=1000, token=b"", input=b"in"), rid)
        self.assertEqual([r[:2] for r in caller.refused], [(3, ErrorCode.BUSY)])
        self.assertEqual(len(self.channels[node(1)].sent), 2)
        self.channels[node(1)].open[0].callback(ok())
        router.on_invoke(caller, m.Invoke(fid=FID_RAW, deadline_ms=1000, token=b"", input=b"in"), 4)
        self.assertEqual(len(self.channels[node(1)].sent), 3)

