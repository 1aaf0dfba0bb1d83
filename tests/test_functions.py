"""
A function's life on real daemons (issue 10): `orb deploy` against a
`twistd orb-tracker`, peers that host it in the jail, k verified replicas
spread over network groups, re-replication after a crash, the tracker as a
fallback host, integrity challenges, restarts and federation.

Loopback has one /16 for the address book, but placement groups loopback
addresses by /16 too: each peer listens and advertises on its own 127.N.0.1,
so three peers are three network groups.
"""

import json
import os
import signal

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from orb.protocol import fid as fidmod
from tests._daemons import DaemonTestMixin, eventually, sleep

CHALLENGE_S = "2"  # each verified replica is challenged again within this (--challenge-interval)


class FunctionLifeTests(DaemonTestMixin, TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def tracker(self, name="t1", *args):
        t = yield self.start_tracker(name, "--challenge-interval", CHALLENGE_S, *args)
        return t

    @defer.inlineCallbacks
    def peers(self, tracker, count, first=1):
        started = []
        for i in range(first, first + count):
            p = yield self.start_peer(f"p{i}", "--listen", f"tcp:0:interface=127.{i}.0.1", "--tracker",
                                      tracker.wire_text)
            started.append(p)
        return started


    @defer.inlineCallbacks
    def function_dir(self, name="adder"):
        path = os.path.join(self.net.base_dir, name)
        if not os.path.exists(os.path.join(self.net.base_dir, "owner", "owner.key")):
            code, _, err = yield self.orb("keygen")
            self.assertEqual(code, 0, err)
        code, _, err = yield self.orb("init", path, "--template", "python", "--name", name)
        self.assertEqual(code, 0, err)
        return path

    @defer.inlineCallbacks
    def deploy(self, tracker, *extra, name="adder"):
        path = yield self.function_dir(name)
        code, out, err = yield self.orb("deploy", path, "--tracker", tracker.wire_text, "--api", api(tracker),
                                        "--json", *extra)
        self.assertEqual(code, 0, out + err)
        return json.loads(out)

    @defer.inlineCallbacks
    def info(self, tracker, fid):
        code, doc = yield tracker.get_json(f"/api/v1/functions/{fid}")
        self.assertEqual(code, 200, doc)
        return doc

    @defer.inlineCallbacks
    def verified(self, tracker, fid):
        """The node ids of the verified, live peer replicas the tracker reports."""
        doc = yield self.info(tracker, fid)
        return {h["node_id"] for h in doc["hosts"] if h["verified"] and h["live"] and not h["is_tracker"]}

    @defer.inlineCallbacks
    def test_deploy_reaches_three_verified_replicas_in_three_groups(self):
        """`orb deploy` returns once 3 peers hold verified copies, in 3 different /16 groups, as `orb info` shows."""
        t1 = yield self.tracker()
        yield self.peers(t1, 4)
        yield sleep(2)
        done = yield self.deploy(t1)
        self.assertEqual(done["replicas"], 3)
        self.assertEqual(done["dns_name"], done["fid"] + ".orb")
        doc = yield self.info(t1, done["fid"])
        hosts = [h for h in doc["hosts"] if h["verified"] and h["live"] and not h["is_tracker"]]
        self.assertEqual(len(hosts), 3)
        self.assertEqual(len({h["network_group"] for h in hosts}), 3)
        code, out, err = yield self.orb("info", done["fid"], "--api", api(t1))
        self.assertEqual(code, 0, err)
        for h in hosts:
            self.assertIn(h["node_id"][:16], out)
        self.assertEqual(t1.tracebacks, 0, t1.text[-3000:])

    @defer.inlineCallbacks
    def test_a_replica_runs_the_function(self):
        """INVOKE to a replica that LOOKUP names runs the function in its jail: RESULT ok, its output and timings."""
        from orb.devnet import open_session
        from orb.protocol import messages as m
        from orb.protocol.codes import ResultStatus

        t1 = yield self.tracker()
        yield self.peers(t1, 3)
        yield sleep(2)
        done = yield self.deploy(t1)
        raw = fidmod.from_text(done["fid"])
        to_tracker, _ = yield open_session(*t1.wire, self.network)
        peers = yield to_tracker.request(m.Lookup(fid=raw, max_replicas=3), timeout_s=10)
        self.assertEqual(len(peers.replicas), 3)
        best = peers.replicas[0]
        to_host, _ = yield open_session(best.host, best.port, self.network)
        result = yield to_host.request(m.Invoke(fid=raw, deadline_ms=5000, token=b"", input=b'{"a": 2, "b": 3}'),
                                       timeout_s=10)
        self.assertEqual(result.status_kind, ResultStatus.OK, result.log)
        self.assertEqual(json.loads(result.output), {"sum": 5})
        self.assertGreater(result.exec_us, 0)
        missing = yield to_host.request(m.Invoke(fid=fidmod.fid_for(b"nothing here"), deadline_ms=1000, token=b"",
                                                 input=b""), timeout_s=10)
        self.assertEqual(missing.status_kind, ResultStatus.NOT_FOUND)
        through = yield to_tracker.request(m.Invoke(fid=raw, deadline_ms=5000, token=b"", input=b'{"a": 4, "b": 5}'),
                                           timeout_s=10)
        self.assertEqual((through.status_kind, json.loads(through.output)), (ResultStatus.OK, {"sum": 9}))
        to_tracker.transport.loseConnection()
        to_host.transport.loseConnection()

    @defer.inlineCallbacks
    def test_the_gateway_calls_the_function(self):
        """curl -X POST <gateway>/f/<fid> -d INPUT returns the function's output; an unknown fid is 404."""
        t1 = yield self.tracker()
        yield self.peers(t1, 3)
        yield sleep(2)
        done = yield self.deploy(t1)
        code, body, headers = yield post(f"{api(t1)}/f/{done['fid']}", b'{"a": 20, "b": 22}')
        self.assertEqual((code, json.loads(body)), (200, {"sum": 42}), body)
        self.assertEqual(headers.getRawHeaders(b"x-orb-status"), [b"ok"])
        code, doc = yield t1.get_json(f"/api/v1/functions/{done['fid']}")
        verified = {h["node_id"] for h in doc["hosts"] if h["verified"]}
        (replica,) = headers.getRawHeaders(b"orb-replica")
        self.assertIn(replica.decode(), verified)
        (timing,) = headers.getRawHeaders(b"server-timing")
        self.assertTrue(all(f"{name};dur=" in timing.decode() for name in ("queue", "fetch", "boot", "exec", "network")))
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-origin"), [b"*"])
        code, meta = yield t1.get_json(f"/f/{done['fid']}")
        self.assertEqual((code, meta["manifest"]["name"]), (200, "adder"))
        code, body, _ = yield post(f"{api(t1)}/f/{fidmod.to_text(fidmod.fid_for(b'none'))}", b"")
        self.assertEqual(code, 404, body)
        code, body, _ = yield post(f"{api(t1)}/f/not-a-fid", b"")
        self.assertEqual((code, json.loads(body)["code"]), (400, "bad-fid"))

        # orb invoke: through the gateway (default) and over the wire; its output on stdout, as it is.
        code, out, err = yield self.orb("invoke", done["fid"], "--data", '{"a": 1, "b": 2}', "--api", api(t1))
        self.assertEqual((code, json.loads(out)), (0, {"sum": 3}), err)
        code, out, err = yield self.orb("invoke", done["fid"], "--data", '{"a": 3, "b": 4}', "--wire", "--tracker",
                                        t1.wire_text, "--json")
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        self.assertEqual((doc["status"], json.loads(doc["output"]), doc["route"]), ("ok", {"sum": 7}, "wire"))
        self.assertGreater(doc["timing"]["exec_ms"], 0)
        code, out, err = yield self.orb("invoke", fidmod.to_text(fidmod.fid_for(b"none")), "--data", "", "--api",
                                        api(t1))
        self.assertEqual(code, 10, out + err)  # no such function

    @defer.inlineCallbacks
    def test_a_killed_host_is_replaced(self):
        """SIGKILL one of the 3 hosts: within seconds a fourth peer holds a verified copy and the count is 3 again."""
        t1 = yield self.tracker()
        peers = yield self.peers(t1, 4)
        yield sleep(2)
        done = yield self.deploy(t1)
        fid = done["fid"]
        hosts = yield self.verified(t1, fid)
        victim = next(p for p in peers if p.node_id in hosts)
        yield victim.stop(signal.SIGKILL)

        @defer.inlineCallbacks
        def back_to_three():
            now = yield self.verified(t1, fid)
            return len(now) == 3 and victim.node_id not in now

        yield eventually(back_to_three, timeout_s=20, what="3 verified replicas without the killed host")
        self.assertEqual(t1.tracebacks, 0, t1.text[-3000:])

    @defer.inlineCallbacks
    def test_with_no_peer_the_tracker_hosts_it_until_peers_take_over(self):
        """Deployed with no peer, the function is hosted by the tracker; peers that join take it over."""
        t1 = yield self.tracker()
        done = yield self.deploy(t1, "--no-wait")
        fid = done["fid"]
        doc = yield self.info(t1, fid)
        self.assertEqual([h["node_id"] for h in doc["hosts"] if h["is_tracker"] and h["verified"]], [t1.node_id])
        code, out, err = yield self.orb("deploy", os.path.join(self.net.base_dir, "adder"), "--tracker",
                                        t1.wire_text, "--json", "--timeout", "1")
        self.assertEqual(code, 9, out + err)  # deployed, but no verified peer replica yet: exit 9
        yield self.peers(t1, 3)

        @defer.inlineCallbacks
        def taken_over():
            doc = yield self.info(t1, fid)
            peers = [h for h in doc["hosts"] if h["verified"] and h["live"] and not h["is_tracker"]]
            return len(peers) == 3 and not any(h["is_tracker"] for h in doc["hosts"] if h["in_placement"])

        yield eventually(taken_over, timeout_s=30, what="three peers hosting it and the tracker no longer")

    @defer.inlineCallbacks
    def test_a_corrupted_copy_is_caught_and_repaired(self):
        """A host whose stored copy is corrupted fails its next challenge, is dropped, and holds a good copy again."""
        t1 = yield self.tracker()
        peers = yield self.peers(t1, 3)
        yield sleep(2)
        done = yield self.deploy(t1)
        fid = done["fid"]
        victim = peers[0]
        path = os.path.join(victim.data_dir, "packages", fid)
        with open(path, "r+b") as f:
            f.seek(600)
            f.write(b"\xffcorrupted\xff")

        def copy_is_good():
            try:
                with open(path, "rb") as f:
                    return fidmod.to_text(fidmod.fid_for(f.read())) == fid
            except OSError:
                return False

        yield eventually(lambda: not copy_is_good(), timeout_s=20, what="the corrupt copy discarded")
        yield eventually(copy_is_good, timeout_s=30, what="a good copy fetched again")

        @defer.inlineCallbacks
        def verified_again():
            now = yield self.verified(t1, fid)
            return victim.node_id in now and len(now) == 3

        yield eventually(verified_again, timeout_s=30, what="the repaired host verified again")

    @defer.inlineCallbacks
    def test_a_tracker_restart_keeps_functions_and_placements(self):
        """Restarted, a tracker still lists the function, its manifest and its verified replicas."""
        t1 = yield self.tracker()
        yield self.peers(t1, 3)
        yield sleep(2)
        done = yield self.deploy(t1)
        before = yield self.verified(t1, done["fid"])
        yield t1.stop()
        again = yield self.tracker("t1")
        doc = yield self.info(again, done["fid"])
        self.assertEqual(doc["name"], "adder")
        placed = {h["node_id"] for h in doc["hosts"] if h["in_placement"]}
        self.assertEqual(placed & before, before)
        yield eventually(lambda: self.verified(again, done["fid"]).addCallback(lambda v: v == before),
                         timeout_s=30, what="the same three replicas verified after the restart")

    @defer.inlineCallbacks
    def test_a_second_tracker_shows_the_same_replicas(self):
        """`orb info` against another federated tracker shows the same verified replicas."""
        t1, t2 = yield self.start_trackers("t1", "t2")
        yield self.peers(t1, 3)
        yield sleep(2)
        done = yield self.deploy(t1)
        at_t1 = yield self.verified(t1, done["fid"])

        @defer.inlineCallbacks
        def same_at_t2():
            code, doc = yield t2.get_json(f"/api/v1/functions/{done['fid']}")
            if code != 200:
                return False
            return {h["node_id"] for h in doc["hosts"] if h["verified"] and h["live"]} == at_t1

        yield eventually(same_at_t2, timeout_s=20, what="t2 lists t1's verified replicas")
        code, out, err = yield self.orb("info", done["fid"], "--api", api(t2), "--json")
        self.assertEqual(code, 0, err)
        self.assertEqual({h["node_id"] for h in json.loads(out)["hosts"] if h["verified"]}, at_t1)


@defer.inlineCallbacks
def post(url, body):
    """POST ``body`` to ``url`` with a real HTTP client: (status, body, headers)."""
    from io import BytesIO

    from twisted.web.client import Agent, FileBodyProducer, readBody

    response = yield Agent(reactor).request(b"POST", url.encode(), None, FileBodyProducer(BytesIO(body)))
    data = yield readBody(response)
    return response.code, data, response.headers


def api(tracker):
    return f"http://127.0.0.1:{tracker.info['http']}"





class _Quiet:
    """A progress bar that shows nothing."""

    def advance(self, n):
        pass

    def close(self):
        pass


class TrackerRefusalTests(DaemonTestMixin, TestCase):
    """DEPLOYs that only the tracker can refuse, sent by an in-process deployer that skips the local checks."""

    timeout = 120

    @defer.inlineCallbacks
    def send(self, tracker, directory, corrupt=False):
        """Deploy ``directory`` as `orb deploy` does, without running its samples first; the ERROR or DEPLOY_ACK."""
        from orb.cli import _config, _keys, _network, _project
        from orb.identity import NodeKey

        built = _project.build(directory)
        key = NodeKey.generate()
        signed = _project.sign_built(built, key, int(reactor.seconds()))
        if corrupt:  # serve other bytes than the fid names
            data = bytearray(built.data)
            data[700] ^= 0xFF
            built = type(built)(**{**_fields(built), "data": bytes(data)})
        client = _network.DeployClient(built, _Quiet())
        address = _config.parse_tracker(tracker.wire_text, "test")
        p = yield _network.connect(reactor, address, self.network, client)
        try:
            plan = _network.DeployPlan(built=built, key=_keys, tracker=address, network=self.network, api=None,
                                       wait=False, timeout_s=5)
            try:
                ack = yield _network.send_deploy(p, plan, signed)
            except Exception as e:  # CommandError wrapping the tracker's ERROR
                return getattr(e, "kind", None), str(e)
            return "ok", ack
        finally:
            yield _network.close_session(reactor, p, client)

    @defer.inlineCallbacks
    def test_a_function_failing_its_samples_at_the_tracker_is_refused(self):
        """A function whose sample fails is refused by the tracker's own test run (invalid), and nothing is recorded."""
        t1 = yield self.start_tracker("t1")
        path = os.path.join(self.net.base_dir, "liar")
        os.makedirs(path)
        with open(os.path.join(path, "orb.toml"), "w") as f:
            f.write('name = "liar"\nversion = "1"\nruntime = "python"\n\n[[sample]]\ninput = "x"\noutput = "y"\n')
        with open(os.path.join(path, "main.py"), "w") as f:
            f.write("def handler(event, context):\n    return 'not y'\n")
        kind, text = yield self.send(t1, path)
        self.assertEqual(kind, "invalid", text)
        self.assertIn("fails its own samples", text)
        code, listing = yield t1.get_json("/api/v1/functions")
        self.assertEqual(listing["functions"], [])
        self.assertEqual(t1.tracebacks, 0, t1.text[-3000:])

    @defer.inlineCallbacks
    def test_bytes_that_do_not_hash_to_the_fid_are_refused(self):
        """A deployer that serves other bytes than its fid names gets invalid; nothing is stored or recorded."""
        t1 = yield self.start_tracker("t1")
        path = os.path.join(self.net.base_dir, "adder")
        code, _, err = yield FunctionLifeTests.orb(self, "init", path, "--template", "python")
        self.assertEqual(code, 0, err)
        kind, text = yield self.send(t1, path, corrupt=True)
        self.assertEqual(kind, "invalid", text)
        self.assertIn("could not be fetched", text)
        code, listing = yield t1.get_json("/api/v1/functions")
        self.assertEqual(listing["functions"], [])
        self.assertFalse([n for n in os.listdir(os.path.join(t1.data_dir, "packages")) if not n.startswith(".")
                          and n != "partial"])


def _fields(instance):
    import attrs

    return attrs.asdict(instance, recurse=False)

