"""
The network verbs of the ``orb`` command as a user runs them: ``orb deploy``
against an in-process fake tracker that speaks the real wire over loopback
TLS (it answers DEPLOY by FETCHing the package from the deployer's session
and checking it against the fid, and LOOKUP with PEERS), and ``orb ls`` /
``orb info`` against the tracker's real REST resource tree on a loopback
twisted.web Site. Every verb runs through ``orb.cli.main.main`` in a thread,
so exit statuses, messages and --json documents are the user's; the flow
itself runs in the test's reactor.
"""

import io
import json
import os
import subprocess
import sys
from unittest import mock

from twisted.internet import defer, endpoints, reactor, task, threads
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.server import Site
from twisted.web.static import Data

from orb.cli import _config, _keys, _network, _project, _ui
from orb.cli.main import main
from orb.identity import NodeKey
from orb.net.adapter import OrbFactory, RemoteError, SessionHandler
from orb.net.tls import NodeTLS
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import package as pkg
from orb.protocol.codes import ErrorCode, Role
from orb.protocol.deploy import verify_deploy
from orb.protocol.session import LocalIdentity, SessionConfig
from orb.tracker.http import build_resource
from orb.tracker.registry import Registry
from orb.tracker.stats import Stats
from tests import _records as records

from .hostile._support import missing_layers_reason

NETWORK = "clitest"
ORB_SCRIPT = os.path.join(os.path.dirname(sys.executable), "orb")


class FakeTracker(SessionHandler):
    """
    A tracker's DEPLOY and LOOKUP over the real wire. ``refuse`` = (code,
    text) refuses every DEPLOY after the fetch; ``replicas`` lists what
    successive LOOKUPs report (the last repeats); ``probe`` first sends the
    deployer a FETCH of another fid and one out of range.
    """

    def __init__(self, key, chunk_bytes=700, refuse=None, replicas=(0,), tracker_hosts=False, probe=False,
                 refuse_by_ack=False):
        self.key = key
        self.refuse_by_ack = refuse_by_ack
        self.chunk_bytes = chunk_bytes
        self.refuse = refuse
        self.replicas = list(replicas)
        self.tracker_hosts = tracker_hosts
        self.probe = probe
        self.deployed = {}  # raw fid -> package bytes
        self.deploys = []
        self.lookups = 0
        self.probe_answers = []
        self.sessions = {}  # protocol -> Deferred fired when it is lost

    def session_ready(self, p):
        self.sessions[p] = defer.Deferred()

    def session_lost(self, p, reason):
        d = self.sessions.setdefault(p, defer.Deferred())
        if not d.called:
            d.callback(None)

    def message_received(self, p, message, request_id):
        if isinstance(message, m.Deploy):
            self.on_deploy(p, message, request_id).addErrback(lambda f: self.error(p, request_id, ErrorCode.INTERNAL,
                                                                                   f.getErrorMessage()))
        elif isinstance(message, m.Lookup):
            self.on_lookup(p, message, request_id)

    def error(self, p, request_id, code, text):
        p.send(m.Error(code=int(code), ref_request_id=request_id, text=text), response_to=request_id)

    @defer.inlineCallbacks
    def on_deploy(self, p, message, request_id):
        self.deploys.append(message)
        if not verify_deploy(message.owner_key, message.signature, message.fid, message.manifest,
                             message.package_size, message.issued_at):
            return self.error(p, request_id, ErrorCode.DENIED, "signature: not the owner's")
        if self.probe:
            for probe in (m.Fetch(fid=fidmod.fid_for(b"another"), offset=0, length=10),
                          m.Fetch(fid=message.fid, offset=message.package_size, length=10),
                          m.Fetch(fid=message.fid, offset=0, length=0)):
                try:
                    yield p.request(probe)
                    self.probe_answers.append("PACKAGE")
                except RemoteError as e:
                    self.probe_answers.append(ErrorCode(e.code))
        data = b""
        while len(data) < message.package_size:
            chunk = yield p.request(m.Fetch(fid=message.fid, offset=len(data), length=self.chunk_bytes))
            if chunk.total_size != message.package_size or not chunk.data:
                return self.error(p, request_id, ErrorCode.INVALID, "PACKAGE total_size is not the DEPLOY's")
            data += chunk.data
        if pkg.fid_of_package(data) != message.fid:
            return self.error(p, request_id, ErrorCode.INVALID, "the package's bytes do not hash to the fid")
        if self.refuse is not None:
            if self.refuse_by_ack:  # RFC 5.13 also lets a DEPLOY_ACK carry an error code
                code, text = self.refuse
                return p.send(m.DeployAck(fid=message.fid, status=int(code), replicas=0, text=text),
                              response_to=request_id)
            return self.error(p, request_id, *self.refuse)
        self.deployed[message.fid] = data
        p.send(m.DeployAck(fid=message.fid, status=0, replicas=0, text="deployed"), response_to=request_id)

    def on_lookup(self, p, message, request_id):
        if message.fid not in self.deployed:
            return self.error(p, request_id, ErrorCode.NOT_FOUND, "no such function")
        count = self.replicas[min(self.lookups, len(self.replicas) - 1)]
        self.lookups += 1
        replicas = [m.Replica(records.key(f"cli-replica-{i}").node_id, f"127.{i + 1}.0.1", 7401, int(Role.PEER),
                              1, 3 + i, 0) for i in range(count)]
        if self.tracker_hosts:
            replicas.append(m.Replica(self.key.node_id, "127.0.0.1", 7400, int(Role.TRACKER | Role.RELAY), 1, 0, 0))
        p.send(m.Peers(fid=message.fid, replicas=tuple(replicas[:message.max_replicas])), response_to=request_id)


def run_flow_in_test_reactor(flow, box):
    """orb's run_flow, for a verb that main() runs in a thread while the test's reactor serves."""
    return threads.blockingCallFromThread(reactor, flow, reactor)


class NetworkCliCase(TestCase):
    timeout = 60

    def setUp(self):
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)
        patcher = mock.patch.dict(os.environ, {"ORB_HOME": self.home, "ORB_NETWORK": NETWORK})
        patcher.start()
        self.addCleanup(patcher.stop)
        for name in ("ORB_TRACKER", "ORB_API"):
            os.environ.pop(name, None)
        self.patch(_network, "run_flow", run_flow_in_test_reactor)

    @defer.inlineCallbacks
    def orb(self, *argv):
        """main(argv) in a thread, stdout and stderr captured: (exit status, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()

        def call():
            with mock.patch("sys.stdout", out), mock.patch("sys.stderr", err):
                return main(list(argv))

        code = yield threads.deferToThread(call)
        return code, out.getvalue(), err.getvalue()

    @defer.inlineCallbacks
    def orb_json(self, *argv):
        code, out, err = yield self.orb(*argv, "--json")
        return code, json.loads(out), err


class DeployTests(NetworkCliCase):
    def setUp(self):
        super().setUp()
        self.owner = _keys.create_owner_key(os.path.join(self.home, "owner.key"))
        self.function = os.path.join(os.path.abspath(self.mktemp()), "adder")
        self.assertEqual(self.orb_sync("init", self.function, "--name", "adder")[0], 0)
        self.samples_run = []
        self.patch(_network, "jail_samples", self.fake_samples)
        self.sample_rows = None

    def fake_samples(self, reactor, plan, box):
        """The local jail's sample rows (the real jail is tested by the executor's tests and one subprocess test)."""
        self.samples_run.append(plan.built.fid)
        rows = self.sample_rows or [{"index": 0, "name": "two plus three", "passed": True, "output": '{"sum":5}'}]
        return defer.succeed(rows)

    @defer.inlineCallbacks
    def start_tracker(self, **kw):
        key = NodeKey.generate()
        tracker = FakeTracker(key, **kw)
        factory = OrbFactory(LocalIdentity(key.public_bytes, int(Role.TRACKER | Role.RELAY)), tracker, reactor,
                             initiator=False, config=SessionConfig(network=NETWORK))
        port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            NodeTLS(key).wrap(factory, is_client=False))
        self.addCleanup(self.stop_tracker, port, tracker)
        tracker.address = f"127.0.0.1:{port.getHost().port}"
        tracker.pinned = f"{key.node_id.hex()}@{tracker.address}"
        return tracker

    @defer.inlineCallbacks
    def stop_tracker(self, port, tracker):
        yield port.stopListening()
        for p, lost in list(tracker.sessions.items()):
            if not lost.called:
                p.transport.abortConnection()
            yield lost

    def fid(self):
        code, out, _ = self.orb_sync("hash", self.function)
        return out.strip()

    def orb_sync(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with mock.patch("sys.stdout", out), mock.patch("sys.stderr", err):
            code = main(list(argv))
        return code, out.getvalue(), err.getvalue()

    @defer.inlineCallbacks
    def test_deploy_waits_for_the_replicas(self):
        """orb deploy uploads over FETCH, waits until LOOKUP shows the manifest's 3 replicas, and prints fid, DNS name, gateway and count."""
        tracker = yield self.start_tracker(replicas=(0, 1, 3))
        code, out, err = yield self.orb("deploy", self.function, "--tracker", tracker.pinned,
                                        "--api", "http://127.0.0.1:7480/")
        self.assertEqual(code, 0, err)
        fid = self.fid()
        self.assertEqual(list(tracker.deployed), [fidmod.from_text(fid)])
        self.assertEqual(tracker.deployed[fidmod.from_text(fid)], _network._project.build(self.function).data)
        self.assertEqual(tracker.lookups, 3)
        self.assertEqual(self.samples_run, [fidmod.from_text(fid)])
        self.assertIn(f"fid       {fid}", out)
        self.assertIn(f"dns name  {fid}.orb", out)
        self.assertIn(f"gateway   http://127.0.0.1:7480/f/{fid}", out)
        self.assertIn("replicas  3 of 3 verified", out)

    @defer.inlineCallbacks
    def test_deploy_json(self):
        """orb deploy --json prints one document with the fid, DNS name, gateway URL and the verified replicas."""
        tracker = yield self.start_tracker(replicas=(3,), tracker_hosts=True)
        code, doc, err = yield self.orb_json("deploy", self.function, "--tracker", tracker.address)
        self.assertEqual(code, 0, err)
        fid = self.fid()
        self.assertEqual((doc["ok"], doc["fid"], doc["dns_name"]), (True, fid, f"{fid}.orb"))
        self.assertIsNone(doc["gateway_url"])  # no --api, ORB_API or api in config.toml
        self.assertEqual((doc["replicas"], doc["wanted_replicas"], doc["tracker_hosts"]), (3, 3, True))
        self.assertEqual([h["address"]["ip"] for h in doc["hosts"]], ["127.1.0.1", "127.2.0.1", "127.3.0.1"])
        self.assertEqual(doc["served_bytes"], doc["package_bytes"])
        self.assertEqual(doc["network"], NETWORK)

    @defer.inlineCallbacks
    def test_no_wait(self):
        """orb deploy --no-wait returns once the tracker accepts, without a LOOKUP."""
        tracker = yield self.start_tracker(replicas=(0,))
        code, doc, err = yield self.orb_json("deploy", self.function, "--tracker", tracker.address, "--no-wait")
        self.assertEqual(code, 0, err)
        self.assertEqual((doc["waited"], doc["replicas"], tracker.lookups), (False, 0, 0))
        code, out, err = yield self.orb("deploy", self.function, "--tracker", tracker.address, "--no-wait")
        self.assertEqual(code, 0, err)
        self.assertIn("0 of 3 so far", out)

    @defer.inlineCallbacks
    def test_wait_timeout(self):
        """When the replicas are not all up by --timeout, orb deploy exits 9 saying how many are."""
        tracker = yield self.start_tracker(replicas=(1,), tracker_hosts=True)
        code, out, err = yield self.orb("deploy", self.function, "--tracker", tracker.address, "--timeout", "0.6",
                                        "--json")
        self.assertEqual(code, 9, err)
        self.assertIn("only 1 of 3 replicas are verified after 0.6 s", err)
        self.assertIn("the tracker hosts it itself meanwhile", err)
        doc = json.loads(out)
        self.assertEqual((doc["ok"], doc["fid"], doc["replicas"]), (False, self.fid(), 1))
        self.assertEqual(doc["error"]["kind"], "replicas")

    @defer.inlineCallbacks
    def test_tracker_refusals(self):
        """Each refusal of the tracker gives its own message and documented exit status, with the tracker's reason."""
        cases = [
            (ErrorCode.TOO_LARGE, "package of 9999 bytes exceeds this tracker's cap", 7, "too_large",
             "the package is too large for this tracker"),
            (ErrorCode.DENIED, "signature: not the owner key's", 7, "denied", "refused the owner's signature"),
            (ErrorCode.INVALID, "the function fails its own samples here: sample #1", 7, "invalid",
             "the tracker refused the function"),
            (ErrorCode.BUSY, "busy with other deploys", 8, "busy", "the tracker is busy"),
            (ErrorCode.INTERNAL, "this tracker cannot test-run functions", 8, "internal", "failed on its side"),
        ]
        for code_sent, text, status, kind, said in cases:
            tracker = yield self.start_tracker(refuse=(code_sent, text))
            code, out, err = yield self.orb("deploy", self.function, "--tracker", tracker.address, "--json")
            self.assertEqual(code, status, (code_sent, err))
            self.assertIn(said, err)
            self.assertIn(text, err)
            doc = json.loads(out)
            self.assertEqual((doc["error"]["kind"], doc["error"]["exit_code"], doc["fid"]), (kind, status, self.fid()))
            self.assertEqual(tracker.lookups, 0)

    @defer.inlineCallbacks
    def test_refusal_in_deploy_ack(self):
        """A DEPLOY_ACK whose status is an error code is a refusal like an ERROR: busy exits 8."""
        tracker = yield self.start_tracker(refuse=(ErrorCode.BUSY, "full up"), refuse_by_ack=True)
        code, _, err = yield self.orb("deploy", self.function, "--tracker", tracker.address)
        self.assertEqual(code, 8, err)
        self.assertIn("the tracker is busy; try again shortly, or another tracker: full up [busy]", err)

    @defer.inlineCallbacks
    def test_refusal_text_is_sanitised(self):
        """A tracker's refusal text cannot put control characters on the user's terminal."""
        tracker = yield self.start_tracker(refuse=(ErrorCode.INVALID, "bad\x1b[2Jthing\x07"))
        code, _, err = yield self.orb("deploy", self.function, "--tracker", tracker.address)
        self.assertEqual(code, 7)
        self.assertNotIn("\x1b", err)
        self.assertNotIn("\x07", err)
        self.assertIn("bad\\u001b[2Jthing", err)

    @defer.inlineCallbacks
    def test_fetch_refusals(self):
        """While deploying, a FETCH for another fid is ERROR not_found and one out of range ERROR invalid."""
        tracker = yield self.start_tracker(probe=True, replicas=(3,))
        code, _, err = yield self.orb("deploy", self.function, "--tracker", tracker.address)
        self.assertEqual(code, 0, err)
        self.assertEqual(tracker.probe_answers, [ErrorCode.NOT_FOUND, _network.FETCH_OUT_OF_RANGE,
                                                 _network.FETCH_OUT_OF_RANGE])

    @defer.inlineCallbacks
    def test_failing_local_sample_stops_the_deploy(self):
        """A sample that fails locally exits 1 naming it, and nothing reaches the tracker."""
        tracker = yield self.start_tracker()
        self.sample_rows = [{"index": 0, "name": "two plus three", "passed": False,
                             "why": "output {\"sum\":6} is not the JSON {\"sum\":5}"}]
        code, out, err = yield self.orb("deploy", self.function, "--tracker", tracker.address)
        self.assertEqual(code, 1)
        self.assertIn("1 of 1 samples failed locally, so nothing was deployed: two plus three", err)
        self.assertEqual((tracker.deploys, tracker.sessions), ([], {}))

    @defer.inlineCallbacks
    def test_pinned_node_id_mismatch(self):
        """A --tracker pinned to another node id is refused in the handshake: exit 6, and no DEPLOY is sent."""
        tracker = yield self.start_tracker()
        wrong = f"{NodeKey.generate().node_id.hex()}@{tracker.address}"
        code, _, err = yield self.orb("deploy", self.function, "--tracker", wrong)
        self.assertEqual(code, 6, err)
        self.assertIn("closed the session during the handshake", err)
        self.assertIn("the node id pinned by --tracker does not match", err)
        self.assertEqual(tracker.deploys, [])

    @defer.inlineCallbacks
    def test_wrong_network(self):
        """A tracker of another network drops the handshake: exit 6, and the message points at --network."""
        tracker = yield self.start_tracker()
        code, _, err = yield self.orb("deploy", self.function, "--tracker", tracker.address, "--network", "other")
        self.assertEqual(code, 6, err)
        self.assertIn("is it a tracker of network 'other'", err)

    @defer.inlineCallbacks
    def test_unreachable_tracker(self):
        """A tracker address where nothing listens: exit 6 naming the address and where it came from."""
        port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory())
        address = f"127.0.0.1:{port.getHost().port}"
        yield port.stopListening()
        os.environ["ORB_TRACKER"] = address
        self.addCleanup(os.environ.pop, "ORB_TRACKER", None)
        code, _, err = yield self.orb("deploy", self.function)
        self.assertEqual(code, 6, err)
        self.assertIn(f"cannot reach the tracker at {address} (from ORB_TRACKER)", err)

    @defer.inlineCallbacks
    def test_bad_tracker_setting(self):
        """A malformed --tracker, or none at all, is exit 3 with the fix, before anything runs."""
        code, _, err = yield self.orb("deploy", self.function, "--tracker", "no-port-here")
        self.assertEqual(code, 3)
        self.assertIn("--tracker: 'no-port-here' is not HOST:PORT", err)
        code, _, err = yield self.orb("deploy", self.function)
        self.assertEqual(code, 3)
        self.assertIn("no tracker given: pass --tracker HOST:PORT", err)
        self.assertEqual(self.samples_run, [])

    @defer.inlineCallbacks
    def test_no_owner_key(self):
        """Without an owner key orb deploy exits 3 and says to run orb keygen."""
        tracker = yield self.start_tracker()
        os.remove(os.path.join(self.home, "owner.key"))
        code, doc, err = yield self.orb_json("deploy", self.function, "--tracker", tracker.address)
        self.assertEqual(code, 3)
        self.assertIn("run `orb keygen`", err)
        self.assertEqual(doc["error"]["kind"], "key")
        self.assertEqual(tracker.deploys, [])

    @defer.inlineCallbacks
    def test_network_and_api_from_config(self):
        """network and api in config.toml are used when neither flag nor environment gives them."""
        tracker = yield self.start_tracker(replicas=(3,))
        os.environ.pop("ORB_NETWORK")
        with open(os.path.join(self.home, "config.toml"), "w") as f:
            f.write(f'network = "{NETWORK}"\napi = "http://gw.example:7480"\ntracker = "{tracker.address}"\n')
        code, doc, err = yield self.orb_json("deploy", self.function)
        self.assertEqual(code, 0, err)
        self.assertEqual(doc["gateway_url"], f"http://gw.example:7480/f/{self.fid()}")
        self.assertEqual(doc["network"], NETWORK)

    @defer.inlineCallbacks
    def test_real_jail_subprocess(self):
        """The installed orb deploy runs the samples in the real local jail, then deploys to the tracker."""
        reason = missing_layers_reason()
        if reason:
            raise SkipTest(reason)
        tracker = yield self.start_tracker(replicas=(3,))
        cmd = [ORB_SCRIPT] if os.path.exists(ORB_SCRIPT) else [
            sys.executable, "-c", "import sys; from orb.cli.main import main; sys.exit(main())"]
        env = {**os.environ, "ORB_HOME": self.home, "ORB_NETWORK": NETWORK}
        p = yield threads.deferToThread(subprocess.run, [*cmd, "deploy", self.function, "--tracker", tracker.address,
                                                         "--json"], capture_output=True, timeout=120, env=env)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        doc = json.loads(p.stdout)
        self.assertEqual((doc["samples_passed"], doc["replicas"]), (1, 3))
        self.assertIn(fidmod.from_text(doc["fid"]), tracker.deployed)

    @defer.inlineCallbacks
    def test_ctrl_c_while_waiting(self):
        """Ctrl-C while orb deploy waits for replicas exits 130 saying so, and closes its session."""
        import signal

        reason = missing_layers_reason()
        if reason:
            raise SkipTest(reason)
        tracker = yield self.start_tracker(replicas=(0,))
        cmd = [ORB_SCRIPT] if os.path.exists(ORB_SCRIPT) else [
            sys.executable, "-c", "import sys; from orb.cli.main import main; sys.exit(main())"]
        env = {**os.environ, "ORB_HOME": self.home, "ORB_NETWORK": NETWORK}
        p = subprocess.Popen([*cmd, "deploy", self.function, "--tracker", tracker.address, "--timeout", "60"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        for _ in range(200):
            if tracker.lookups:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(tracker.lookups, "orb deploy never reached the wait")
        p.send_signal(signal.SIGINT)
        out, err = yield threads.deferToThread(p.communicate, timeout=30)
        self.assertEqual(p.returncode, 130, err)
        self.assertIn(b"orb deploy: error: interrupted", err)
        for lost in tracker.sessions.values():
            yield lost


class ApiVerbTests(NetworkCliCase):
    """orb ls and orb info against the tracker's real REST resource tree on a loopback port."""

    def setUp(self):
        super().setUp()
        self.owner = _keys.create_owner_key(os.path.join(self.home, "owner.key"))
        self.tracker_key = records.key("cli-api-tracker")
        self.registry = Registry(reactor, self.tracker_key)
        self.registry.publish_self([("127.0.0.1", 7400)])
        now = int(reactor.seconds())
        self.fid = fidmod.to_text(fidmod.fid_for(b"cli-api-function"))
        self.other_fid = fidmod.to_text(fidmod.fid_for(b"cli-api-other"))
        self.registry.upsert_function(records.function_record(self.owner, self.fid, time=now, name="adder",
                                                              version="1.2.0", package_size=3072))
        self.registry.upsert_function(records.function_record(records.key("cli-someone"), self.other_fid, time=now,
                                                              name="theirs"))
        self.peer_keys = [records.key(f"cli-api-peer-{i}") for i in range(2)]
        for i, k in enumerate(self.peer_keys):
            records.home_peer(self.registry, k, [(f"127.{i + 2}.0.1", 7401)], "reachable", rtt_ms=5 + i,
                              functions={self.fid: 1})
        self.registry.publish_placement(self.fid, [(self.peer_keys[0].node_id, now), (self.peer_keys[1].node_id, 0)])
        self.port = reactor.listenTCP(0, Site(build_resource(self.registry, Stats(reactor))), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.api = f"http://127.0.0.1:{self.port.getHost().port}"

    @defer.inlineCallbacks
    def test_ls_lists_my_functions(self):
        """orb ls lists the local owner's functions only, with name, version and verified replicas."""
        code, doc, err = yield self.orb_json("ls", "--api", self.api)
        self.assertEqual(code, 0, err)
        self.assertEqual(doc["owner"], self.owner.public_bytes.hex())
        (f,) = doc["functions"]
        self.assertEqual((f["fid"], f["name"], f["version"], f["verified_replicas"], f["replicas"]),
                         (self.fid, "adder", "1.2.0", 1, 3))
        code, out, err = yield self.orb("ls", "--api", self.api)
        self.assertEqual(code, 0, err)
        self.assertIn("adder", out)
        self.assertIn(self.fid, out)
        self.assertIn("1/3", out)
        self.assertNotIn("theirs", out)

    @defer.inlineCallbacks
    def test_ls_other_owner_and_api_from_environment(self):
        """orb ls --owner HEX lists another owner's functions; the API may come from ORB_API."""
        os.environ["ORB_API"] = self.api
        self.addCleanup(os.environ.pop, "ORB_API", None)
        code, doc, err = yield self.orb_json("ls", "--owner", records.key("cli-someone").public_bytes.hex())
        self.assertEqual(code, 0, err)
        self.assertEqual([f["name"] for f in doc["functions"]], ["theirs"])
        code, _, err = yield self.orb("ls", "--owner", "alice")
        self.assertEqual(code, 2)
        self.assertIn("--owner 'alice' is not an owner's public key", err)

    @defer.inlineCallbacks
    def test_info_shows_replicas_and_checks(self):
        """orb info shows the manifest, owner, size and each replica's node, address, /16 group, RTT and last check."""
        code, doc, err = yield self.orb_json("info", self.fid, "--api", self.api)
        self.assertEqual(code, 0, err)
        self.assertEqual((doc["fid"], doc["manifest"]["name"], doc["package_size"]), (self.fid, "adder", 3072))
        self.assertEqual(doc["owner"], self.owner.public_bytes.hex())
        first, second = doc["hosts"]
        self.assertEqual((first["network_group"], first["rtt_ms"], first["verified"]), ("127.2.0.0/16", 5, True))
        self.assertEqual((second["network_group"], second["verified_at"]), ("127.3.0.0/16", None))
        code, out, err = yield self.orb("info", self.fid, "--api", self.api)
        self.assertEqual(code, 0, err)
        for text in ("adder 1.2.0 (python", "3072 bytes", "127.2.0.0/16", "127.3.0.1:7401", "5 ms", "not yet",
                     "1 of 3 verified", self.owner.public_bytes.hex()):
            self.assertIn(text, out)

    @defer.inlineCallbacks
    def test_info_unknown_and_malformed_fid(self):
        """orb info of an unknown fid exits 10 saying so; an argument that is neither fid nor name is a usage error (2)."""
        unknown = fidmod.to_text(fidmod.fid_for(b"never deployed"))
        code, doc, err = yield self.orb_json("info", unknown, "--api", self.api)
        self.assertEqual(code, 10)
        self.assertIn(f"knows no function {unknown}", err)
        self.assertEqual(doc["error"]["kind"], "not_found")
        code, _, err = yield self.orb("info", "not_a_fid", "--api", self.api)
        self.assertEqual(code, 2)
        code, _, err = yield self.orb("info", f"{unknown[:-1]}1", "--api", self.api)
        self.assertEqual(code, 2)

    @defer.inlineCallbacks
    def test_api_unreachable_or_missing(self):
        """No API setting is exit 3 with the fix; an API where nothing listens, or that is not JSON, is exit 6."""
        code, _, err = yield self.orb("ls")
        self.assertEqual(code, 3)
        self.assertIn("no tracker API given: pass --api", err)
        code, _, err = yield self.orb("info", self.fid, "--api", "ftp://x")
        self.assertEqual(code, 3)
        port = self.port.getHost().port
        yield self.port.stopListening()
        code, _, err = yield self.orb("ls", "--api", f"http://127.0.0.1:{port}")
        self.assertEqual(code, 6)
        self.assertIn(f"cannot reach the tracker API at http://127.0.0.1:{port}", err)
        other = reactor.listenTCP(0, Site(Data(b"<html>a web server</html>", "text/html")), interface="127.0.0.1")
        self.addCleanup(other.stopListening)
        code, _, err = yield self.orb("info", self.fid, "--api", f"http://127.0.0.1:{other.getHost().port}")
        self.assertEqual(code, 6)
        self.assertIn("something that is not JSON", err)


    @defer.inlineCallbacks
    def test_oversized_answer_is_refused(self):
        """An API answer over the size cap is not read whole: exit 6 saying so."""
        self.patch(_network, "MAX_HTTP_BODY_BYTES", 100)
        code, _, err = yield self.orb("info", self.fid, "--api", self.api)
        self.assertEqual(code, 6)
        self.assertIn("answered more than 100 bytes", err)

class SettingsTests(SynchronousTestCase):
    """Where orb finds the network's name and the tracker API."""

    def setUp(self):
        self.config = os.path.join(self.mktemp() + "-config.toml")

    def write(self, text):
        with open(self.config, "w") as f:
            f.write(text)

    def test_network_flag_then_env_then_config_then_main(self):
        """The network is --network, else ORB_NETWORK, else network in config.toml, else main."""
        self.assertEqual(_config.resolve_network(None, {}, self.config), "main")
        self.write('network = "devnet"\n')
        self.assertEqual(_config.resolve_network(None, {}, self.config), "devnet")
        self.assertEqual(_config.resolve_network(None, {"ORB_NETWORK": "envnet"}, self.config), "envnet")
        self.assertEqual(_config.resolve_network("flagnet", {"ORB_NETWORK": "envnet"}, self.config), "flagnet")

    def test_bad_network_names_the_source(self):
        """A network name that is not one says where it came from."""
        self.write("network = 7\n")
        with self.assertRaises(_config.ConfigError) as e:
            _config.resolve_network(None, {}, self.config)
        self.assertIn(self.config, str(e.exception))
        with self.assertRaises(_config.ConfigError) as e:
            _config.resolve_network("bad name", {}, self.config)
        self.assertIn("--network", str(e.exception))

    def test_api_sources_and_checks(self):
        """The API is --api, else ORB_API, else api in config.toml; it must be an http(s) URL; the slash is dropped."""
        self.assertIsNone(_config.resolve_api(None, {}, self.config, required=False))
        with self.assertRaises(_config.ConfigError) as e:
            _config.resolve_api(None, {}, self.config)
        self.assertIn("pass --api http://HOST:PORT, set ORB_API", str(e.exception))
        self.write('api = "https://tracker.example.org/"\n')
        self.assertEqual(_config.resolve_api(None, {}, self.config), "https://tracker.example.org")
        self.assertEqual(_config.resolve_api(None, {"ORB_API": "http://127.0.0.1:7480"}, self.config),
                         "http://127.0.0.1:7480")
        for bad in ("127.0.0.1:7480", "ftp://x", "http://", "http://a b"):
            with self.assertRaises(_config.ConfigError):
                _config.resolve_api(bad, {}, self.config)


class UploadProgressTests(SynchronousTestCase):
    """The deployer's FETCH answers and the progress bar they move."""

    def setUp(self):
        self.function = os.path.abspath(self.mktemp())
        out = io.StringIO()
        with mock.patch("sys.stdout", out):
            self.assertEqual(main(["init", self.function]), 0)
        with open(os.path.join(self.function, "blob.bin"), "wb") as f:
            f.write(os.urandom(50_000))
        self.built = _project.build(self.function)
        self.sent = []

    def send(self, message, response_to=0):
        self.sent.append((message, response_to))

    def test_bar_shows_on_a_slow_upload(self):
        """An upload lasting over a second shows a bar on a terminal, counting each chunk once even if refetched."""
        from rich.console import Console

        now = [0.0]
        screen = io.StringIO()
        bar = _ui.TransferProgress(len(self.built.data), "uploading", console=Console(file=screen, force_terminal=True),
                                   clock=lambda: now[0])
        client = _network.DeployClient(self.built, bar)
        p = mock.Mock(send=self.send)
        client.on_fetch(p, m.Fetch(fid=self.built.fid, offset=0, length=20_000), 7)
        self.assertFalse(bar.shown)
        now[0] = 1.5
        client.on_fetch(p, m.Fetch(fid=self.built.fid, offset=20_000, length=20_000), 8)
        client.on_fetch(p, m.Fetch(fid=self.built.fid, offset=20_000, length=20_000), 9)  # a retry
        self.assertTrue(bar.shown)
        self.assertEqual(bar.done_bytes, 40_000)
        bar.close()
        self.assertIn("uploading", screen.getvalue())
        (first, rid), _, _ = self.sent
        self.assertEqual((rid, first.offset, first.total_size, first.data), (7, 0, len(self.built.data),
                                                                           self.built.data[:20_000]))

    def test_last_chunk_is_short(self):
        """A FETCH running past the end gets the bytes up to the end, never more."""
        client = _network.DeployClient(self.built, _ui.TransferProgress(1, "x", enabled=False))
        size = len(self.built.data)
        client.on_fetch(mock.Mock(send=self.send), m.Fetch(fid=self.built.fid, offset=size - 10, length=1000), 3)
        ((answer, _),) = self.sent
        self.assertEqual(answer.data, self.built.data[-10:])
        client.on_fetch(mock.Mock(send=self.send), m.Fetch(fid=self.built.fid, offset=0, length=2 * 1024 * 1024), 4)
        self.assertIsInstance(self.sent[-1][0], m.Error)
        self.assertIn("1 <= length <= 1048576", self.sent[-1][0].text)
