"""
`orb logs` on real daemons (RFC 10.7): a tracker and two peers host a
function that writes to stderr; the owner reads the stderr of its calls
from both replicas, in time order; another key is refused; `orb logs -f`
prints a call made after it started.
"""

import json
import os
import signal

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from tests._daemons import ORB, DaemonTestMixin, eventually, sleep
from tests.test_functions import api, post

HANDLER = '''\
import json
import sys


def handler(event, context):
    args = json.loads(event or b"{}")
    print("adding", args["a"], "and", args["b"], file=sys.stderr)
    return {"sum": args["a"] + args["b"]}
'''


class _Collect(protocol.ProcessProtocol):
    """A running `orb` whose stdout and stderr are kept, and whose end fires ``ended`` with its exit status."""

    def __init__(self):
        self.out = b""
        self.err = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.out += data

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode if reason.value.exitCode is not None else -reason.value.signal)


class LogsLiveTests(DaemonTestMixin, TestCase):
    timeout = 240

    def no_tracebacks(self, daemons):
        for d in daemons:
            self.assertEqual(d.tracebacks, 0, d.text[-3000:])

    @defer.inlineCallbacks
    def deploy_noisy_function(self, tracker):
        """`orb deploy` of a function that writes one stderr line per call, kept by 2 replicas: its fid."""
        path = os.path.join(self.net.base_dir, "noisy")
        for home in ("owner", "stranger"):
            code, _, err = yield self.orb("keygen", home=home)
            self.assertEqual(code, 0, err)
        code, _, err = yield self.orb("init", path, "--template", "python", "--name", "noisy")
        self.assertEqual(code, 0, err)
        with open(os.path.join(path, "main.py"), "w") as f:
            f.write(HANDLER)
        toml = os.path.join(path, "orb.toml")
        with open(toml) as f:
            text = f.read()
        with open(toml, "w") as f:
            f.write(text.replace("replicas = 3", "replicas = 2"))
        code, out, err = yield self.orb("deploy", path, "--tracker", tracker.wire_text, "--api", api(tracker),
                                        "--json")
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        self.assertEqual(doc["replicas"], 2)
        return doc["fid"]

    @defer.inlineCallbacks
    def call(self, tracker, fid, a, b):
        code, body, headers = yield post(f"{api(tracker)}/f/{fid}", json.dumps({"a": a, "b": b}).encode())
        self.assertEqual((code, json.loads(body)), (200, {"sum": a + b}), body)
        return headers.getRawHeaders(b"orb-replica", [b""])[0].decode()

    @defer.inlineCallbacks
    def test_the_owner_reads_the_stderr_of_calls_on_every_replica(self):
        """`orb logs FID` shows each call's stderr, from both replicas, in time order; another key is refused."""
        t1 = yield self.start_tracker("t1")
        daemons = [t1]
        for i in (1, 2):
            p = yield self.start_peer(f"p{i}", "--listen", f"tcp:0:interface=127.{i}.0.1", "--tracker",
                                      t1.wire_text)
            daemons.append(p)
        self.addCleanup(self.no_tracebacks, daemons)
        yield sleep(2)
        fid = yield self.deploy_noisy_function(t1)
        code, doc = yield t1.get_json(f"/api/v1/functions/{fid}")
        hosts = [h["node_id"] for h in doc["hosts"] if h["verified"] and h["live"] and not h["is_tracker"]]
        self.assertEqual(len(hosts), 2, doc)
        # Call each replica directly (INVOKE), so that both hold calls, alternating.
        from orb.devnet import open_session
        from orb.protocol import fid as fidmod
        from orb.protocol import messages as m

        to_tracker, _ = yield open_session(*t1.wire, self.network)
        peers = yield to_tracker.request(m.Lookup(fid=fidmod.from_text(fid), max_replicas=2), timeout_s=10)
        sessions = []
        for replica in peers.replicas:
            s, _ = yield open_session(replica.host, replica.port, self.network)
            sessions.append((replica.node_id.hex(), s))
        expected = []
        for i in range(4):
            node, s = sessions[i % 2]
            result = yield s.request(m.Invoke(fid=fidmod.from_text(fid), deadline_ms=5000, token=b"",
                                              input=json.dumps({"a": i, "b": 100}).encode()), timeout_s=15)
            self.assertEqual(json.loads(result.output), {"sum": i + 100}, result.log)
            expected.append((node, f"adding {i} and 100"))
        for _, s in sessions:
            s.transport.loseConnection()
        to_tracker.transport.loseConnection()
        code, out, err = yield self.orb("logs", fid, "--tracker", t1.wire_text, "--json")
        self.assertEqual(code, 0, out + err)
        entries = json.loads(out)["entries"]
        self.assertEqual([(e["replica"], e["log"].strip()) for e in entries], expected)
        self.assertEqual([e["time_us"] for e in entries], sorted(e["time_us"] for e in entries))
        self.assertEqual({e["status"] for e in entries}, {"ok"})
        code, out, err = yield self.orb("logs", fid, "--tracker", t1.wire_text)
        self.assertEqual(code, 0, err)
        self.assertIn("    adding 3 and 100", out)
        self.assertIn(expected[0][0][:12], out)
        code, out, err = yield self.orb("logs", fid, "--tracker", t1.wire_text, home="stranger")
        self.assertEqual(code, 7, out + err)
        self.assertIn("not the function's owner key", err)
        self.assertNotIn("adding", out + err)
        code, out, err = yield self.orb("logs", fidmod.to_text(fidmod.fid_for(b"never deployed")), "--tracker",
                                        t1.wire_text)
        self.assertEqual(code, 10, err)

    @defer.inlineCallbacks
    def test_follow_prints_a_call_made_after_it_started(self):
        """`orb logs -f` prints the stderr of a call made while it runs, and exits 130 on Ctrl-C."""
        t1 = yield self.start_tracker("t1")
        daemons = [t1]
        for i in (1, 2):
            p = yield self.start_peer(f"p{i}", "--listen", f"tcp:0:interface=127.{i}.0.1", "--tracker",
                                      t1.wire_text)
            daemons.append(p)
        self.addCleanup(self.no_tracebacks, daemons)
        yield sleep(2)
        fid = yield self.deploy_noisy_function(t1)
        yield self.call(t1, fid, 1, 1)
        follower = _Collect()
        process = reactor.spawnProcess(follower, ORB, [ORB, "logs", fid, "-f", "--tracker", t1.wire_text],
                                       env=self.orb_env())

        def stop():
            if not follower.ended.called:
                process.signalProcess(signal.SIGKILL)
                return follower.ended

        self.addCleanup(stop)
        yield eventually(lambda: b"adding 1 and 1" in follower.out, timeout_s=30, what="the earlier call printed")
        self.assertNotIn(b"adding 20 and 22", follower.out)
        yield self.call(t1, fid, 20, 22)
        yield eventually(lambda: b"adding 20 and 22" in follower.out, timeout_s=30, what="the new call printed")
        process.signalProcess(signal.SIGINT)
        status = yield follower.ended
        self.assertEqual(status, 130, follower.err)
        self.assertEqual(follower.out.count(b"adding 1 and 1"), 1)  # each call printed once
        self.assertEqual(follower.out.count(b"adding 20 and 22"), 1)
