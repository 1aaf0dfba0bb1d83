"""
The .orb DNS on a live `twistd orb-tracker --dns` (loopback, real
daemons): every record type over UDP and TCP, asked with `dig` and with
dnspython; bad input on real sockets; `orb resolve`; a direct call chosen
by SRV; and a peer that joins with nothing but `--dns-seed`.
"""

import json
import os
import shutil
import socket
import struct

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from twisted.internet import defer, reactor, threads, utils
from twisted.trial.unittest import TestCase

from orb.dns import client as dns_client
from orb.dns import names as nm
from orb.protocol import fid as fidmod
from tests._daemons import DaemonTestMixin, eventually, sleep

DIG = shutil.which("dig")


def read_ports(daemon):
    with open(os.path.join(daemon.data_dir, "ports.json")) as f:
        return json.load(f)


class LiveDNSMixin(DaemonTestMixin):
    @defer.inlineCallbacks
    def dns_tracker(self, name="t1", *args):
        t = yield self.start_tracker(name, "--dns", "127.0.0.1:0", "--challenge-interval", "2", *args)
        ports = yield eventually(lambda: read_ports(t).get("dns") and read_ports(t), timeout_s=10,
                                 what="the DNS port in ports.json")
        t.info = ports
        t.dns = ("127.0.0.1", ports["dns"])
        return t


    @defer.inlineCallbacks
    def deployed(self, tracker, peers=3):
        for i in range(1, peers + 1):
            yield self.start_peer(f"p{i}", "--listen", f"tcp:0:interface=127.{i}.0.1", "--tracker",
                                  tracker.wire_text)
        yield sleep(2)
        path = os.path.join(self.net.base_dir, "adder")
        code, _, err = yield self.orb("keygen")
        self.assertEqual(code, 0, err)
        code, _, err = yield self.orb("init", path, "--template", "python", "--name", "adder")
        self.assertEqual(code, 0, err)
        code, out, err = yield self.orb("deploy", path, "--tracker", tracker.wire_text, "--api",
                                        f"http://127.0.0.1:{tracker.info['http']}", "--json")
        self.assertEqual(code, 0, out + err)
        return json.loads(out)["fid"]

    def ask(self, server, name, rdtype, tcp=False, **kw):
        """dnspython, in a thread: the parsed answer over UDP (no retry on TC) or TCP."""
        query = dns.message.make_query(name, rdtype, **kw)
        how = dns.query.tcp if tcp else dns.query.udp
        return threads.deferToThread(how, query, server[0], port=server[1], timeout=5)

    @defer.inlineCallbacks
    def dig(self, server, *args):
        """`dig @HOST -p PORT ARGS +short`: the output lines."""
        out, err, code = yield utils.getProcessOutputAndValue(
            DIG, [f"@{server[0]}", "-p", str(server[1]), "+short", "+tries=1", "+time=5", *args])
        self.assertEqual(code, 0, err)
        return [line for line in out.decode().splitlines() if line and not line.startswith(";")]

    @defer.inlineCallbacks
    def dig_status(self, server, *args):
        out, _, _ = yield utils.getProcessOutputAndValue(
            DIG, [f"@{server[0]}", "-p", str(server[1]), "+tries=1", "+time=5", *args])
        text = out.decode()
        return text.split("status: ", 1)[1].split(",", 1)[0] if "status: " in text else text


def rrs(answer, rdtype, section="answer"):
    return [r for s in getattr(answer, section) if s.rdtype == dns.rdatatype.from_text(rdtype) for r in s]


class LiveRecordTests(LiveDNSMixin, TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def test_every_record_over_udp_and_tcp(self):
        """Every record over UDP and TCP (dig, dnspython), orb resolve, and a direct call by SRV past a dead target."""
        if DIG is None:
            print("dig is not installed (apt-get install dnsutils): the dig half of this test cannot run")
        t = yield self.dns_tracker()
        fid = yield self.deployed(t)
        server = t.dns
        name = f"{fid}.orb"

        @defer.inlineCallbacks
        def three_srv():
            a = yield self.ask(server, f"_orb._tcp.{name}", "SRV", tcp=True)
            return len(rrs(a, "SRV")) == 3 and a

        yield eventually(three_srv, timeout_s=30, what="3 SRV records (reachable, verified replicas)")
        for tcp in (False, True):
            a = yield self.ask(server, name, "A", tcp=tcp)
            self.assertEqual([r.address for r in rrs(a, "A")], ["127.0.0.1"])
            self.assertTrue(a.flags & dns.flags.AA)
            (txt,) = rrs((yield self.ask(server, name, "TXT", tcp=tcp)), "TXT")
            fields = dict(s.decode().split("=", 1) for s in txt.strings)
            self.assertEqual((fields["v"], fields["name"], fields["gateway"]),
                             ("orb1", "adder", f"http://127.0.0.1:{t.info['http']}/f/{fid}"))
            srv_answer = yield self.ask(server, f"_orb._tcp.{name}", "SRV", tcp=tcp, use_edns=0, payload=1232)
            srv = rrs(srv_answer, "SRV")
            self.assertEqual(len(srv), 3)
            glue = {str(s.name): [r.address for r in s] for s in srv_answer.additional if s.rdtype == dns.rdatatype.A}
            code, info = yield t.get_json(f"/api/v1/functions/{fid}")
            hosts = {h["node_id"]: h["address"] for h in info["hosts"] if h["verified"] and not h["is_tracker"]}
            for r in srv:
                node = nm.classify(str(r.target)).node_id.hex()
                self.assertIn(node, hosts)
                self.assertEqual((glue[str(r.target)], r.port), ([hosts[node]["ip"]], hosts[node]["port"]))
            peer_a = yield self.ask(server, str(srv[0].target), "A", tcp=tcp)
            self.assertEqual(len(rrs(peer_a, "A")), 1)
            seed = yield self.ask(server, "seed.orb", "SRV", tcp=tcp)
            self.assertEqual([(r.port, str(r.target)) for r in rrs(seed, "SRV")],
                             [(t.info["wire"], nm.tracker_name(bytes.fromhex(t.node_id)) + ".")])
            self.assertEqual([r.address for r in rrs((yield self.ask(server, "seed.orb", "A", tcp=tcp)), "A")],
                             ["127.0.0.1"])
            missing = yield self.ask(server, f"{fidmod.to_text(fidmod.fid_for(b'none'))}.orb", "A", tcp=tcp)
            self.assertEqual(missing.rcode(), dns.rcode.NXDOMAIN)
            self.assertEqual(len(rrs(missing, "SOA", "authority")), 1)
            refused = yield self.ask(server, "example.com", "A", tcp=tcp)
            self.assertEqual(refused.rcode(), dns.rcode.REFUSED)

        if DIG is not None:
            for transport in ("+notcp", "+tcp"):
                self.assertEqual((yield self.dig(server, transport, name, "A")), ["127.0.0.1"])
                txt = yield self.dig(server, transport, name, "TXT")
                self.assertIn('"v=orb1"', txt[0])
                srv = yield self.dig(server, transport, f"_orb._tcp.{name}", "SRV")
                self.assertEqual(len(srv), 3)
                self.assertTrue(all(line.split()[3].endswith(".peer.orb.") for line in srv))
                self.assertEqual((yield self.dig(server, transport, "seed.orb", "SRV"))[0].split()[2],
                                 str(t.info["wire"]))
                self.assertEqual((yield self.dig_status(server, transport, "nothing.orb")), "NXDOMAIN")
                self.assertEqual((yield self.dig_status(server, transport, "example.com")), "REFUSED")
                soa = yield self.dig(server, transport, "orb", "SOA")
                self.assertTrue(soa[0].startswith("seed.orb. hostmaster.seed.orb. "))

        # orb resolve: the table and --json
        code, out, err = yield self.orb("resolve", name, "--dns", f"127.0.0.1:{server[1]}", "--json")
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        self.assertEqual((doc["a"], len(doc["srv"]), doc["txt"][0][0]), (["127.0.0.1"], 3, "v=orb1"))
        self.assertEqual(doc["srv"][0]["node_id"], nm.classify(doc["srv"][0]["target"]).node_id.hex())
        code, out, err = yield self.orb("resolve", name, "--dns", f"127.0.0.1:{server[1]}")
        self.assertEqual(code, 0, err)
        for word in ("SRV", "TXT", "v=orb1", ".peer.orb"):
            self.assertIn(word, out)
        code, out, err = yield self.orb("resolve", "nothing.orb", "--dns", f"127.0.0.1:{server[1]}")
        self.assertEqual(code, 10, out + err)

        # A direct call: SRV's first replica, and past a dead target put in front of the list.
        from orb.cli._direct import direct_call

        result = yield direct_call(reactor, server, fid, b'{"a": 40, "b": 2}', 20, self.network)
        self.assertEqual((result["status"], json.loads(result["output"]), result["route"]), ("OK", {"sum": 42}, "direct"))
        listed = yield dns_client.lookup_srv(reactor, server, f"_orb._tcp.{name}")
        self.assertIn(result["replica"], {t.node_id.hex() for t in listed})
        self.assertEqual(result["tried"], [result["target"]])  # the first target SRV gave took the call
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))
        dead_port = dead.getsockname()[1]
        dead.close()

        @defer.inlineCallbacks
        def with_dead_first(reactor_, server_, srv_name):
            targets = yield dns_client.lookup_srv(reactor_, server_, srv_name)
            ghost = dns_client.Target(0, 1, dead_port, "ghost.peer.orb", ("127.0.0.1",), b"\x01" * 32)
            return [ghost] + targets

        result = yield direct_call(reactor, server, fid, b'{"a": 1, "b": 2}', 20, self.network, lookup=with_dead_first)
        self.assertEqual((result["status"], json.loads(result["output"])), ("OK", {"sum": 3}))
        self.assertEqual(result["tried"][0], "ghost.peer.orb")
        # The same through the command: orb invoke --direct --json names the replica SRV chose.
        code, out, err = yield self.orb("invoke", fid, "--direct", "--dns", f"127.0.0.1:{server[1]}",
                                        "--network", self.network, "--json", "--data", '{"a": 2, "b": 5}')
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        self.assertEqual((json.loads(doc["output"]), doc["route"]), ({"sum": 7}, "direct"))
        self.assertIn(doc["replica"], {t.node_id.hex() for t in listed})
        from orb.cli._ui import EXIT_NOT_FOUND, CommandError

        unknown = fidmod.to_text(fidmod.fid_for(b"none"))
        e = yield self.assertFailure(direct_call(reactor, server, unknown, b"", 5, self.network), CommandError)
        self.assertEqual(e.exit_code, EXIT_NOT_FOUND)
        self.assertEqual(t.tracebacks, 0, t.text[-3000:])


class LiveBadInputTests(LiveDNSMixin, TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_bad_input_on_real_sockets_leaves_the_server_answering(self):
        """Garbage, cut datagrams, 100 questions, short TCP segments: dropped/FORMERR/closed, and answers go on."""
        t = yield self.dns_tracker()
        server = t.dns

        @defer.inlineCallbacks
        def still_answers():
            for tcp in (False, True):
                a = yield self.ask(server, "seed.orb", "A", tcp=tcp)
                self.assertEqual([r.address for r in rrs(a, "A")], ["127.0.0.1"])

        def udp_exchange(data, wait_s):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(wait_s)
            try:
                s.sendto(data, server)
                return s.recv(65535)
            except socket.timeout:
                return None
            finally:
                s.close()

        good = dns.message.make_query("seed.orb", "A").to_wire()
        header = struct.pack(">HHHHHH", 0x4242, 0x0100, 100, 0, 0, 0)
        for data in (b"\x00", b"\xff" * 11):  # shorter than a header: dropped
            self.assertIsNone((yield threads.deferToThread(udp_exchange, data, 1.0)), data)
            yield still_answers()
        for data in (good[:-3], good + b"trailing", header + good[12:] * 100):  # a header: FORMERR
            reply = yield threads.deferToThread(udp_exchange, data, 10.0)
            self.assertEqual(dns.message.from_wire(reply).rcode(), dns.rcode.FORMERR, data)
            yield still_answers()
        for _ in range(20):  # noise: dropped or FORMERR, never anything else
            reply = yield threads.deferToThread(udp_exchange, os.urandom(300), 0.5)
            if reply is not None:
                self.assertEqual(reply[3] & 0x0F, dns.rcode.FORMERR)
        yield still_answers()
        a = yield self.ask(server, "not_base32.orb", "A")
        self.assertEqual(a.rcode(), dns.rcode.NXDOMAIN)
        yield still_answers()

        # TCP: a one-byte segment and a frame cut short, each left hanging on its own connection.
        hanging = []
        for data in (b"\x00", struct.pack(">H", len(good)) + good[:10]):
            s = socket.create_connection(server, timeout=2)
            s.sendall(data)
            hanging.append(s)
        yield still_answers()

        def closed_by_server(s):
            s.settimeout(30)
            try:
                return s.recv(10)
            finally:
                s.close()

        for s in hanging:  # the server closes each once it has waited TCP_IDLE_S for the rest
            self.assertEqual((yield threads.deferToThread(closed_by_server, s)), b"")
        yield still_answers()
        self.assertEqual(t.tracebacks, 0, t.text[-3000:])

    @defer.inlineCallbacks
    def test_dns_options_are_checked(self):
        """--dns-ttl without --dns, and --dns on a port in use, each stop the tracker with one line."""
        d = self.daemon("orb-tracker", "bad1", "--listen", "tcp:0:interface=127.0.0.1", "--dns-ttl", "5")
        with self.assertRaises(Exception):
            yield d.start()
        self.assertIn("--dns-ttl needs --dns", d.text)
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        busy.bind(("127.0.0.1", 0))
        self.addCleanup(busy.close)
        d = self.daemon("orb-tracker", "bad2", "--listen", "tcp:0:interface=127.0.0.1", "--dns",
                        f"127.0.0.1:{busy.getsockname()[1]}")
        with self.assertRaises(Exception):
            yield d.start()
        self.assertIn("/udp", d.text)


class LiveSeedTests(LiveDNSMixin, TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_a_peer_joins_with_only_dns_seed(self):
        """A peer with an empty address book, no --tracker and only --dns-seed finds the tracker by seed.orb."""
        t = yield self.dns_tracker()
        p = yield self.start_peer("p1", "--dns-seed", f"127.0.0.1:{t.dns[1]}")

        @defer.inlineCallbacks
        def joined():
            code, peers = yield t.get_json("/api/v1/peers")
            return code == 200 and p.node_id in {x["node_id"] for x in peers["peers"]}

        yield eventually(joined, timeout_s=30, what="the seeded peer in the tracker's registry")
        self.assertEqual(p.tracebacks, 0, p.text[-3000:])
