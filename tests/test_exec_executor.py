"""
The executor's scheduling around the zygote: queue, BUSY, deadlines,
restarts, refusal.  A fake process reactor stands in for the zygote, in the
style of Twisted's runner/test/test_procmon.py DummyProcessReactor.
"""

import os

from twisted.internet import defer, error, reactor, task
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from orb.exec import ExecConfig, Executor, RuntimeSpec
from orb.exec._frames import FrameDecoder, encode
from orb.protocol.codes import ResultStatus

from .hostile._support import JailTestCase

SPEC = RuntimeSpec(runtime="python", entry="main.py")
LAYERS = {"seccomp": True, "landlock_fs": True}


class DummyProcessTransport:
    def __init__(self, proto, executable, args, env, child_fds):
        self.proto = proto
        self.executable = executable
        self.args = args
        self.env = env
        self.child_fds = child_fds
        self.pid = 4242
        self.written = bytearray()
        self.stdin_closed = False
        self.signals = []
        self.decoder = FrameDecoder(1 << 24)

    def write(self, data):
        self.written += data

    def closeStdin(self):
        self.stdin_closed = True

    def signalProcess(self, sig):
        self.signals.append(sig)

    def frames(self):
        data, self.written = bytes(self.written), bytearray()
        return self.decoder.feed(data)

    def say(self, ctl, payload=b""):
        self.proto.childDataReceived(1, encode(ctl, payload))

    def hello(self, missing=()):
        self.say({"op": "hello", "pid": self.pid, "layers": LAYERS, "missing": list(missing)})

    def done(self, call_id, status="OK", out=b"", log=b"", boot_ms=1.5, exec_ms=0.5, message=""):
        self.say({"op": "done", "id": call_id, "status": status, "message": message,
                  "boot_ms": boot_ms, "exec_ms": exec_ms, "out_len": len(out),
                  "log_len": len(log)}, out + log)

    def end(self, exc=None):
        self.proto.processEnded(Failure(exc or error.ProcessDone(0)))


class DummyProcessReactor(Clock):
    def __init__(self):
        super().__init__()
        self.spawned = []

    def spawnProcess(self, proto, executable, args=(), env=None, path=None, uid=None, gid=None,
                     usePTY=0, childFDs=None):
        t = DummyProcessTransport(proto, executable, args, env, childFDs)
        proto.makeConnection(t)
        self.spawned.append(t)
        return t


def runs(t):
    return [(ctl, data) for ctl, data in t.frames() if ctl.get("op") == "run"]


class ExecutorTests(SynchronousTestCase):
    def make(self, **kw):
        self.reactor = DummyProcessReactor()
        cfg = dict(max_concurrent=2, max_queue=2, default_timeout_s=5.0, grace_s=1.0,
                   restart_delay_s=1.0, heartbeat_s=0, boot_max_s=3.0)
        cfg.update(kw)
        self.executor = Executor(self.reactor, ExecConfig(**cfg))
        d = self.executor.start()
        self.zygote = self.reactor.spawned[-1]
        return d

    def started(self, **kw):
        d = self.make(**kw)
        self.zygote.hello()
        self.successResultOf(d)
        return self.zygote

    def test_spawns_zygote_with_empty_env_and_reports_hello(self):
        """start() spawns the zygote with an empty environment and fires with its hello."""
        d = self.make()
        t = self.zygote
        self.assertEqual(t.env, {})
        self.assertEqual(t.child_fds, {0: "w", 1: "r", 2: "r"})
        self.assertIn("-I", t.args)
        self.assertNoResult(d)
        t.hello()
        self.assertEqual(self.successResultOf(d)["layers"], LAYERS)
        self.assertEqual(self.executor.layers, LAYERS)

    def test_invoke_sends_run_and_maps_done_to_result(self):
        """A call goes out as a run frame and its done frame becomes the ExecResult."""
        t = self.started()
        d = self.executor.invoke("fid1", "/pkg", SPEC, b"input", deadline_s=3.0, request_id="r1")
        [(ctl, data)] = runs(t)
        self.assertEqual(data, b"input")
        self.assertEqual((ctl["fid"], ctl["request_id"], ctl["runtime"], ctl["entry"]),
                         ("fid1", "r1", "python", "main.py"))
        self.assertEqual(ctl["timeout_s"], 3.0)
        self.assertEqual(ctl["package_dir"], "/pkg")
        self.assertNoResult(d)
        t.done(ctl["id"], out=b"result", log=b"a log line\n")
        r = self.successResultOf(d)
        self.assertEqual((r.status, r.output, r.log), (ResultStatus.OK, b"result", b"a log line\n"))
        self.assertEqual((r.boot_ms, r.exec_ms, r.queue_ms, r.request_id), (1.5, 0.5, 0.0, "r1"))

    def test_manifest_limits_are_clamped(self):
        """A manifest's memory and timeout are clamped to the operator's ceilings."""
        t = self.started(max_memory_mb=512, max_timeout_s=30)
        self.executor.invoke("f", "/pkg", {"runtime": "python", "memory_mb": 100000}, b"",
                             deadline_s=1e6)
        [(ctl, _)] = runs(t)
        self.assertEqual((ctl["memory_mb"], ctl["timeout_s"]), (512, 30.0))

    def test_manifest_mapping_accepted(self):
        """invoke accepts a manifest mapping as well as a RuntimeSpec."""
        t = self.started()
        self.executor.invoke("f", "/pkg", {"runtime": "python", "entry": "h.py",
                                           "reuse": "per-function"}, b"")
        [(ctl, _)] = runs(t)
        self.assertEqual((ctl["entry"], ctl["reuse"]), ("h.py", "per-function"))

    def test_bad_manifest_is_an_error_result(self):
        """A bad manifest gives an ERROR result, not an exception."""
        self.started()
        r = self.successResultOf(self.executor.invoke("f", "/pkg", {"entry": "x"}, b""))
        self.assertEqual(r.status, ResultStatus.ERROR)
        self.assertIn("runtime", r.message)

    def test_concurrency_limit_then_queue_then_busy(self):
        """Calls beyond the concurrency limit queue, and beyond the queue get BUSY."""
        t = self.started()
        ds = [self.executor.invoke("f", "/pkg", SPEC, b"%d" % i) for i in range(5)]
        sent = runs(t)
        self.assertEqual([d for _, d in sent], [b"0", b"1"])  # max_concurrent=2
        self.assertEqual((self.executor.running, self.executor.queued), (2, 2))
        busy = self.successResultOf(ds[4])
        self.assertEqual(busy.status, ResultStatus.BUSY)
        self.assertIn("busy", busy.message)
        for d in ds[:4]:
            self.assertNoResult(d)

    def test_queued_call_runs_when_a_slot_frees_with_queue_time(self):
        """A queued call runs when a slot frees, and reports its queue time."""
        t = self.started()
        ds = [self.executor.invoke("f", "/pkg", SPEC, b"%d" % i) for i in range(3)]
        first, _second = runs(t)
        self.reactor.advance(0.25)
        t.done(first[0]["id"])
        [(ctl, data)] = runs(t)
        self.assertEqual(data, b"2")
        self.assertAlmostEqual(ctl["timeout_s"], 4.75)  # the queue time came off the deadline
        t.done(ctl["id"])
        r = self.successResultOf(ds[2])
        self.assertEqual(r.queue_ms, 250.0)
        self.assertEqual(self.successResultOf(ds[0]).queue_ms, 0.0)

    def test_fifo_order(self):
        """Queued calls run in arrival order."""
        t = self.started(max_concurrent=1, max_queue=3)
        for i in range(4):
            self.executor.invoke("f", "/pkg", SPEC, b"%d" % i)
        order = []
        for _ in range(4):
            [(ctl, data)] = runs(t)
            order.append(data)
            t.done(ctl["id"])
        self.assertEqual(order, [b"0", b"1", b"2", b"3"])

    def test_deadline_passes_while_queued(self):
        """A call whose deadline passes in the queue ends TIMEOUT without running."""
        t = self.started(max_concurrent=1)
        self.executor.invoke("f", "/pkg", SPEC, b"a", deadline_s=10)
        d = self.executor.invoke("f", "/pkg", SPEC, b"b", deadline_s=1)
        runs(t)
        self.reactor.advance(2.0)  # deadline 1 s + grace 1 s
        r = self.successResultOf(d)
        self.assertEqual(r.status, ResultStatus.TIMEOUT)
        self.assertIn("queued", r.message)
        self.assertEqual(self.executor.queued, 0)

    def test_hung_zygote_is_replaced_and_its_calls_end_internal(self):
        """A zygote that stops answering heartbeats is killed and replaced; its calls end INTERNAL."""
        t = self.started(heartbeat_s=5.0)
        self.reactor.advance(5.0)
        pings = [ctl for ctl, _ in t.frames() if ctl.get("op") == "ping"]
        self.assertEqual(len(pings), 1)
        t.say({"op": "pong", "n": pings[0]["n"]})  # healthy: the next ping follows
        self.reactor.advance(5.0)
        pings = [ctl for ctl, _ in t.frames() if ctl.get("op") == "ping"]
        self.assertEqual(len(pings), 1)
        d = self.executor.invoke("f", "/pkg", SPEC, b"", deadline_s=60)
        with capturedLogs():
            self.reactor.advance(5.0)  # no pong: hung
        self.assertEqual(t.signals, ["KILL"])
        t.end(error.ProcessTerminated(signal=9))
        r = self.successResultOf(d)
        self.assertEqual(r.status, ResultStatus.INTERNAL)
        self.assertIn("did not answer a heartbeat", r.message)
        self.reactor.advance(1.0)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.flushLoggedErrors()

    def test_invoke_never_raises(self):
        """invoke() turns even an internal failure into an INTERNAL result."""
        self.started()
        self.executor._dispatch = None  # any bug on the way
        r = self.successResultOf(self.executor.invoke("f", "/pkg", SPEC, b""))
        self.assertEqual(r.status, ResultStatus.INTERNAL)
        self.flushLoggedErrors()

    def test_watchdog_kills_silent_zygote_and_restarts_it(self):
        """A zygote that does not answer within deadline, boot allowance and grace is killed and replaced."""
        t = self.started()
        d = self.executor.invoke("f", "/pkg", SPEC, b"", deadline_s=1)
        [(ctl, _)] = runs(t)
        self.assertEqual(ctl["boot_max_s"], 3.0)  # the zygote's clock for the call starts once its jail is up
        self.reactor.advance(4.9)
        self.assertNoResult(d)
        with capturedLogs() as logs:
            self.reactor.advance(0.1)
        r = self.successResultOf(d)
        self.assertEqual(r.status, ResultStatus.TIMEOUT)
        self.assertEqual(t.signals, ["KILL"])
        self.assertTrue(any(e["log_level"] == LogLevel.error for e in logs))
        t.end(error.ProcessTerminated(signal=9))
        self.reactor.advance(1.0)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_zygote_death_fails_running_calls_and_requeues_after_restart(self):
        """When the zygote dies, running calls end INTERNAL and queued ones run on its replacement."""
        t = self.started(max_concurrent=1)
        d1 = self.executor.invoke("f", "/pkg", SPEC, b"1")
        d2 = self.executor.invoke("f", "/pkg", SPEC, b"2")
        runs(t)
        t.end(error.ProcessTerminated(exitCode=1))
        r1 = self.successResultOf(d1)
        self.assertEqual(r1.status, ResultStatus.INTERNAL)
        self.assertIn("zygote", r1.message)
        self.assertNoResult(d2)
        self.reactor.advance(1.0)
        t2 = self.reactor.spawned[-1]
        self.assertIsNot(t2, t)
        t2.hello()
        [(ctl, data)] = runs(t2)
        self.assertEqual(data, b"2")
        t2.done(ctl["id"], out=b"ok")
        self.assertEqual(self.successResultOf(d2).output, b"ok")
        self.flushLoggedErrors()

    def test_dead_zygotes_scratch_root_is_removed(self):
        """A dead zygote's scratch root is removed."""
        import os

        d = self.make()
        root = os.path.join(os.path.abspath(self.mktemp()), "orb-zygote-4242-abcd")
        os.makedirs(os.path.join(root, "call-1"))
        self.zygote.say({"op": "hello", "pid": 4242, "layers": LAYERS, "missing": [],
                         "scratch_root": root})
        self.successResultOf(d)
        self.zygote.end(error.ProcessTerminated(signal=9))
        self.assertFalse(os.path.exists(root))
        self.flushLoggedErrors()

    def test_gives_up_after_max_restarts(self):
        """After max_restarts failed restarts the executor fails calls instead of looping."""
        self.started(max_restarts=1)
        self.zygote.end(error.ProcessTerminated(exitCode=1))
        self.reactor.advance(1.0)
        self.reactor.spawned[-1].end(error.ProcessTerminated(exitCode=1))
        r = self.successResultOf(self.executor.invoke("f", "/pkg", SPEC, b""))
        self.assertEqual(r.status, ResultStatus.INTERNAL)
        self.assertIn("failed", r.message)

    def test_missing_layer_refuses_untrusted_code(self):
        """A missing jail layer makes every call REFUSED, naming the layer."""
        d = self.make()
        queued = self.executor.invoke("f", "/pkg", SPEC, b"")
        with capturedLogs() as logs:
            self.zygote.hello(missing=["landlock_scope"])
        self.successResultOf(d)
        r = self.successResultOf(queued)
        self.assertEqual(r.status, ResultStatus.REFUSED)
        self.assertIn("landlock_scope", r.message)
        self.assertEqual(runs(self.zygote), [])
        self.assertTrue(any(e["log_level"] == LogLevel.error and "landlock_scope" in e["missing"]
                            for e in logs))
        r2 = self.successResultOf(self.executor.invoke("f", "/pkg", SPEC, b""))
        self.assertEqual(r2.status, ResultStatus.REFUSED)

    def test_opt_out_runs_but_logs_loudly(self):
        """The unconfined opt-out runs calls and logs a critical warning."""
        d = self.make(allow_unconfined=True)
        self.assertIn("--allow-unconfined", self.zygote.args)
        with capturedLogs() as logs:
            self.zygote.hello(missing=["seccomp"])
            self.successResultOf(d)
            self.executor.invoke("f", "/pkg", SPEC, b"")
        self.assertEqual(len(runs(self.zygote)), 1)
        levels = [e["log_level"] for e in logs]
        self.assertIn(LogLevel.critical, levels)
        self.assertIn(LogLevel.warn, levels)

    def test_input_over_cap_is_refused_without_running(self):
        """Input over the cap is an ERROR before anything runs."""
        t = self.started(input_max_bytes=4)
        r = self.successResultOf(self.executor.invoke("f", "/pkg", SPEC, b"12345"))
        self.assertEqual(r.status, ResultStatus.ERROR)
        self.assertIn("cap", r.message)
        self.assertEqual(runs(t), [])

    def test_malformed_done_is_internal(self):
        """A malformed done frame ends the call INTERNAL."""
        t = self.started()
        d = self.executor.invoke("f", "/pkg", SPEC, b"")
        [(ctl, _)] = runs(t)
        t.say({"op": "done", "id": ctl["id"], "status": "OK", "out_len": 5, "log_len": 0}, b"ab")
        self.assertEqual(self.successResultOf(d).status, ResultStatus.INTERNAL)
        self.flushLoggedErrors()

    def test_garbage_from_zygote_kills_it(self):
        """Garbage from the zygote gets it killed."""
        t = self.started()
        t.proto.childDataReceived(1, b"\xff\xff\xff\xff\x00\x00\x00\x00")
        self.assertEqual(t.signals, ["KILL"])

    def test_late_done_after_watchdog_is_ignored(self):
        """A done frame after the watchdog fired is ignored."""
        t = self.started()
        d = self.executor.invoke("f", "/pkg", SPEC, b"", deadline_s=1)
        [(ctl, _)] = runs(t)
        self.reactor.advance(5.0)
        self.assertEqual(self.successResultOf(d).status, ResultStatus.TIMEOUT)
        t.done(ctl["id"])  # no exception, no double callback

    def test_stop_fails_queue_and_kills_after_grace(self):
        """stop() fails queued calls and kills a zygote that does not exit within grace."""
        t = self.started(max_concurrent=1)
        running = self.executor.invoke("f", "/pkg", SPEC, b"")
        queued = self.executor.invoke("f", "/pkg", SPEC, b"")
        runs(t)
        stopped = self.executor.stop()
        self.assertEqual(self.successResultOf(queued).status, ResultStatus.INTERNAL)
        self.assertEqual([c["op"] for c, _ in t.frames()], ["stop"])
        self.assertTrue(t.stdin_closed)
        self.assertNoResult(stopped)
        self.reactor.advance(1.0)
        self.assertEqual(t.signals, ["KILL"])
        t.end(error.ProcessTerminated(signal=9))
        self.successResultOf(stopped)
        self.assertEqual(self.successResultOf(running).status, ResultStatus.INTERNAL)
        after = self.successResultOf(self.executor.invoke("f", "/pkg", SPEC, b""))
        self.assertEqual(after.status, ResultStatus.INTERNAL)
        self.assertEqual(len(self.reactor.spawned), 1)  # no restart after stop

    def test_calls_before_hello_wait_for_it(self):
        """Calls made before the zygote's hello wait for it."""
        d = self.make()
        call = self.executor.invoke("f", "/pkg", SPEC, b"early")
        self.assertEqual(runs(self.zygote), [])
        self.zygote.hello()
        self.successResultOf(d)
        [(ctl, data)] = runs(self.zygote)
        self.assertEqual(data, b"early")
        self.zygote.done(ctl["id"], status="TIMEOUT", message="wall-clock deadline")
        r = self.successResultOf(call)
        self.assertEqual((r.status, r.message), (ResultStatus.TIMEOUT, "wall-clock deadline"))


    def test_cancelled_queued_call_leaves_the_queue_at_once(self):
        """Cancelling a queued call removes it at once: it never runs and frees its queue place."""
        t = self.started(max_concurrent=1, max_queue=1)
        self.executor.invoke("f", "/pkg", SPEC, b"a")
        queued = self.executor.invoke("f", "/pkg", SPEC, b"b")
        runs(t)
        queued.cancel()
        self.failureResultOf(queued, defer.CancelledError)
        self.assertEqual((self.executor.running, self.executor.queued), (1, 0))
        third = self.executor.invoke("f", "/pkg", SPEC, b"c")  # the freed place takes it, not BUSY
        self.assertNoResult(third)
        self.assertEqual(t.frames(), [])  # nothing told to the zygote

    def test_cancelled_running_call_is_killed_and_holds_its_slot_until_done(self):
        """Cancelling a running call asks the zygote to kill it; its slot frees only on the zygote's done."""
        t = self.started(max_concurrent=1, max_queue=2)
        running = self.executor.invoke("f", "/pkg", SPEC, b"a")
        nxt = self.executor.invoke("f", "/pkg", SPEC, b"b")
        [(ctl, _)] = runs(t)
        running.cancel()
        self.failureResultOf(running, defer.CancelledError)
        self.assertEqual([c for c, _ in t.frames()], [{"op": "cancel", "id": ctl["id"]}])
        self.assertEqual((self.executor.running, self.executor.queued), (1, 1))  # not reaped yet
        running.cancel()  # a second cancel sends nothing more
        self.assertEqual(t.frames(), [])
        t.done(ctl["id"], status="INTERNAL", message="cancelled by the caller")
        [(ctl2, data)] = runs(t)
        self.assertEqual(data, b"b")
        t.done(ctl2["id"], out=b"ok")
        self.assertEqual(self.successResultOf(nxt).output, b"ok")

    def test_zygote_silent_after_cancel_is_replaced(self):
        """A zygote that does not report a cancelled call's end within grace is killed and replaced."""
        t = self.started(max_concurrent=1)
        running = self.executor.invoke("f", "/pkg", SPEC, b"a", deadline_s=60)
        runs(t)
        self.reactor.advance(0.5)
        running.cancel()
        self.failureResultOf(running, defer.CancelledError)
        self.reactor.advance(1.0)  # grace_s, not the call's 60 s deadline
        self.assertEqual(t.signals, ["KILL"])
        self.assertEqual(self.executor.running, 0)
        self.flushLoggedErrors()

    def test_capacity_counts_running_and_queue(self):
        """capacity is max_concurrent + max_queue: running + queued at it means the next call is BUSY."""
        t = self.started(max_concurrent=1, max_queue=1)
        self.assertEqual(self.executor.capacity, 2)
        self.executor.invoke("f", "/pkg", SPEC, b"a")
        self.executor.invoke("f", "/pkg", SPEC, b"b")
        runs(t)
        self.assertEqual(self.executor.running + self.executor.queued, self.executor.capacity)
        busy = self.successResultOf(self.executor.invoke("f", "/pkg", SPEC, b"c"))
        self.assertEqual(busy.status, ResultStatus.BUSY)


class RuntimeSpecTests(SynchronousTestCase):
    def test_from_manifest_defaults(self):
        """A manifest with only a runtime gets the default entry and per-call reuse."""
        s = RuntimeSpec.from_manifest({"runtime": "python"})
        self.assertEqual((s.entry, s.reuse), ("main.py", "per-call"))
        self.assertEqual(RuntimeSpec.from_manifest({"runtime": "exec"}).entry, "main")

    def test_rejects_bad_values(self):
        """RuntimeSpec refuses bad runtimes, reuse policies and entries outside the package."""
        for bad in ({"runtime": "java"}, {"runtime": "python", "entry": "/abs.py"},
                    {"runtime": "python", "entry": "../up.py"},
                    {"runtime": "python", "reuse": "forever"},
                    {"runtime": "exec", "reuse": "per-function"}, {}):
            with self.assertRaises(ValueError, msg=repr(bad)):
                RuntimeSpec.from_manifest(bad)


SLEEPER = """
import time
calls = 0
def handler(event, context):
    global calls
    calls += 1
    if event == b"sleep":
        time.sleep(30)
    return str(calls)
"""


class RealJailCancelTests(JailTestCase):
    """Cancelling a call in a real jail: its processes go, its slot frees."""

    config = {"max_concurrent": 1, "max_queue": 2}

    @defer.inlineCallbacks
    def running_child(self):
        """The pid of the one jailed process running a call, once it runs."""
        for _ in range(250):
            jailed = self.zygote_children()
            # A child takes its name ("orb-call") when its order arrives; a
            # spare forked a moment ago has not named itself yet.
            if len(jailed) == 1 and self.name_of(jailed[0]) == "orb-call":
                return jailed
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.fail("the call never started")

    @staticmethod
    def name_of(pid):
        try:
            with open(f"/proc/{pid}/comm") as f:
                return f.read().strip()
        except OSError:
            return None

    def groups_of(self, pid):
        """The cgroup dirs of a process that sit under the zygote's own cgroups."""
        with open(f"/proc/{pid}/cgroup") as f:
            lines = [line.rstrip("\n").split(":", 2) for line in f]
        dirs = []
        for parent in self.hello.get("cgroup_dirs", []):
            for _hid, names, path in lines:
                for mount in (names.split(",") if names else [""]):
                    leaf = os.path.join("/sys/fs/cgroup", mount, path.lstrip("/")) if mount else \
                        os.path.join("/sys/fs/cgroup", path.lstrip("/"))
                    if leaf.startswith(parent + "/"):
                        dirs.append(leaf)
        return sorted(set(dirs))

    @defer.inlineCallbacks
    def cancel_then_call(self, reuse):
        pkg = self.make_package({"main.py": SLEEPER})
        sleeping = self.call(pkg, data=b"sleep", timeout=30, reuse=reuse)
        [pid] = yield self.running_child()
        groups = self.groups_of(pid)
        yield task.deferLater(reactor, 0.2, lambda: None)
        sleeping.cancel()
        self.failureResultOf(sleeping, defer.CancelledError)
        after = yield self.call(pkg, data=b"now", timeout=5, reuse=reuse)
        # The next call may take another free slot while the kill is still on its way: allow it 2 s.
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}"):
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertFalse(os.path.exists(f"/proc/{pid}"), "the cancelled call's process outlived it")
        self.assertEqual((after.status, after.output), (ResultStatus.OK, b"1"), after)
        for _ in range(100):
            if not any(os.path.exists(d) for d in groups):
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertEqual([d for d in groups if os.path.exists(d)], [])

    def test_cancel_kills_a_per_call_child_and_frees_its_slot(self):
        """A cancelled per-call call's jailed process is gone and the next call takes the only slot."""
        return self.cancel_then_call("per-call")

    def test_cancel_kills_the_warm_worker(self):
        """A cancelled warm call kills its worker: the next call gets a fresh one, with fresh module state."""
        return self.cancel_then_call("per-function")

    @defer.inlineCallbacks
    def test_cancel_of_a_queued_call_never_runs_it(self):
        """A cancelled queued call never runs, and calls behind it move up."""
        pkg = self.make_package({"main.py": "import time\ndef handler(e, c):\n    time.sleep(0.5)\n    return e\n"})
        first = self.call(pkg, data=b"1")
        queued = self.call(pkg, data=b"2")
        third = self.call(pkg, data=b"3")
        queued.cancel()
        self.failureResultOf(queued, defer.CancelledError)
        r3 = yield third
        r1 = yield first
        self.assertEqual((r1.output, r3.output), (b"1", b"3"))
