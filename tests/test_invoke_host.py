"""
INVOKE and CANCEL at a host (orb.peer.invoke, RFC 10.2, 10.5): deadlines,
refusals, cancellation by CANCEL and by a lost session, a cold replica
waiting for its download, honest timings, the finished-call hook and the
load a peer announces.  A fake executor stands in for the jail; the jail's
own cancellation is tested with real children in tests.test_exec_executor.
"""

import json
import os

import attrs
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from orb.exec import ExecResult
from orb.net.serving import PackageServer
from orb.peer import invoke as inv
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, ResultStatus, TlvType
from tests._daemons import DaemonTestMixin, eventually, sleep
from tests._memnet import PORT, MemoryNet
from tests._packages import function, open_store


@attrs.frozen
class _Config:
    input_max_bytes: int = 1024


class FakeExecutor:
    """The jail's Executor as Invocations sees it: calls are held until the test ends them."""

    def __init__(self, clock, max_concurrent=2, max_queue=2, input_max_bytes=1024, start_s=0.0):
        self.clock = clock
        self.config = _Config(input_max_bytes)
        self.max_concurrent, self.max_queue = max_concurrent, max_queue
        self.start_s = start_s
        self.calls = []  # dicts: fid, spec, input, deadline_s, d, cancelled
        self.started = self.stopped = False

    @property
    def running(self):
        return min(self.max_concurrent, len(self.live()))

    @property
    def queued(self):
        return max(0, len(self.live()) - self.max_concurrent)

    @property
    def capacity(self):
        return self.max_concurrent + self.max_queue

    def live(self):
        return [c for c in self.calls if not c["d"].called]

    def start(self):
        self.started = True
        if not self.start_s:
            return defer.succeed({})
        d = defer.Deferred()
        self.clock.callLater(self.start_s, d.callback, {})
        return d

    def stop(self):
        self.stopped = True
        return defer.succeed(None)

    def invoke(self, fid, package_dir, spec, input_bytes, deadline_s=None, request_id=""):
        call = {"fid": fid, "dir": package_dir, "spec": spec, "input": input_bytes, "deadline_s": deadline_s,
                "cancelled": False}
        call["d"] = defer.Deferred(lambda _d: call.update(cancelled=True))
        self.calls.append(call)
        return call["d"]

    def finish(self, call, status=ResultStatus.OK, output=b"out", queue_ms=1.5, boot_ms=2.0, exec_ms=3.0):
        call["d"].callback(ExecResult(status=status, output=output, log=b"a log", queue_ms=queue_ms,
                                      boot_ms=boot_ms, exec_ms=exec_ms))


class FakeRecord:
    """A caller's session record: what the host sent on it."""

    def __init__(self, name="caller"):
        self.name = name
        self.sent = []  # (message, response_to)

    def send(self, message, response_to=0):
        self.sent.append((message, response_to))

    def refuse(self, request_id, code, text):
        self.send(m.Error(code=int(code), ref_request_id=request_id, text=text[:200]), response_to=request_id)


class InvocationsTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.store, data_dir = open_store(self)
        self.data, self.manifest_bytes = function()
        self.fid = fidmod.fid_for(self.data)
        self.successResultOf(self.store.put(self.data))
        self.executor = FakeExecutor(self.clock)
        self.downloading = {}  # fid -> Deferred[bool]
        self.inv = inv.Invocations(self.clock, self.store, os.path.join(data_dir, "run"), lambda: self.executor,
                                   downloads=self.downloading.get, max_in_flight=4)
        self.ended = []
        self.inv.finished_listeners.append(lambda *args: self.ended.append(args))
        self.caller = FakeRecord()

    def invoke(self, request_id=7, record=None, fid=None, deadline_ms=5000, data=b"in", ext=()):
        record = record or self.caller
        self.inv.handlers()[m.MessageType.INVOKE](
            record, m.Invoke(fid=fid or self.fid, deadline_ms=deadline_ms, token=b"", input=data, ext=ext), request_id)
        return record

    def cancel(self, request_id, record=None):
        self.inv.handlers()[m.MessageType.CANCEL](record or self.caller, m.Cancel(request_id=request_id), 0)

    def answer(self, record=None):
        [(message, response_to)] = (record or self.caller).sent
        return message, response_to

    def test_call_runs_and_result_carries_the_executors_timings(self):
        """A held function runs in the jail; RESULT carries its output and queue, fetch, boot and exec times."""
        self.invoke(deadline_ms=4000, data=b"hello")
        [call] = self.executor.calls
        self.assertEqual((call["input"], call["deadline_s"]), (b"hello", 4.0))
        self.assertEqual(call["fid"], fidmod.to_text(self.fid))
        self.assertEqual(self.caller.sent, [])
        self.executor.finish(call)
        result, response_to = self.answer()
        self.assertEqual(response_to, 7)
        self.assertEqual((result.status, result.output, result.log), (ResultStatus.OK, b"out", b"a log"))
        self.assertEqual((result.queue_us, result.fetch_us, result.boot_us, result.exec_us), (1500, 0, 2000, 3000))
        self.assertEqual(len(self.inv), 0)

    def test_deadline_zero_is_the_manifests_timeout(self):
        """deadline_ms 0 gives the call the manifest's timeout_ms; a longer deadline is cut to it."""
        self.invoke(request_id=1, deadline_ms=0)
        self.invoke(request_id=2, deadline_ms=inv.MAX_DEADLINE_MS)
        self.assertEqual([c["deadline_s"] for c in self.executor.calls], [10.0, 10.0])  # timeout_ms 10000

    def test_deadline_over_the_maximum_is_out_of_range(self):
        """A deadline_ms over MAX_DEADLINE_MS is refused with ERROR(out_of_range) and nothing runs."""
        self.invoke(deadline_ms=inv.MAX_DEADLINE_MS + 1)
        error, response_to = self.answer()
        self.assertIsInstance(error, m.Error)
        self.assertEqual((error.code, error.ref_request_id, response_to), (ErrorCode.OUT_OF_RANGE, 7, 7))
        self.assertIn("300000", error.text)
        self.assertEqual((self.executor.calls, self.ended), ([], []))

    def test_input_over_the_cap_is_too_large(self):
        """An input over the executor's input cap is refused with ERROR(too_large) naming the cap; nothing runs."""
        self.invoke(data=b"x" * 1025)
        error, _ = self.answer()
        self.assertEqual(error.code, ErrorCode.TOO_LARGE)
        self.assertIn("1024-byte cap", error.text)
        self.assertEqual(self.executor.calls, [])

    def test_unknown_fid_is_not_found(self):
        """A fid neither held nor downloading is RESULT not_found, and no finished-call listener hears of it."""
        self.invoke(fid=fidmod.fid_for(b"other"))
        result, _ = self.answer()
        self.assertEqual(result.status, ResultStatus.NOT_FOUND)
        self.assertEqual(self.ended, [])

    def test_cancel_withdraws_the_call_and_sends_no_result(self):
        """CANCEL of a running call cancels it in the executor, and no RESULT is ever sent for it."""
        self.invoke(request_id=9)
        [call] = self.executor.calls
        self.cancel(9)
        self.assertTrue(call["cancelled"])
        self.assertEqual(self.caller.sent, [])
        self.assertEqual(len(self.inv), 0)
        self.assertEqual(self.ended, [])

    def test_cancel_naming_nothing_or_another_sessions_call_is_ignored(self):
        """A CANCEL naming no call of its own session's changes nothing: the call still answers."""
        self.invoke(request_id=9)
        other = FakeRecord("other")
        self.cancel(9, record=other)
        self.cancel(12345)
        [call] = self.executor.calls
        self.assertFalse(call["cancelled"])
        self.executor.finish(call)
        self.assertEqual(self.answer()[0].status, ResultStatus.OK)
        self.assertEqual(other.sent, [])

    def test_lost_session_cancels_all_its_calls_only(self):
        """A caller whose session is lost has all its calls cancelled; another caller's call goes on."""
        self.invoke(request_id=1)
        self.invoke(request_id=2)
        other = self.invoke(request_id=1, record=FakeRecord("other"))
        mine1, mine2, theirs = self.executor.calls
        with capturedLogs():
            self.inv.session_lost(self.caller)
        self.assertEqual([c["cancelled"] for c in (mine1, mine2, theirs)], [True, True, False])
        self.assertEqual(len(self.inv), 1)
        self.executor.finish(theirs)
        self.assertEqual(self.answer(other)[0].status, ResultStatus.OK)
        self.assertEqual(self.caller.sent, [])

    def test_same_request_id_twice_in_flight_is_refused(self):
        """A second INVOKE with the request_id of one still in flight is refused; the first is unharmed."""
        self.invoke(request_id=3)
        self.invoke(request_id=3)
        [(error, _)] = self.caller.sent
        self.assertEqual(error.code, ErrorCode.UNEXPECTED)
        self.assertEqual(len(self.executor.calls), 1)

    def test_calls_in_flight_are_bounded(self):
        """Past max_in_flight calls held, an INVOKE is RESULT busy at once."""
        for rid in range(1, 6):
            self.invoke(request_id=rid)
        self.assertEqual(len(self.executor.calls), 4)
        [(result, response_to)] = self.caller.sent
        self.assertEqual((result.status, response_to), (ResultStatus.BUSY, 5))

    def test_cold_replica_waits_for_its_download_and_reports_fetch_time(self):
        """A fid still downloading is waited for; fetch time is reported and not taken from the deadline."""
        data, _ = function(seed=2, payload_bytes=100)
        fid = fidmod.fid_for(data)
        self.downloading[fid] = defer.Deferred()
        self.invoke(fid=fid, deadline_ms=3000)
        self.clock.advance(2.5)
        self.assertEqual(self.executor.calls, [])
        self.successResultOf(self.store.put(data))
        self.downloading.pop(fid).callback(True)
        [call] = self.executor.calls
        self.assertEqual(call["deadline_s"], 3.0)  # the 2.5 s of fetching did not count
        self.executor.finish(call)
        result, _ = self.answer()
        self.assertEqual((result.status, result.fetch_us), (ResultStatus.OK, 2_500_000))

    def test_failed_download_is_not_found(self):
        """A call waiting for a download that fails is RESULT not_found."""
        fid = fidmod.fid_for(b"never")
        self.downloading[fid] = defer.Deferred()
        self.invoke(fid=fid)
        self.downloading[fid].callback(False)
        self.assertEqual(self.answer()[0].status, ResultStatus.NOT_FOUND)

    def test_download_wait_is_bounded(self):
        """A download that outlasts FETCH_WAIT_MAX_S ends the waiting call not_found."""
        fid = fidmod.fid_for(b"slow")
        self.downloading[fid] = defer.Deferred()
        self.invoke(fid=fid)
        self.clock.advance(inv.FETCH_WAIT_MAX_S - 1)
        self.assertEqual(self.caller.sent, [])
        self.clock.advance(1)
        self.assertEqual(self.answer()[0].status, ResultStatus.NOT_FOUND)
        self.assertEqual(len(self.inv), 0)

    def test_cancel_while_waiting_for_the_download(self):
        """A call cancelled while its package downloads never runs and gets no RESULT."""
        fid = fidmod.fid_for(b"cold")
        waiting = self.downloading[fid] = defer.Deferred()
        self.invoke(fid=fid, request_id=4)
        self.cancel(4)
        self.assertTrue(waiting.called)  # the wait itself was cancelled
        self.assertEqual((self.caller.sent, self.executor.calls, len(self.inv)), ([], [], 0))

    def test_zygote_start_is_boot_time_not_deadline(self):
        """The first call waits for the jail to start: that counts as boot, not against its deadline."""
        self.executor.start_s = 0.4
        self.invoke(deadline_ms=1000)
        self.assertEqual(self.executor.calls, [])
        self.clock.advance(0.4)
        [call] = self.executor.calls
        self.assertEqual(call["deadline_s"], 1.0)
        self.executor.finish(call, boot_ms=2.0)
        self.assertEqual(self.answer()[0].boot_us, 402_000)

    def test_finished_listeners_hear_every_call_that_ran(self):
        """Listeners get (fid, RESULT, trace_id, end time) of a call that ran, even a failed one; one that raises changes nothing."""
        def broken(*args):
            raise RuntimeError("listener bug")

        self.inv.finished_listeners.insert(0, broken)
        trace = b"T" * 16
        self.invoke(request_id=1, ext=(m.Tlv(int(TlvType.TRACE_ID), trace),))
        self.invoke(request_id=2)
        first, second = self.executor.calls
        self.clock.advance(0.5)
        self.executor.finish(first)
        self.executor.finish(second, status=ResultStatus.TIMEOUT, output=b"")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual([r.status for r, _ in self.caller.sent], [ResultStatus.OK, ResultStatus.TIMEOUT])
        (fid1, r1, t1, end1), (_, r2, t2, _) = self.ended
        self.assertEqual((fid1, r1.status, t1, end1), (self.fid, ResultStatus.OK, trace, 1000.5))
        self.assertEqual((r2.status, t2), (ResultStatus.TIMEOUT, b""))

    def test_busy_executor_is_no_finished_call(self):
        """An executor's BUSY is relayed as RESULT busy and is not reported as a call that ran."""
        self.invoke()
        self.executor.finish(self.executor.calls[0], status=ResultStatus.BUSY, output=b"")
        self.assertEqual(self.answer()[0].status, ResultStatus.BUSY)
        self.assertEqual(self.ended, [])

    def test_load_is_running_and_queued_against_capacity(self):
        """load_permille is the executor's running + queued calls per mille of its capacity."""
        self.assertEqual(self.inv.load_permille(), 0)
        for rid in (1, 2, 3):
            self.invoke(request_id=rid)
        self.assertEqual(self.inv.load_permille(), 750)  # 3 of 2 running + 2 queued
        self.executor.finish(self.executor.calls[0])
        self.assertEqual(self.inv.load_permille(), 500)


class WiredPeerTests(SynchronousTestCase):
    """A peer wired as in a daemon (orb.peer.wiring), on an in-memory network; the test plays the tracker."""

    def setUp(self):
        self.net = MemoryNet()
        self.tracker = self.net.tracker("10.1.0.1")
        self.tracker_store, _ = open_store(self)
        self.tracker.table.handlers.update(PackageServer(self.tracker_store).handlers())
        store, _ = open_store(self)
        self.peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], packages=store,
                                  outbound_peers=0, outbound_trackers=1)
        self.executor = FakeExecutor(self.net.clock)
        self.peer.invocations.executor_factory = lambda: self.executor
        self.net.run(2)
        self.record = self.tracker.table.get(self.peer.node_id)

    def test_cold_replica_fetches_before_it_runs(self):
        """An INVOKE that arrives while the accepted OFFER's package downloads runs once it is fetched."""
        data, manifest_bytes = function(payload_bytes=50_000, seed=3)
        self.successResultOf(self.tracker_store.put(data))
        fid = fidmod.fid_for(data)
        self.record.request(m.Offer(fid=fid, package_size=len(data), manifest=manifest_bytes,
                                    sources=(m.Source(self.tracker.node_id, "10.1.0.1", PORT),)))
        d = self.record.request(m.Invoke(fid=fid, deadline_ms=2000, token=b"", input=b"x"))
        self.net.run(1)
        [call] = self.executor.calls
        self.assertIn(fid, self.peer.packages)
        self.executor.finish(call)
        self.net.run(1)
        result = self.successResultOf(d)
        self.assertEqual((result.status, result.output), (ResultStatus.OK, b"out"))

    def test_lost_session_cancels_its_calls(self):
        """When the caller's session is lost mid-call, the host withdraws the call from the jail."""
        data, _ = function(seed=4)
        self.successResultOf(self.peer.packages.put(data))
        asked = self.record.request(m.Invoke(fid=fidmod.fid_for(data), deadline_ms=2000, token=b"", input=b"x"))
        self.net.run(1)
        [call] = self.executor.calls
        self.record.close("caller going away")
        self.net.run(1)
        self.failureResultOf(asked)  # the caller's own end: the session is gone
        self.assertTrue(call["cancelled"])
        self.assertEqual(len(self.peer.invocations), 0)

    def test_announce_carries_the_jails_load(self):
        """The periodic ANNOUNCE's load_permille is the jail's running + queued calls against its capacity."""
        data, _ = function(seed=5)
        self.successResultOf(self.peer.packages.put(data))
        for _ in range(2):
            self.record.request(m.Invoke(fid=fidmod.fid_for(data), deadline_ms=60_000, token=b"", input=b"x"))
        self.net.run(1)
        self.peer.announce()
        self.net.run(1)
        self.assertEqual(self.tracker.registry.peer(self.peer.node_id).load_permille, 500)


SLOW_ADDER = '''\
import json
import time


def handler(event, context):
    if event == b"sleep":
        time.sleep(50)
    args = json.loads(event or b"{}")
    return {"sum": args["a"] + args["b"]}
'''


class CallerDisconnectTests(DaemonTestMixin, TestCase):
    """Real daemons: a tracker, peers hosting a function in their jails, and a raw wire caller."""

    timeout = 180


    @defer.inlineCallbacks
    def deploy_slow_adder(self, tracker):
        path = os.path.join(self.net.base_dir, "slow")
        for argv in (("keygen",), ("init", path, "--template", "python", "--name", "slow")):
            code, _, err = yield self.orb(*argv)
            self.assertEqual(code, 0, err)
        with open(os.path.join(path, "main.py"), "w") as f:
            f.write(SLOW_ADDER)
        toml = os.path.join(path, "orb.toml")
        with open(toml) as f:
            text = f.read()
        with open(toml, "w") as f:
            f.write(text.replace("timeout_ms = 5000", "timeout_ms = 60000", 1))
        code, out, err = yield self.orb("deploy", path, "--tracker", tracker.wire_text, "--api",
                                        f"http://127.0.0.1:{tracker.info['http']}", "--json")
        self.assertEqual(code, 0, out + err)
        return fidmod.from_text(json.loads(out)["fid"])

    def jailed_calls(self, daemon):
        """Pids of jailed call processes ("orb-call") descended from a daemon."""
        parents, names = {}, {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
            except OSError:
                continue
            parents[int(entry)] = int(fields.get("PPid", "0").strip() or 0)
            names[int(entry)] = fields.get("Name", "").strip()
        root = daemon.transport.pid
        found = []
        for pid, name in names.items():
            if name != "orb-call":
                continue
            up = parents.get(pid)
            while up and up != root:
                up = parents.get(up)
            if up == root:
                found.append(pid)
        return found

    @defer.inlineCallbacks
    def test_caller_disconnect_kills_the_jail_child_and_frees_the_slot(self):
        """A caller that disconnects mid-call: the host kills its jail children, and the freed slots serve the next call."""
        from orb.devnet import open_session

        t1 = yield self.start_tracker("t1")
        hosts = []
        for i in range(1, 4):
            p = yield self.start_peer(f"p{i}", "--listen", f"tcp:0:interface=127.{i}.0.1", "--tracker", t1.wire_text)
            hosts.append(p)
        yield sleep(2)
        raw = yield self.deploy_slow_adder(t1)
        to_tracker, _ = yield open_session(*t1.wire, self.network)
        peers = yield to_tracker.request(m.Lookup(fid=raw, max_replicas=3), timeout_s=10)
        best = peers.replicas[0]
        host = next(h for h in hosts if h.node_id == best.node_id.hex())
        caller, _ = yield open_session(best.host, best.port, self.network)
        # Fill every slot of the host's jail (max_concurrent = this machine's cores) with a 50 s call.
        slots = max(1, len(os.sched_getaffinity(0)))
        sleepers = [caller.request(m.Invoke(fid=raw, deadline_ms=60_000, token=b"", input=b"sleep"), timeout_s=90)
                    for _ in range(slots)]
        for d in sleepers:
            d.addErrback(lambda f: None)  # the caller's own end when it hangs up
        yield eventually(lambda: len(self.jailed_calls(host)) == slots, timeout_s=20, what="the calls running")
        yield sleep(1)  # a child primed for the next call is "orb-call" for an instant, then "orb-ready"
        running = self.jailed_calls(host)
        self.assertEqual(len(running), slots)
        caller.transport.abortConnection()  # the caller hangs up (a crash: no goodbye)
        yield eventually(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in running), timeout_s=10,
                         what="the jail children killed")
        again, _ = yield open_session(best.host, best.port, self.network)
        result = yield again.request(m.Invoke(fid=raw, deadline_ms=5000, token=b"", input=b'{"a": 2, "b": 3}'),
                                     timeout_s=10)
        self.assertEqual((result.status_kind, json.loads(result.output)), (ResultStatus.OK, {"sum": 5}), result.log)
        self.assertLess(result.queue_us, 5_000_000)
        again.disconnect()
        to_tracker.disconnect()
        self.assertEqual(host.tracebacks, 0, host.text[-3000:])
