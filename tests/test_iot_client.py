"""
The IoT example client (examples/iot/orb_iot.py, issue 12): its DNS messages
checked against twisted.names and hand-made packets, its wire messages against
the RFC's vectors, and real calls to a deployed function, through `--peer` and
through a twisted.names server serving the SRV records, as a subprocess.
"""

import base64
import importlib.util
import json
import os
import random
import socket
import struct
import sys

from twisted.internet import defer, reactor, utils
from twisted.names import authority, dns, server
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.frame import encode_frame
from tests._daemons import DaemonTestMixin, sleep

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(os.path.dirname(HERE), "examples", "iot", "orb_iot.py")
TWISTD = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "twistd")


def _load_client():
    spec = importlib.util.spec_from_file_location("orb_iot", CLIENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


iot = _load_client()
VECTORS = json.load(open(os.path.join(HERE, "vectors", "v1.json")))
FID_TEXT = "ahr3brcctd6byfe27p2mrglpxescplsb4rsjxe2muskzsg3ykk4fk"  # RFC 9.1: 0x01 || SHA-256("")
SRV_NAME = f"_orb._tcp.{FID_TEXT}.orb"


def vector(name):
    (v,) = [v for v in VECTORS["vectors"] if v["name"] == name]
    return v, bytes.fromhex(v["hex"])[16:]


def twisted_response(query: bytes, answers=(), additional=(), rcode=0, trunc=0) -> bytes:
    """A response to ``query`` encoded by twisted.names (which compresses names)."""
    q = dns.Message()
    q.fromStr(query)
    r = dns.Message(id=q.id, answer=1, auth=1, rCode=rcode, trunc=trunc)
    r.queries = q.queries
    r.answers = list(answers)
    r.additional = list(additional)
    return r.toStr()


def srv(name, priority, weight, port, target, ttl=10):
    return dns.RRHeader(name, dns.SRV, dns.IN, ttl, dns.Record_SRV(priority, weight, port, target, ttl=ttl))


def a(name, ip, ttl=10):
    return dns.RRHeader(name, dns.A, dns.IN, ttl, dns.Record_A(ip, ttl=ttl))


class DNSMessageTests(SynchronousTestCase):
    def test_query_is_one_question_with_edns0(self):
        """The SRV query decodes, with twisted.names, as one IN SRV question for the name, with an OPT of 1232 bytes."""
        query = iot.build_query(0x1234, SRV_NAME, iot.TYPE_SRV)
        msg = dns._EDNSMessage()
        msg.fromStr(query)
        self.assertEqual((msg.id, msg.answer, msg.recDes), (0x1234, False, False))
        self.assertEqual([(q.name.name, q.type, q.cls) for q in msg.queries], [(SRV_NAME.encode(), dns.SRV, dns.IN)])
        self.assertEqual(msg.maxSize, 1232)

    def test_query_golden_bytes(self):
        """An A query for x.orb is the expected bytes, field by field."""
        self.assertEqual(
            iot.build_query(7, "x.orb", iot.TYPE_A, edns_payload_bytes=None),
            b"\x00\x07"  # id
            b"\x00\x00"  # flags: QUERY, RD clear
            b"\x00\x01\x00\x00\x00\x00\x00\x00"  # 1 question, no records
            b"\x01x\x03orb\x00"  # x.orb
            b"\x00\x01\x00\x01",  # A, IN
        )

    def test_parses_srv_with_additional_addresses(self):
        """A compressed twisted.names answer gives the SRV priority, weight, port, target and the targets' addresses."""
        query = iot.build_query(99, SRV_NAME, iot.TYPE_SRV)
        target = f"p1.{FID_TEXT}.orb"
        data = twisted_response(query, [srv(SRV_NAME, 10, 60, 7401, target), srv(SRV_NAME, 20, 0, 7402, "p2.orb")],
                                [a(target, "127.1.0.1"),
                                 dns.RRHeader("p2.orb", dns.AAAA, dns.IN, 5, dns.Record_AAAA("::1"))])
        msg = iot.parse_message(data)
        self.assertEqual((msg.id, msg.is_response, msg.rcode, msg.truncated), (99, True, 0, False))
        self.assertEqual([r.data for r in msg.answers], [(10, 60, 7401, target), (20, 0, 7402, "p2.orb")])
        self.assertEqual([(r.name, r.data) for r in msg.additional], [(target, "127.1.0.1"), ("p2.orb", "::1")])

    def test_parses_txt(self):
        """TXT strings come back as a list of byte strings."""
        query = iot.build_query(1, f"{FID_TEXT}.orb", iot.TYPE_TXT)
        rr = dns.RRHeader(f"{FID_TEXT}.orb", dns.TXT, dns.IN, 5, dns.Record_TXT(b"v=orb1", b"version=1"))
        self.assertEqual(iot.parse_message(twisted_response(query, [rr])).answers[0].data, [b"v=orb1", b"version=1"])

    def test_malformed_messages_raise_dns_error(self):
        """Short, cut, looping and over-long messages each raise DNSError, never another exception."""
        good = twisted_response(iot.build_query(5, SRV_NAME, iot.TYPE_SRV), [srv(SRV_NAME, 1, 1, 1, "t.orb")])
        header = struct.pack(">HHHHHH", 5, 0x8400, 1, 0, 0, 0)
        loop = header + b"\xc0\x0c" + b"\x00\x21\x00\x01"  # a question whose name points at itself
        cases = [b"", good[:11], good[:-1], good + b"\x00", loop,
                 header + b"\x40abc\x00\x00\x01\x00\x01",  # label type 0x40
                 struct.pack(">HHHHHH", 5, 0x8400, 0, 1, 0, 0) + b"\x00" + struct.pack(">HHIH", 1, 1, 0, 3) + b"abc"]
        for data in cases:
            self.assertRaises(iot.DNSError, iot.parse_message, data)
        for cut in range(len(good)):
            self.assertRaises(iot.DNSError, iot.parse_message, good[:cut])

    def test_truncated_udp_answer_is_asked_again_over_tcp(self):
        """A TC answer over UDP makes the client ask the same question over TCP and use that answer."""
        asked = []

        def udp(server, query, timeout_s):
            asked.append(("udp", query))
            return twisted_response(query, trunc=1)

        def tcp(server, query, timeout_s):
            asked.append(("tcp", query))
            return twisted_response(query, [srv(SRV_NAME, 1, 1, 9, "t.orb")])

        msg, transport = iot.dns_query(("127.0.0.1", 53), SRV_NAME, iot.TYPE_SRV, udp=udp, tcp=tcp)
        self.assertEqual(transport, "tcp")
        self.assertEqual([k for k, _ in asked], ["udp", "tcp"])
        self.assertEqual(asked[0][1], asked[1][1])
        self.assertEqual(msg.answers[0].data, (1, 1, 9, "t.orb"))

    def test_nxdomain_and_mismatched_answers(self):
        """NXDOMAIN raises NoSuchName; an answer with another id or to another question raises DNSError."""
        nx = lambda server, query, t: twisted_response(query, rcode=dns.ENAME)  # noqa: E731
        self.assertRaises(iot.NoSuchName, iot.dns_query, ("127.0.0.1", 53), SRV_NAME, iot.TYPE_SRV, udp=nx)
        other_id = lambda server, query, t: twisted_response(bytes([query[0] ^ 1]) + query[1:])  # noqa: E731
        self.assertRaises(iot.DNSError, iot.dns_query, ("127.0.0.1", 53), SRV_NAME, iot.TYPE_SRV, udp=other_id)
        other_q = lambda server, query, t: twisted_response(query[:2] + iot.build_query(0, "a.orb", 1)[2:])  # noqa
        self.assertRaises(iot.DNSError, iot.dns_query, ("127.0.0.1", 53), SRV_NAME, iot.TYPE_SRV, udp=other_q)

    def test_srv_order_priority_first(self):
        """Targets come lowest priority first; a target of '.' is never tried."""
        query = iot.build_query(1, SRV_NAME, iot.TYPE_SRV)
        data = twisted_response(query, [srv(SRV_NAME, 30, 5, 3, "c.orb"), srv(SRV_NAME, 10, 5, 1, "a.orb"),
                                        srv(SRV_NAME, 20, 5, 2, "b.orb"), srv(SRV_NAME, 5, 0, 4, b"")])
        order = iot.order_srv(iot.parse_message(data).answers, random.Random(1))
        self.assertEqual([s[3] for s in order], ["a.orb", "b.orb", "c.orb"])

    def test_peer_target_names_the_node_id_to_expect(self):
        """An SRV target <node>.peer.orb gives the node id the peer must prove; other target names give none."""
        node_id = bytes(range(32))
        label = base64.b32encode(node_id).decode().lower().rstrip("=")
        self.assertEqual(iot.node_id_of_target(f"{label}.peer.orb"), node_id)
        for other in (f"{label}.tracker.orb", "p1.peer.orb", f"{label[:-1]}1.peer.orb", f"x.{label}.peer.orb"):
            self.assertIsNone(iot.node_id_of_target(other), other)

        def query(server, name, qtype, timeout_s):
            q = iot.build_query(0, name, qtype)
            return iot.parse_message(twisted_response(q, [srv(SRV_NAME, 1, 1, 7401, f"{label}.peer.orb")],
                                                      [a(f"{label}.peer.orb", "127.3.0.1")])), "udp"

        (target,), _ = iot.resolve_service(("127.0.0.1", 53), FID_TEXT, query=query)
        self.assertEqual((target.host, target.node_id), ("127.3.0.1", node_id))

    def test_target_without_additional_address_is_resolved(self):
        """A SRV target with no address in the additional section is looked up with its own A query."""
        def query(server, name, qtype, timeout_s):
            q = iot.build_query(0, name, qtype)
            if qtype == iot.TYPE_SRV:
                return iot.parse_message(twisted_response(q, [srv(SRV_NAME, 1, 1, 7401, "p.orb")])), "udp"
            if qtype == iot.TYPE_A and name == "p.orb":
                return iot.parse_message(twisted_response(q, [a("p.orb", "127.3.0.1")])), "udp"
            return iot.parse_message(twisted_response(q)), "udp"

        targets, info = iot.resolve_service(("127.0.0.1", 53), FID_TEXT, query=query)
        self.assertEqual([(t.host, t.port, t.name) for t in targets], [("127.3.0.1", 7401, "p.orb")])
        self.assertEqual(info["extra_queries"], 2)


class WireVectorTests(SynchronousTestCase):
    def test_imports_only_the_standard_library_and_cryptography(self):
        """The client imports nothing but the standard library and cryptography: no twisted, no orb."""
        import ast

        tree = ast.parse(open(CLIENT).read())
        top = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                top |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                top.add(node.module.split(".")[0])
        self.assertEqual(top - set(sys.stdlib_module_names), {"cryptography"})

    def test_fid_text_of_the_rfc_example(self):
        """The RFC 9.1 example fid decodes to 0x01 || SHA-256(''); uppercase or non-base32 text is refused."""
        self.assertEqual(iot.fid_from_text(FID_TEXT), fidmod.from_text(FID_TEXT))
        self.assertRaises(ValueError, iot.fid_from_text, FID_TEXT.upper())
        self.assertRaises(ValueError, iot.fid_from_text, FID_TEXT[:-1] + "1")

    def test_magic(self):
        """The network magic matches the RFC's values for main and devnet."""
        self.assertEqual(iot.network_magic("main").hex(), "f89a574c")
        self.assertEqual(iot.network_magic("devnet").hex(), VECTORS["magic"])

    def test_invoke_matches_the_vector(self):
        """INVOKE built by the client is byte for byte the RFC's INVOKE vector body."""
        v, body = vector("invoke")
        f = v["fields"]
        ext = [(e["type"], bytes.fromhex(e["value"])) for e in f["ext"]]
        self.assertEqual(iot.encode_invoke(bytes.fromhex(f["fid"]), f["deadline_ms"], bytes.fromhex(f["input"]),
                                           bytes.fromhex(f["token"]), ext), body)

    def test_result_hello_ack_error_decode_as_the_vectors(self):
        """RESULT, a cached RESULT, HELLO_ACK and ERROR vectors decode to the RFC's fields."""
        for name in ("result", "result_cached"):
            v, body = vector(name)
            r = iot.decode_result(body)
            f = v["fields"]
            self.assertEqual((r["status"], r["queue_us"], r["boot_us"], r["exec_us"], r["output"].hex()),
                             ("ok", f["queue_us"], f["boot_us"], f["exec_us"], f["output"]))
            self.assertEqual([(t, val.hex()) for t, _, val in r["ext"]], [(e["type"], e["value"]) for e in f["ext"]])
        v, body = vector("hello_ack")
        ack = iot.decode_hello_ack(body)
        self.assertEqual((ack["node_id"].hex(), ack["public_key"].hex(), ack["roles"], ack["user_agent"]),
                         (v["fields"]["node_id"], v["fields"]["public_key"], v["fields"]["roles"],
                          v["fields"]["user_agent"]))
        self.assertEqual(ack["listen"], [(e["host"], e["port"]) for e in v["fields"]["listen"]])
        v, body = vector("error")
        self.assertEqual(iot.decode_error(body), ("unsupported", 9, v["fields"]["text"]))

    def test_hello_decodes_with_the_reference_codec(self):
        """The client's HELLO is accepted by the reference codec: its key, no roles, version 1, no listen."""
        key = iot.NodeKey()
        body = iot.encode_hello(key, ("127.1.0.1", 7401), 42, 1764000000)
        frame = iot.HEADER.pack(iot.network_magic("devnet"), 1, iot.HELLO, 0, 0, len(body)) + body
        from orb.protocol.frame import FrameDecoder

        (decoded,) = FrameDecoder(iot.network_magic("devnet")).feed(frame)
        hello = decoded.message
        self.assertEqual((hello.node_id, hello.public_key, hello.roles, hello.versions, hello.listen),
                         (key.node_id, key.public_bytes, 0, (1,), ()))
        self.assertEqual((hello.observed.host, hello.observed.port), ("127.1.0.1", 7401))

    def test_result_from_the_reference_codec(self):
        """A RESULT encoded by the reference codec decodes with every field, a truncated one raises ProtocolFailure."""
        msg = m.Result(status=1, queue_us=1, fetch_us=2, boot_us=3, exec_us=4, output=b"out", log=b"trace")
        body = encode_frame(iot.network_magic("devnet"), msg, request_id=5, flags=1)[16:]
        r = iot.decode_result(body)
        self.assertEqual((r["status"], r["fetch_us"], r["output"], r["log"]), ("error", 2, b"out", b"trace"))
        for cut in range(len(body)):
            self.assertRaises(iot.ProtocolFailure, iot.decode_result, body[:cut])

    def test_certificate_carries_the_node_key(self):
        """The ephemeral certificate's key is the node key (the binding of RFC 7.3)."""
        key = iot.NodeKey()
        from cryptography import x509

        der = x509.load_pem_x509_certificate(key.certificate_pem()).public_bytes(
            iot.serialization.Encoding.DER)
        self.assertEqual(iot.certificate_key(der), key.public_bytes)
        self.assertIsNone(iot.certificate_key(b"not a certificate"))


class _SRVAuthority(authority.FileAuthority):
    """A plain twisted.names authority for `orb` whose SRV answers carry the targets' A records
    (twisted.names adds additional records for CNAME, MX and NS only)."""

    def __init__(self, records):
        authority.FileAuthority.__init__(self, None)
        self.soa = (b"orb", dns.Record_SOA(mname="ns.orb", rname="root.orb", serial=1, refresh=60, minimum=5,
                                          expire=60, retry=60, ttl=5))
        self.records = {b"orb": [self.soa[1]]}
        for name, record in records:
            self.records.setdefault(name.lower().encode(), []).append(record)

    def loadFile(self, filename):  # records come from __init__
        pass

    def _additionalRecords(self, answer, authority, ttl):
        yield from authority_additional(self, answer, authority, ttl)
        for record in answer + authority:
            if record.type == dns.SRV:
                target = record.payload.target.name
                for rec in self.records.get(target.lower(), ()):
                    if rec.TYPE in self._ADDRESS_TYPES:
                        yield dns.RRHeader(target, rec.TYPE, dns.IN, rec.ttl or ttl, rec, auth=True)


authority_additional = authority.FileAuthority._additionalRecords


class _TruncatingFactory(server.DNSServerFactory):
    """Truncates UDP answers (TC) at the client's EDNS0 size, 1232 bytes, as RFC 6891 has a server do.
    twisted.names itself never truncates (server.py: "responses are never truncated")."""

    def sendReply(self, protocol, message, address):
        if address is not None:
            message.maxSize = iot.EDNS_PAYLOAD_BYTES
        return server.DNSServerFactory.sendReply(self, protocol, message, address)


def serve_dns(records):
    """A twisted.names server on 127.0.0.1 (UDP and TCP on one port); returns (port, stop)."""
    factory = _TruncatingFactory(authorities=[_SRVAuthority(records)])
    udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    port = udp.getHost().port
    tcp = reactor.listenTCP(port, factory, interface="127.0.0.1")
    return port, lambda: defer.gatherResults([defer.maybeDeferred(udp.stopListening),
                                              defer.maybeDeferred(tcp.stopListening)])


def closed_port():
    """A loopback port with nothing listening on it (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class DirectCallTests(DaemonTestMixin, TestCase):
    """The example client calls a function deployed on real daemons."""

    timeout = 240


    @defer.inlineCallbacks
    def client(self, *argv):
        """Run examples/iot/orb_iot.py as its own process, with no orb package on its path."""
        env = {"PATH": os.environ.get("PATH", ""), "ORB_NETWORK": self.network}
        out, err, code = yield utils.getProcessOutputAndValue(sys.executable, ["-I", CLIENT, *argv], env=env,
                                                              path=os.path.dirname(CLIENT))
        return code, out.decode(), err.decode()

    @defer.inlineCallbacks
    def deployed(self, *tracker_args):
        """A tracker, 4 peers (each its own 127.N.0.1) and the python template `adder` deployed on 3 of them:
        (fid text, the verified hosts from /api/v1/functions/<fid>, NODEID@HOST:PORT of the fourth peer)."""
        t1 = yield self.start_tracker("t1", *tracker_args)
        peers = []
        for i in range(1, 5):
            p = yield self.start_peer(f"p{i}", "--listen", f"tcp:0:interface=127.{i}.0.1", "--tracker", t1.wire_text)
            peers.append((f"127.{i}.0.1:{p.info['wire']}", p.node_id))
        yield sleep(2)
        path = os.path.join(self.net.base_dir, "adder")
        for argv in (("keygen",), ("init", path, "--template", "python", "--name", "adder")):
            code, out, err = yield self.orb(*argv)
            self.assertEqual(code, 0, out + err)
        code, out, err = yield self.orb("deploy", path, "--tracker", t1.wire_text, "--api",
                                        f"http://127.0.0.1:{t1.info['http']}", "--json")
        self.assertEqual(code, 0, out + err)
        fid = json.loads(out)["fid"]
        code, doc = yield t1.get_json(f"/api/v1/functions/{fid}")
        self.assertEqual(code, 200, doc)
        hosts = [h for h in doc["hosts"] if h["verified"] and h["live"] and not h["is_tracker"]]
        self.assertEqual(len(hosts), 3, doc)
        (spare,) = [f"{node}@{addr}" for addr, node in peers if node not in {h["node_id"] for h in hosts}]
        return fid, hosts, spare

    @defer.inlineCallbacks
    def test_calls_a_deployed_function_through_peer_and_through_dns(self):
        """orb_iot.py calls the function: with --peer it prints the output, skipping a peer that answers not_found;
        through a twisted.names SRV list whose first target is dead it falls back to the next, over UDP and,
        when truncated, over TCP."""
        fid, hosts, spare = yield self.deployed()
        host = hosts[0]
        addr = f"{host['address']['ip']}:{host['address']['port']}"

        # A peer that does not host the function answers RESULT not_found: the client tries the next --peer.
        code, out, err = yield self.client(fid, "--peer", spare, "--peer", addr, "--data", '{"a": 5, "b": 6}', "--json")
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        self.assertEqual((json.loads(doc["output"]), [a.get("status") for a in doc["attempts"]]),
                         ({"sum": 11}, ["not_found", "ok"]))

        # --peer, with the node id the tracker reports (RFC 7.5): the output on stdout, timings on stderr.
        code, out, err = yield self.client(fid, "--peer", f"{host['node_id']}@{addr}", "--data", '{"a": 2, "b": 3}')
        self.assertEqual((code, json.loads(out)), (0, {"sum": 5}), err)
        for step in ("tls", "hello", "invoke", "exec"):
            self.assertIn(step, err)
        if os.environ.get("IOT_DEBUG"):
            print(err)

        # --peer with the wrong node id: the binding fails, nothing is printed, the exit status says no peer.
        code, out, err = yield self.client(fid, "--peer", f"{'00' * 32}@{addr}", "--data", "{}")
        self.assertEqual((code, out), (iot.EXIT_NO_PEER, ""), err)
        self.assertIn("not the one dialled", err)

        # DNS: the first SRV target (priority 10) listens nowhere; the second is a real host.
        records = [(f"_orb._tcp.{fid}.orb", dns.Record_SRV(10, 0, closed_port(), f"dead.{fid}.orb")),
                   (f"dead.{fid}.orb", dns.Record_A("127.9.0.1"))]
        for i, h in enumerate(hosts, 1):
            records += [(f"_orb._tcp.{fid}.orb", dns.Record_SRV(10 + i, 0, h["address"]["port"], f"p{i}.{fid}.orb")),
                        (f"p{i}.{fid}.orb", dns.Record_A(h["address"]["ip"]))]
        port, stop = serve_dns(records)
        self.addCleanup(stop)
        code, out, err = yield self.client(fid, "--dns", f"127.0.0.1:{port}", "--data", '{"a": 40, "b": 2}', "--json")
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        self.assertEqual(json.loads(doc["output"]), {"sum": 42})
        self.assertEqual((doc["dns"]["transport"], doc["dns"]["srv_records"]), ("udp", 4))
        self.assertEqual([("error" in a, a["peer"]) for a in doc["attempts"]],
                         [(True, records[0][1].port and f"127.9.0.1:{records[0][1].port}"),
                          (False, f"{hosts[0]['address']['ip']}:{hosts[0]['address']['port']}")])
        self.assertEqual(doc["node_id"], hosts[0]["node_id"])

        # Enough SRV records to pass the 1232-byte EDNS0 size: the UDP answer is truncated, TCP completes it.
        more = [(f"_orb._tcp.{fid}.orb", dns.Record_SRV(100 + i, 0, 1, f"x{i}.{fid}.orb")) for i in range(80)]
        port2, stop2 = serve_dns(records + more)
        self.addCleanup(stop2)
        code, out, err = yield self.client(fid, "--dns", f"127.0.0.1:{port2}", "--data", '{"a": 1, "b": 1}', "--json")
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        self.assertEqual((doc["dns"]["transport"], doc["dns"]["srv_records"], json.loads(doc["output"])),
                         ("tcp", 84, {"sum": 2}))

        # An unknown fid: NXDOMAIN from the server, a clear message and its own exit status.
        other = fidmod.to_text(fidmod.fid_for(b"nothing"))
        code, out, err = yield self.client(other, "--dns", f"127.0.0.1:{port}")
        self.assertEqual(code, iot.EXIT_NO_NAME, out + err)
        self.assertIn("no such function", err)
        for d in self.net.daemons:
            self.assertEqual(d.tracebacks, 0, d.text[-3000:])
        if os.environ.get("IOT_DEBUG"):
            for d in self.net.daemons:
                print(d.kind, d.text[-2500:])

    @defer.inlineCallbacks
    def test_calls_through_the_trackers_own_dns(self):
        """With a tracker serving .orb (--dns), orb_iot.py --dns finds the hosts by SRV and calls one of them."""
        out, _, _ = yield utils.getProcessOutputAndValue(TWISTD, ["orb-tracker", "--help"], env=dict(os.environ))
        if b"--dns" not in out:
            raise SkipTest("this tracker has no --dns yet (issue 12's `dns` branch)")
        port = closed_port()
        fid, hosts, _ = yield self.deployed("--dns", f"127.0.0.1:{port}")
        verified = {h["node_id"] for h in hosts}
        code, out, err = yield self.client(fid, "--dns", f"127.0.0.1:{port}", "--data", '{"a": 7, "b": 8}', "--json")
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        self.assertEqual(json.loads(doc["output"]), {"sum": 15})
        self.assertIn(doc["node_id"], verified)
        self.assertGreaterEqual(doc["dns"]["srv_records"], 1)


class _FakeTLSSocket:
    """The client's side of a TLS socket, with a scripted remote: ``respond(frame)`` is called with each
    frame the client sends (type, flags, request_id, body) and returns bytes for the client to read."""

    def __init__(self, peer_key, respond):
        from cryptography import x509

        self.der = x509.load_pem_x509_certificate(peer_key.certificate_pem()).public_bytes(
            iot.serialization.Encoding.DER)
        self.respond = respond
        self.sent = []
        self.inbound = bytearray()
        self.closed = False
        self._out = bytearray()

    def sendall(self, data):
        self._out += data
        while len(self._out) >= 16:
            _, _, t, flags, rid, length = iot.HEADER.unpack_from(self._out)
            if len(self._out) < 16 + length:
                break
            frame = (t, flags, rid, bytes(self._out[16:16 + length]))
            del self._out[:16 + length]
            self.sent.append(frame)
            self.inbound += self.respond(frame)

    def recv(self, n):
        out = bytes(self.inbound[:n])
        del self.inbound[:n]
        return out  # b"": the remote closed

    def getpeercert(self, binary_form=False):
        return self.der

    def settimeout(self, t):
        pass

    def close(self):
        self.closed = True


MAGIC = iot.network_magic("devnet")


def frame(message, request_id=0, flags=0):
    return encode_frame(MAGIC, message, request_id=request_id, flags=flags)


def hello_ack(peer_key, node_id=None):
    return frame(m.HelloAck(version=1, node_id=node_id or peer_key.node_id, public_key=peer_key.public_bytes,
                            roles=1, features=0, timestamp=0, nonce=1, observed=m.Endpoint("127.0.0.1", 5000),
                            listen=(m.Endpoint("127.1.0.1", 7401),), user_agent="fake-peer"))


class SessionTests(SynchronousTestCase):
    """The client's session logic against a scripted remote, no sockets."""

    def run_session(self, respond, peer_key=None, expected_node_id=None):
        peer_key = peer_key or iot.NodeKey()
        sock = _FakeTLSSocket(peer_key, respond)
        target = iot.Target("127.1.0.1", 7401, "p1.orb", node_id=expected_node_id)
        session = iot.Session(sock, MAGIC)

        def run():
            try:
                return iot._run_session(session, target, b"\x01" + b"\x00" * 32, b"{}", 1000, iot.NodeKey(), {},
                                        lambda *a: None)
            except iot.ProtocolFailure as e:
                session.close(e.code, 0, str(e))
                raise

        return sock, run

    def test_result_is_matched_by_request_id_while_ping_is_answered(self):
        """A PING, an unsolicited ADDR and a stray RESULT come first: the client answers PONG and waits for its own RESULT."""
        peer_key = iot.NodeKey()

        def respond(f):
            t, flags, rid, body = f
            if t == iot.HELLO:
                return hello_ack(peer_key)
            if t == iot.INVOKE:
                ok = m.Result(status=0, queue_us=1, fetch_us=0, boot_us=2, exec_us=3, output=b"42", log=b"")
                return (frame(m.Ping(nonce=99), request_id=77) + frame(m.Addr(entries=()))
                        + frame(ok, request_id=rid ^ 1, flags=1) + frame(ok, request_id=rid, flags=1))
            return b""

        sock, run = self.run_session(respond, peer_key)
        result = run()
        self.assertEqual((result["status"], result["output"], result["node_id"]), ("ok", b"42", peer_key.node_id.hex()))
        types = [(t, flags, rid) for t, flags, rid, _ in sock.sent]
        self.assertEqual(types[0][0], iot.HELLO)
        self.assertIn((iot.PONG, 1, 77), types)
        pong = [body for t, _, _, body in sock.sent if t == iot.PONG][0]
        self.assertEqual(struct.unpack(">Q", pong)[0], 99)
        self.assertEqual(sock.sent[-1][0], iot.ERROR)  # closed with ERROR(shutdown)
        self.assertEqual(iot.decode_error(sock.sent[-1][3])[0], "shutdown")

    def test_a_certificate_key_other_than_hello_acks_fails_identity(self):
        """HELLO_ACK naming a key that is not the TLS certificate's: ERROR identity, no INVOKE sent."""
        claimed = iot.NodeKey()
        sock, run = self.run_session(lambda f: hello_ack(claimed) if f[0] == iot.HELLO else b"")
        self.assertRaises(iot.ProtocolFailure, run)
        self.assertNotIn(iot.INVOKE, [t for t, _, _, _ in sock.sent])
        self.assertEqual(iot.decode_error(sock.sent[-1][3])[0], "identity")

    def test_a_node_id_other_than_the_dialled_one_fails_identity(self):
        """--peer NODEID@...: a peer proving another node id gets ERROR identity (RFC 7.5)."""
        peer_key = iot.NodeKey()
        sock, run = self.run_session(lambda f: hello_ack(peer_key) if f[0] == iot.HELLO else b"", peer_key,
                                     expected_node_id=b"\x00" * 32)
        self.assertRaises(iot.ProtocolFailure, run)
        self.assertEqual(iot.decode_error(sock.sent[-1][3])[0], "identity")

    def test_error_answering_the_invoke_is_a_refusal(self):
        """ERROR busy answering the INVOKE raises Refused (the caller tries the next peer)."""
        peer_key = iot.NodeKey()

        def respond(f):
            if f[0] == iot.HELLO:
                return hello_ack(peer_key)
            if f[0] == iot.INVOKE:
                return frame(m.Error(code=0x0d, ref_request_id=f[2], text="full"), request_id=f[2], flags=1)
            return b""

        sock, run = self.run_session(respond, peer_key)
        e = self.assertRaises(iot.Refused, run)
        self.assertEqual(e.code, "busy")

    def test_wrong_magic_closes_without_error(self):
        """A HELLO_ACK in another network's framing: the connection is closed and no ERROR is sent (RFC 4.2)."""
        peer_key = iot.NodeKey()
        other = encode_frame(iot.network_magic("main"), m.Ping(nonce=1), request_id=1)
        sock, run = self.run_session(lambda f: other if f[0] == iot.HELLO else b"", peer_key)
        self.assertRaises(iot.ProtocolFailure, run)
        self.assertEqual([t for t, _, _, _ in sock.sent], [iot.HELLO])
        self.assertTrue(sock.closed)

    def test_unknown_critical_tlv_in_result_is_not_acted_on(self):
        """A RESULT with an unknown critical TLV is not used: ERROR unsupported, and the call counts as unanswered."""
        peer_key = iot.NodeKey()

        def respond(f):
            if f[0] == iot.HELLO:
                return hello_ack(peer_key)
            if f[0] == iot.INVOKE:
                r = m.Result(status=0, queue_us=0, fetch_us=0, boot_us=0, exec_us=0, output=b"x", log=b"")
                body = encode_frame(MAGIC, r, request_id=f[2], flags=1)[16:] + struct.pack(">HH", 0xFF00, 0)
                return iot.HEADER.pack(MAGIC, 1, iot.RESULT, 1, f[2], len(body)) + body
            return b""

        sock, run = self.run_session(respond, peer_key)
        self.assertRaises(iot.NoAnswer, run)
        self.assertIn(("unsupported", 0), [iot.decode_error(b)[:2] for t, _, _, b in sock.sent if t == iot.ERROR])


class FallbackTests(SynchronousTestCase):
    """Which failures send the call to the next peer (main() with call_peer replaced)."""

    def run_main(self, outcomes):
        tried = []

        def fake_call(target, *a, **kw):
            tried.append(target.port)
            outcome = outcomes[len(tried) - 1]
            if isinstance(outcome, Exception):
                raise outcome
            return dict(outcome, peer=f"{target.host}:{target.port}", node_id="ab" * 32, srv_target=target.name,
                        tcp_ms=0, tls_ms=0, hello_ms=0, invoke_ms=0, queue_us=0, fetch_us=0, boot_us=0, exec_us=0,
                        output=b"out", log=b"", ext=[])

        self.patch(iot, "call_peer", fake_call)
        for name in ("stdout", "stderr"):
            sink = open(os.devnull, "w")
            self.addCleanup(sink.close)
            self.patch(sys, name, sink)
        argv = [FID_TEXT, "-q"] + [a for i in range(len(outcomes)) for a in ("--peer", f"127.0.0.1:{7001 + i}")]
        return iot.main(argv), tried

    def test_refusals_before_the_call_started_go_to_the_next_peer(self):
        """ERROR busy, a lost connection and RESULT busy/not_found each move on to the next peer; ok stops there."""
        code, tried = self.run_main([iot.Refused("busy", "full"), ConnectionRefusedError(), {"status": "busy"},
                                     {"status": "not_found"}, {"status": "ok"}, {"status": "ok"}])
        self.assertEqual((code, tried), (iot.EXIT_OK, [7001, 7002, 7003, 7004, 7005]))

    def test_a_call_that_may_have_run_is_not_sent_again(self):
        """A function error, no answer in time, or an input over the host's cap ends the run at that peer."""
        for first, status in (({"status": "error"}, iot.EXIT_FAILED), (iot.NoAnswer("late"), iot.EXIT_FAILED),
                              (iot.Refused("too_large", "1 MiB"), iot.EXIT_FAILED)):
            code, tried = self.run_main([first, {"status": "ok"}])
            self.assertEqual((code, tried), (status, [7001]), first)
