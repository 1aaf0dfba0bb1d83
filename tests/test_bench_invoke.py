"""
bench/invoke.py as a smoke run: a real tracker and two peers, tiny
durations. It must measure every part (the CSV has ORB rows with answered
calls beside both baselines), draw its plot, and leave no process behind,
also when interrupted with Ctrl-C.
"""

import csv
import json
import os
import signal
import sys

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from orb.devnet import sleep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench", "invoke.py")
SMOKE = ["--quick", "--peers", "1", "--concurrency", "1,4", "--duration", "0.5", "--warmup", "0.1"]


class Run(protocol.ProcessProtocol):
    def __init__(self):
        self.output = bytearray()
        self.done = defer.Deferred()
        self.seen = {}  # text -> Deferred fired when the output first contains it

    def outReceived(self, data):
        self.output += data
        for text, d in list(self.seen.items()):
            if text.encode() in self.output and not d.called:
                d.callback(None)

    errReceived = outReceived

    def processEnded(self, reason):
        self.done.callback(reason.value.exitCode)

    def when(self, text):
        self.seen[text] = defer.Deferred()
        return self.seen[text]


def processes_under(path):
    """Pids of live processes whose command line names ``path``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if path.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


class BenchInvokeTests(TestCase):
    timeout = 120

    def start(self, *argv):
        run = Run()
        args = [sys.executable, BENCH, *argv]
        self.transport = reactor.spawnProcess(run, sys.executable, args, env=os.environ, path=ROOT)
        self.addCleanup(self.kill, run)
        return run

    def kill(self, run):
        if not run.done.called:
            self.transport.signalProcess("KILL")
            return run.done

    @defer.inlineCallbacks
    def test_quick_run_measures_everything_and_stops_its_processes(self):
        """A --quick run exits 0 with a CSV holding ORB, plain and fork rows, a PNG, and no process left over."""
        out, work = os.path.abspath("out"), os.path.abspath("work")
        run = self.start(*SMOKE, "--out", out, "--work-dir", work)
        code = yield run.done
        text = run.output.decode("utf-8", "replace")
        self.assertEqual(code, 0, text[-3000:])
        with open(os.path.join(out, "invoke.csv")) as f:
            rows = list(csv.DictReader(f))
        systems = {(r["measure"], r["system"]) for r in rows}
        for expected in [("peers", "orb"), ("peers", "plain"), ("peers", "fork"), ("throughput", "orb"),
                         ("throughput", "orb-cached"), ("throughput", "orb-1"), ("throughput", "plain"),
                         ("throughput", "fork"),
                         ("kill", "orb")]:
            self.assertIn(expected, systems)
        for r in rows:
            if r["system"].startswith("orb") and r["measure"] != "throughput":
                self.assertGreater(int(r["ok"]), 0, r)
        with open(os.path.join(out, "invoke.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        with open(os.path.join(out, "invoke.json")) as f:
            verdict = json.load(f)["targets"]
        self.assertEqual(set(verdict), {"throughput_vs_fork", "p50_added_ms", "p99_c8_ms", "p99_c8_one_ms",
                                        "cached_vs_plain", "kill_failed"})
        self.assertIn(("kill-control", "orb"), systems)
        self.assertIn("targets (issue 11)", text)
        self.assertEqual(processes_under(work), [])

    @defer.inlineCallbacks
    def test_ctrl_c_stops_every_process(self):
        """SIGINT while the devnet and both baselines run stops all of them before the bench exits."""
        work = os.path.abspath("work-int")
        run = self.start(*SMOKE, "--out", os.path.abspath("out-int"), "--work-dir", work)
        yield run.when("1. response time")
        self.assertGreater(len(processes_under(work)), 3)  # tracker, 2 peers, 2 baselines (and jail workers)
        self.transport.signalProcess(signal.SIGINT)
        yield run.done
        for _ in range(20):  # daemons' own children (zygotes) may take a moment after their parent
            if not processes_under(work):
                break
            yield sleep(0.1)
        self.assertEqual(processes_under(work), [])
