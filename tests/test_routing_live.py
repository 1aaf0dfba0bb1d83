"""
Calls routed by a real `twistd orb-tracker` to real peers that run the
function in their jails (issue 11): a replica SIGKILLed mid-call, a stalled
replica and hedging, a slowed replica and the ranking, CANCEL from a
caller, and the result cache.

Each test deploys a two-replica function whose handler sleeps for the
``sleep`` seconds its input names, and calls it through the tracker: over
the wire, or through its HTTP gateway where the answering replica matters.
Calls sent together spread over both replicas (the tracker counts its
outstanding calls per replica), so each replica is running one when a
replica is killed or stopped.
"""

import json
import os
import re
import signal
import time

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from orb.devnet import open_session
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ResultStatus
from orb.tracker.cache import cached_age_ms
from tests._daemons import DaemonTestMixin, sleep
from tests.test_functions import api, post

HANDLER = '''\
import json
import time


def handler(event, context):
    args = json.loads(event or b"{}")
    time.sleep(args.get("sleep", 0))
    return {"sum": args["a"] + args["b"]}
'''
CALLS = 6  # sent together: both replicas get some unless one's RTT is 6 times the other's


class RoutingLiveTests(DaemonTestMixin, TestCase):
    timeout = 240


    @defer.inlineCallbacks
    def network_with(self, peers=2, replicas=2, idempotent=True, pure=False):
        """A tracker and ``peers`` peers in distinct /16s, and the sleeping adder deployed on ``replicas`` of them."""
        tracker = yield self.start_tracker("t1", "--challenge-interval", "60")
        started = []
        for i in range(1, peers + 1):
            p = yield self.start_peer(f"p{i}", "--listen", f"tcp:0:interface=127.{i}.0.1", "--tracker",
                                      tracker.wire_text)
            started.append(p)
        yield sleep(2)
        code, _, err = yield self.orb("keygen")
        self.assertEqual(code, 0, err)
        path = os.path.join(self.net.base_dir, "sleeper")
        code, _, err = yield self.orb("init", path, "--template", "python", "--name", "sleeper")
        self.assertEqual(code, 0, err)
        with open(os.path.join(path, "main.py"), "w") as f:
            f.write(HANDLER)
        with open(os.path.join(path, "orb.toml")) as f:
            toml = f.read()
        toml = re.sub(r"(?m)^replicas = \d+", f"replicas = {replicas}", toml)
        toml = re.sub(r"(?m)^idempotent = \w+", f"idempotent = {str(idempotent).lower()}", toml)
        toml = re.sub(r"(?m)^pure = \w+", f"pure = {str(pure).lower()}", toml)
        toml = re.sub(r"(?m)^timeout_ms = \d+", "timeout_ms = 20000", toml)
        with open(os.path.join(path, "orb.toml"), "w") as f:
            f.write(toml)
        code, out, err = yield self.orb("deploy", path, "--tracker", tracker.wire_text, "--api", api(tracker),
                                        "--json")
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        self.assertEqual(doc["replicas"], replicas)
        session, _ = yield open_session(*tracker.wire, self.network)
        self.addCleanup(session.transport.loseConnection)
        return tracker, started, fidmod.from_text(doc["fid"]), session

    def call(self, session, raw, a, b, sleep_s=0, deadline_ms=20000):
        data = json.dumps({"a": a, "b": b, "sleep": sleep_s}).encode()
        return session.request(m.Invoke(fid=raw, deadline_ms=deadline_ms, token=b"", input=data), timeout_s=60)

    def assertSum(self, result, total):
        self.assertEqual(result.status_kind, ResultStatus.OK, result.log[-500:])
        self.assertEqual(json.loads(result.output), {"sum": total})

    @defer.inlineCallbacks
    def test_a_replica_killed_mid_call_idempotent_calls_succeed_elsewhere(self):
        """SIGKILL a replica while idempotent calls run on both: every call still answers ok, from the survivor."""
        tracker, peers, raw, session = yield self.network_with(idempotent=True)
        calls = [self.call(session, raw, i, 100, sleep_s=3) for i in range(CALLS)]
        yield sleep(1.5)
        yield peers[0].stop(signal.SIGKILL)
        results = yield defer.gatherResults(calls)
        for i, result in enumerate(results):
            self.assertSum(result, i + 100)
        self.assertEqual(tracker.tracebacks, 0, tracker.text[-3000:])

    @defer.inlineCallbacks
    def test_a_replica_killed_mid_call_non_idempotent_calls_get_a_clear_error(self):
        """SIGKILL a replica mid-call: a non-idempotent call on it gets 'lost mid-call ... not idempotent'."""
        tracker, peers, raw, session = yield self.network_with(idempotent=False)
        calls = [self.call(session, raw, i, 100, sleep_s=3) for i in range(CALLS)]
        yield sleep(1.5)
        yield peers[0].stop(signal.SIGKILL)
        results = yield defer.gatherResults(calls)
        lost = [r for r in results if r.status_kind is not ResultStatus.OK]
        self.assertTrue(lost, "no call was running on the killed replica")
        self.assertLess(len(lost), CALLS, "no call was running on the surviving replica")
        for result in lost:
            self.assertEqual(result.status_kind, ResultStatus.INTERNAL, result.log)
            self.assertIn(b"lost mid-call", result.log)
            self.assertIn(b"not idempotent", result.log)
        for i, result in enumerate(results):
            if result.status_kind is ResultStatus.OK:
                self.assertSum(result, i + 100)
        self.assertEqual(tracker.tracebacks, 0, tracker.text[-3000:])

    @defer.inlineCallbacks
    def test_a_stalled_replica_is_hedged(self):
        """With one replica stopped (SIGSTOP), idempotent calls still answer ok at once: the hedge answers."""
        tracker, peers, raw, session = yield self.network_with(idempotent=True)
        for round_ in range(6):  # the tracker learns the function's p95
            answers = yield defer.gatherResults([self.call(session, raw, round_, k) for k in range(4)])
            for k, result in enumerate(answers):
                self.assertSum(result, round_ + k)
        os.kill(peers[0].transport.pid, signal.SIGSTOP)
        self.addCleanup(lambda: peers[0].running and os.kill(peers[0].transport.pid, signal.SIGCONT))
        started = time.monotonic()
        # Calls sent together spread over both replicas (see the module docstring): some go to the stopped one.
        calls = [self.call(session, raw, i, 1000, deadline_ms=15000) for i in range(CALLS)]
        results = yield defer.gatherResults(calls)
        elapsed = time.monotonic() - started
        os.kill(peers[0].transport.pid, signal.SIGCONT)
        for i, result in enumerate(results):
            self.assertSum(result, i + 1000)
        # Without a hedge, a call on the stopped replica waits out its 15 s deadline and answers timeout.
        self.assertLess(elapsed, 10, f"calls took {elapsed:.1f} s")
        self.assertIn("hedging a call", tracker.text)
        self.assertEqual(tracker.tracebacks, 0, tracker.text[-3000:])

    @defer.inlineCallbacks
    def test_a_slow_replica_gets_fewer_calls(self):
        """With one replica slowed (stopped 600 ms of every 650 ms), most gateway calls are answered by the other."""
        tracker, peers, raw, _ = yield self.network_with(idempotent=False)
        slow = peers[0]
        slowing = [True]

        @defer.inlineCallbacks
        def slow_down():
            while slowing[0] and slow.running:
                os.kill(slow.transport.pid, signal.SIGSTOP)
                yield sleep(0.6)
                os.kill(slow.transport.pid, signal.SIGCONT)
                yield sleep(0.05)

        def stop_slowing():
            slowing[0] = False
            if slow.running:
                os.kill(slow.transport.pid, signal.SIGCONT)

        self.addCleanup(stop_slowing)
        cycle = slow_down()
        url = f"{api(tracker)}/f/{fidmod.to_text(raw)}"
        served = []

        @defer.inlineCallbacks
        def caller(worker):
            for i in range(10):
                code, body, headers = yield post(url, json.dumps({"a": worker, "b": i}).encode())
                self.assertEqual((code, json.loads(body)), (200, {"sum": worker + i}), body)
                served.extend(headers.getRawHeaders(b"orb-replica"))

        yield defer.gatherResults([caller(w) for w in range(4)])
        stop_slowing()
        yield cycle
        on_slow = served.count(slow.node_id.encode())
        self.assertEqual(len(served), 40)
        self.assertLess(on_slow, 40 * 0.35, f"the slowed replica served {on_slow} of 40 calls")

    @defer.inlineCallbacks
    def test_cancelled_calls_do_not_use_up_the_callers_session(self):
        """A caller that withdraws 70 running calls (CANCEL, more than the 64 in-flight limit) can still call."""
        tracker, peers, raw, session = yield self.network_with(peers=1, replicas=1, idempotent=True)
        for i in range(70):
            d = self.call(session, raw, i, 0, sleep_s=5)
            d.addErrback(lambda f: f.trap(defer.CancelledError))
            d.cancel()
        result = yield self.call(session, raw, 1, 2)
        self.assertSum(result, 3)
        self.assertEqual(tracker.tracebacks, 0, tracker.text[-3000:])

    @defer.inlineCallbacks
    def test_a_pure_functions_second_call_is_cached(self):
        """The second identical call of a pure function is answered from the tracker's cache, with the cached TLV."""
        tracker, peers, raw, session = yield self.network_with(peers=1, replicas=1, idempotent=True, pure=True)
        first = yield self.call(session, raw, 20, 22)
        self.assertSum(first, 42)
        self.assertIsNone(cached_age_ms(first))
        yield sleep(0.2)
        second = yield self.call(session, raw, 20, 22)
        self.assertSum(second, 42)
        self.assertIsNotNone(cached_age_ms(second))
        self.assertGreaterEqual(cached_age_ms(second), 150)
        other = yield self.call(session, raw, 1, 2)
        self.assertSum(other, 3)
        self.assertIsNone(cached_age_ms(other))


class ColdReplicaLiveTests(DaemonTestMixin, TestCase):
    """A call that reaches a replica still downloading the package (RFC 10.2): the host waits for its
    download, the RESULT reports the fetch time, and the fetch does not count against the deadline.
    The peer's --fetch-rate holds the download open for seconds, so the call meets it mid-download."""

    timeout = 180

    @defer.inlineCallbacks
    def test_a_call_to_a_cold_replica_waits_for_the_download_and_reports_fetch_time(self):
        """A 2 s deadline call to a replica that needs 6 s to fetch the package answers ok, with fetch_us > 2 s."""
        tracker = yield self.start_tracker("t1", "--challenge-interval", "60")
        yield self.start_peer("p1", "--listen", "tcp:0:interface=127.1.0.1", "--tracker", tracker.wire_text,
                              "--fetch-rate", "8K")
        yield sleep(2)
        code, _, err = yield self.orb("keygen")
        self.assertEqual(code, 0, err)
        path = os.path.join(self.net.base_dir, "bulky")
        code, _, err = yield self.orb("init", path, "--template", "python", "--name", "bulky")
        self.assertEqual(code, 0, err)
        with open(os.path.join(path, "main.py"), "w") as f:
            f.write(HANDLER)
        with open(os.path.join(path, "weights.bin"), "wb") as f:
            f.write(os.urandom(48 * 1024))  # 12 paced chunks of 4 KiB at 8 KiB/s: about 6 s to fetch
        code, out, err = yield self.orb("deploy", path, "--tracker", tracker.wire_text, "--api", api(tracker),
                                        "--no-wait", "--json")
        self.assertEqual(code, 0, out + err)
        raw = fidmod.from_text(json.loads(out)["fid"])
        session, _ = yield open_session(*tracker.wire, self.network)
        self.addCleanup(session.transport.loseConnection)
        data = json.dumps({"a": 20, "b": 22}).encode()
        started = time.monotonic()
        for _ in range(50):  # until the tracker has offered it: before that there is no replica at all
            result = yield session.request(m.Invoke(fid=raw, deadline_ms=2000, token=b"", input=data), timeout_s=60)
            if result.status_kind is not ResultStatus.NOT_FOUND:
                break
            yield sleep(0.1)
        elapsed = time.monotonic() - started
        self.assertEqual(result.status_kind, ResultStatus.OK, result.log[-500:])
        self.assertEqual(json.loads(result.output), {"sum": 42})
        self.assertGreater(result.fetch_us, 2_000_000, "the call did not wait for a download")
        self.assertGreater(elapsed, 2.0)  # longer than the deadline: the fetch was not counted against it
        self.assertLess(result.exec_us, 2_000_000)
        self.assertEqual(tracker.tracebacks, 0, tracker.text[-3000:])
