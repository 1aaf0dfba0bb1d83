"""
RELAY on real daemons (RFC 10.3, issue 11): a peer started with
`--no-listen` accepts no connections, so trackers mark it `relayed`; a
function it hosts is still called, through RELAY on the peer's own tracker
session, and from a second tracker through the peer's home tracker.

The peer first takes its copy while it listens (placement offers functions
only to peers with an address), then restarts with `--no-listen`: the
same key and package store, now reachable only by relay.
"""

import json
import os

from twisted.internet import defer, endpoints, reactor
from twisted.trial.unittest import TestCase

from orb.devnet import ClientHandler
from orb.identity import NodeKey
from orb.net.adapter import OrbFactory
from orb.net.tls import NodeTLS
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, ResultStatus, Role
from orb.protocol.relay import decode_inner, encode_inner
from orb.protocol.session import LocalIdentity, SessionConfig
from tests._daemons import DaemonTestMixin, eventually, sleep
from tests.test_functions import api, post

INNER_ID = 4242


class RelayCatcher(ClientHandler):
    """A wire client's handler that hands over the RELAY frames it receives."""

    def __init__(self):
        super().__init__()
        self.relays = defer.DeferredQueue(backlog=1, size=16)

    def message_received(self, protocol, message, request_id):
        if isinstance(message, m.Relay):
            self.relays.put(message)


@defer.inlineCallbacks
def relay_client(host, port, network):
    key = NodeKey.generate()
    handler = RelayCatcher()
    identity = LocalIdentity(key.public_bytes, int(Role.PEER))
    factory = OrbFactory(identity, handler, reactor, initiator=True, config=SessionConfig(network=network))
    yield endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=5).connect(NodeTLS(key).wrap(factory, True))
    protocol = yield handler.ready
    return protocol, handler


class RelayLiveTests(DaemonTestMixin, TestCase):
    timeout = 240


    @defer.inlineCallbacks
    def hosts(self, tracker, fid):
        code, doc = yield tracker.get_json(f"/api/v1/functions/{fid}")
        return {h["node_id"] for h in doc.get("hosts", []) if h["verified"] and h["live"] and not h["is_tracker"]}

    @defer.inlineCallbacks
    def relayed_host(self, t1, *tracker_args):
        """A function deployed at t1 and hosted by p1, a peer restarted with --no-listen: (p1, fid)."""
        p1 = yield self.start_peer("p1", "--listen", "tcp:0:interface=127.1.0.1", "--tracker", t1.wire_text)
        yield sleep(1)
        path = os.path.join(self.net.base_dir, "adder")
        code, _, err = yield self.orb("keygen")
        self.assertEqual(code, 0, err)
        code, _, err = yield self.orb("init", path, "--template", "python", "--name", "adder")
        self.assertEqual(code, 0, err)
        code, out, err = yield self.orb("deploy", path, "--tracker", t1.wire_text, "--api", api(t1), "--json",
                                        "--no-wait")
        self.assertEqual(code, 0, out + err)
        fid = json.loads(out)["fid"]

        @defer.inlineCallbacks
        def hosted_by_p1():
            return p1.node_id in (yield self.hosts(t1, fid))

        yield eventually(hosted_by_p1, timeout_s=60, what="p1 a verified host")
        yield p1.stop()
        p1 = yield self.start_peer("p1", "--no-listen", "--tracker", t1.wire_text)
        self.assertNotIn("wire", p1.info)

        @defer.inlineCallbacks
        def relayed_and_hosting():
            code, doc = yield t1.get_json(f"/api/v1/peers/{p1.node_id}")
            return (code == 200 and doc.get("reachability") == "relayed" and not doc.get("addresses")
                    and p1.node_id in (yield self.hosts(t1, fid)))

        yield eventually(relayed_and_hosting, timeout_s=60, what="p1 relayed, with no address, and a verified host")
        return p1, fid

    @defer.inlineCallbacks
    def test_a_relayed_peer_answers_a_call_sent_through_relay(self):
        """RELAY(INVOKE) to a tracker reaches a peer with no listener; the gateway's call reaches it too."""
        t1 = yield self.start_tracker("t1", "--challenge-interval", "2")
        p1, fid = yield self.relayed_host(t1)
        # The peer's own view (status.json): no dial-back came, so it counts itself relayed (RFC 8.7).
        yield eventually(lambda: p1.status()["reachability"] == "relayed", timeout_s=30, what="p1 sees it is relayed")

        protocol, handler = yield relay_client(*t1.wire, self.network)
        self.addCleanup(protocol.transport.loseConnection)
        magic = SessionConfig(network=self.network).magic
        call = m.Invoke(fid=fidmod.from_text(fid), deadline_ms=10_000, token=b"", input=b'{"a": 2, "b": 3}')
        protocol.send(m.Relay(target=bytes.fromhex(p1.node_id), frame=encode_inner(magic, call, INNER_ID)))
        back = yield handler.relays.get()
        self.assertEqual(back.target.hex(), p1.node_id)
        answer = decode_inner(back.frame, magic, 4 * 1024 * 1024)
        self.assertEqual((answer.request_id, answer.is_response), (INNER_ID, True))
        self.assertEqual(answer.message.status_kind, ResultStatus.OK, answer.message.log)
        self.assertEqual(json.loads(answer.message.output), {"sum": 5})

        # A RELAY to a node the tracker has no session with ends the inner request with ERROR(not_found).
        nobody = NodeKey.generate().node_id
        protocol.send(m.Relay(target=nobody, frame=encode_inner(magic, call, INNER_ID + 1)))
        back = yield handler.relays.get()
        refused = decode_inner(back.frame, magic, 4 * 1024 * 1024)
        self.assertEqual((back.target, refused.request_id, refused.message.code),
                         (nobody, INNER_ID + 1, ErrorCode.NOT_FOUND))

        code, body, headers = yield post(f"{api(t1)}/f/{fid}", b'{"a": 20, "b": 22}')
        self.assertEqual((code, json.loads(body)), (200, {"sum": 42}), body)
        self.assertEqual(headers.getRawHeaders(b"orb-replica"), [p1.node_id.encode()])
        self.assertEqual((t1.tracebacks, p1.tracebacks), (0, 0), t1.text[-3000:] + p1.text[-3000:])

    @defer.inlineCallbacks
    def far_tracker(self):
        """t1 with p1 relayed and hosting, and t2, a tracker federated with t1 that p1 cannot reach: (t1, p1, fid, t2).

        t2 runs in this process, so that a test can call through its Relayer; it is a real tracker (TLS, its
        stores, its HTTP gateway, federation with t1). It refuses p1, as a NAT'd peer's second tracker may be
        out of its reach: p1 is reached from t2 only through t1."""
        from orb.net.sessions import Refusal
        from orb.tracker import tap

        t2_dir = os.path.join(self.net.base_dir, "t2")
        t2_id = self.net.node_id_of("t2")
        t1 = yield self.start_tracker("t1", "--challenge-interval", "2", "--admit", t2_id)
        p1, fid = yield self.relayed_host(t1)
        p1_id = bytes.fromhex(p1.node_id)
        options = tap.Options()
        options.parseOptions(["--data-dir", t2_dir, "--network", self.network, "--listen", "tcp:0:interface=127.0.0.1",
                              "--http", "tcp:0:interface=127.0.0.1", "--join", f"{t1.node_id}@{t1.wire_text}"])
        service = tap.makeService(options)
        service.startService()
        self.addCleanup(service.stopService)
        t2 = yield service.started
        t2.table.admission.append(lambda record: Refusal("test: out of reach") if record.node_id == p1_id else None)
        if p1_id in t2.table:
            t2.table.get(p1_id).close("test: out of reach")

        def relay_channel():
            channel = t2.relayer.channel(p1_id)
            return channel if channel is not None and channel.route == "relay" else None

        channel = yield eventually(relay_channel, timeout_s=30, what="t2 has a relay channel to p1")
        self.assertEqual(channel.via.node_id.hex(), t1.node_id)
        self.assertNotIn(p1_id, t2.table)
        return t1, p1, fid, t2

    @defer.inlineCallbacks
    def test_another_tracker_reaches_the_relayed_peer_through_its_home(self):
        """A second tracker, with no session to the relayed peer, calls it through the peer's home tracker."""
        t1, p1, fid, t2 = yield self.far_tracker()
        channel = t2.relayer.channel(bytes.fromhex(p1.node_id))
        call = m.Invoke(fid=fidmod.from_text(fid), deadline_ms=10_000, token=b"", input=b'{"a": 40, "b": 2}')
        result = yield channel.request(call, timeout_s=20)
        self.assertEqual(result.status_kind, ResultStatus.OK, result.log)
        self.assertEqual(json.loads(result.output), {"sum": 42})
        self.assertEqual(t2.relayer.forwarded, 0)  # t2 called; t1 forwarded
        self.assertEqual((t1.tracebacks, p1.tracebacks), (0, 0), t1.text[-3000:] + p1.text[-3000:])

    @defer.inlineCallbacks
    def test_the_gateway_of_another_tracker_reaches_the_relayed_peer(self):
        """POST /f/<fid> at a tracker that is not the relayed peer's home answers through RELAY via the home."""
        t1, p1, fid, t2 = yield self.far_tracker()
        with open(os.path.join(self.net.base_dir, "t2", "ports.json")) as f:
            http_port = json.load(f)["http"]
        code, body, headers = yield post(f"http://127.0.0.1:{http_port}/f/{fid}", b'{"a": 30, "b": 12}')
        self.assertEqual((code, json.loads(body)), (200, {"sum": 42}), body)
        self.assertEqual(headers.getRawHeaders(b"orb-replica"), [p1.node_id.encode()])
        self.assertEqual(t2.relayer.forwarded, 0)
        self.assertEqual((t1.tracebacks, p1.tracebacks), (0, 0), t1.text[-3000:] + p1.text[-3000:])
