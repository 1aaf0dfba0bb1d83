"""
The .orb DNS zone without sockets: the authority's answers from a real
registry, and the server's handling of EDNS0, truncation, bad input and
rate limits, with queries and answers built and read by dnspython.
"""

import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from orb.dns import names as nm
from orb.dns.authority import MAX_SRV_RECORDS, OrbAuthority, srv_priority
from orb.dns.server import (
    CACHE_S, MAX_TCP_CONNECTIONS, TCP_IDLE_S, OrbDNSServerFactory, RateLimiter, StreamFactory,
)
from orb.protocol import fid as fidmod
from orb.tracker.registry import Registry
from orb.tracker.wiring import dns_replicas
from tests import _records as rec
from tests._names import FakeNames, owner_label

NOW = 1_000_000
GATEWAY = ("10.1.0.1", 7480)


class FakeUDP:
    def __init__(self):
        self.sent = []

    def write(self, data, addr):
        self.sent.append((data, addr))


def fid_of(label):
    return fidmod.to_text(fidmod.fid_for(f"package {label}".encode()))


class Zone:
    """A registry with this tracker, one function and its replicas, served by a factory."""

    def __init__(self, replicas=3, rrl=None, names=None):
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.key = rec.key("tracker")
        self.reg = Registry(self.clock, self.key)
        self.reg.publish_self([("10.1.0.1", 7400)])
        self.owner = rec.key("owner")
        self.fid = fid_of(1)
        self.reg.upsert_function(rec.function_record(self.owner, self.fid, time=NOW, name="adder"))
        self.peers = []
        for i in range(replicas):
            self.add_replica(i, rtt_ms=10 * (i + 1))
        self.place()
        reg = self.reg
        self.authority = OrbAuthority(reg, lambda fid, limit: dns_replicas(reg, fid, limit), ttl_s=10, gateways=lambda: [GATEWAY],
                                      gateway_url=lambda fid: f"http://10.1.0.1:7480/f/{fid}", names=names)
        self.factory = OrbDNSServerFactory(self.authority, self.clock,
                                           rate_limiter=rrl or RateLimiter(self.clock, 0))
        self.udp = FakeUDP()

    def add_replica(self, i, rtt_ms=None, load_permille=0, reachability="reachable", verified=True):
        peer_key = rec.key(f"peer-{i}")
        rec.home_peer(self.reg, peer_key, addresses=((f"10.{2 + i}.0.1", 7401),), reachability=reachability,
                      rtt_ms=rtt_ms, load_permille=load_permille, functions={self.fid: 1})
        self.peers.append((peer_key.node_id, verified))
        return peer_key.node_id

    def place(self):
        self.reg.publish_placement(self.fid, [(node, NOW if verified else 0) for node, verified in self.peers])

    def ask_udp(self, name, rdtype="A", addr=("192.0.2.1", 5353), **kw):
        """Send a query over UDP; the parsed answer, or None when nothing came back."""
        query = dns.message.make_query(name, rdtype, **kw)
        return self.send_udp(query.to_wire(), addr, query)

    def send_udp(self, data, addr=("192.0.2.1", 5353), query=None):
        before = len(self.udp.sent)
        self.factory.datagram_received(data, self.udp, addr)
        if len(self.udp.sent) == before:
            return None
        reply, to = self.udp.sent[-1]
        assert to == addr
        return dns.message.from_wire(reply, ignore_trailing=False) if query is None else \
            dns.message.from_wire(reply)


def rrset(answer, rdtype, section="answer"):
    return [rr for rrs in getattr(answer, section) if rrs.rdtype == dns.rdatatype.from_text(rdtype) for rr in rrs]


class NameTests(SynchronousTestCase):
    def test_names_are_classified(self):
        """Every form of name in the zone is told apart, case-insensitively; anything else in .orb is malformed."""
        fid = fid_of(1)
        node = rec.key("n").node_id
        label = nm.key_label(node)
        owner = owner_label(rec.key("owner").public_bytes)
        cases = {
            "orb.": nm.Kind.APEX, "seed.orb": nm.Kind.SEED, "_orb._tcp.seed.orb.": nm.Kind.SEED_SRV,
            f"{fid}.orb": nm.Kind.FUNCTION, f"{fid.upper()}.ORB.": nm.Kind.FUNCTION,
            f"_orb._tcp.{fid}.orb": nm.Kind.FUNCTION_SRV, f"{label}.peer.orb": nm.Kind.PEER,
            f"{label}.tracker.orb": nm.Kind.TRACKER, f"adder.{owner}.orb": nm.Kind.NAMED,
            f"_orb._tcp.adder.{owner}.orb": nm.Kind.NAMED_SRV, f"{owner}.orb": nm.Kind.EMPTY,
            f"_tcp.adder.{owner}.orb": nm.Kind.EMPTY, f"adder.{label}.orb": nm.Kind.MALFORMED,
            f"-x.{owner}.orb": nm.Kind.MALFORMED,
            "peer.orb": nm.Kind.EMPTY, "example.com.": nm.Kind.OUTSIDE, "orb.example.": nm.Kind.OUTSIDE,
            "hello.orb": nm.Kind.MALFORMED, f"{fid[:-1]}1.orb": nm.Kind.MALFORMED, "a.b.c.orb": nm.Kind.MALFORMED,
            f"{label[:-1]}.peer.orb": nm.Kind.MALFORMED, "x_y.orb": nm.Kind.MALFORMED,
        }
        for name, kind in cases.items():
            self.assertEqual(nm.classify(name).kind, kind, name)
        self.assertEqual(nm.classify(f"{label}.peer.orb").node_id, node)
        self.assertEqual(nm.classify(b"\xff.orb").kind, nm.Kind.MALFORMED)


class AnswerTests(SynchronousTestCase):
    def test_function_a_is_the_gateway(self):
        """<fid>.orb A answers the gateway's address, authoritatively, with the configured TTL."""
        z = Zone()
        answer = z.ask_udp(f"{z.fid}.orb", "A")
        self.assertEqual(answer.rcode(), dns.rcode.NOERROR)
        self.assertTrue(answer.flags & dns.flags.AA)
        self.assertEqual([rr.address for rr in rrset(answer, "A")], ["10.1.0.1"])
        self.assertEqual(answer.answer[0].ttl, 10)
        self.assertEqual(rrset(z.ask_udp(f"{z.fid}.orb", "AAAA"), "AAAA"), [])

    def test_function_txt_describes_it(self):
        """<fid>.orb TXT carries v=orb1, name, version, owner, pure, idempotent and the gateway URL."""
        z = Zone()
        (txt,) = rrset(z.ask_udp(f"{z.fid}.orb", "TXT"), "TXT")
        fields = dict(s.decode().split("=", 1) for s in txt.strings)
        self.assertEqual(fields, {"v": "orb1", "name": "adder", "version": "1.0.0", "owner": z.owner.public_bytes.hex(),
                                  "pure": "0", "idempotent": "0", "gateway": f"http://10.1.0.1:7480/f/{z.fid}"})

    def test_srv_lists_direct_replicas_best_first_with_addresses(self):
        """_orb._tcp.<fid>.orb SRV lists verified reachable replicas by the ranking, their A in additional."""
        z = Zone(replicas=0)
        slow = z.add_replica(0, rtt_ms=200)
        fast = z.add_replica(1, rtt_ms=5)
        busy = z.add_replica(2, rtt_ms=5, load_permille=900)
        z.add_replica(3, rtt_ms=1, reachability="relayed")  # not reachable directly
        z.add_replica(4, rtt_ms=1, verified=False)  # placed, not verified yet
        unmeasured = z.add_replica(5)
        z.place()
        answer = z.ask_udp(f"_orb._tcp.{z.fid}.orb", "SRV", use_edns=0, payload=1232)
        srv = rrset(answer, "SRV")
        self.assertEqual([str(r.target) for r in srv], [nm.peer_name(n) + "." for n in (fast, busy, slow, unmeasured)])
        self.assertEqual([r.port for r in srv], [7401] * 4)
        priorities = [r.priority for r in srv]
        self.assertEqual(priorities, sorted(priorities))
        self.assertEqual(srv[0].priority, srv_priority(5, 0))
        self.assertGreater(srv[0].weight, srv[1].weight)  # the idle one is weighted up within the band
        glue = {str(rrs.name): [r.address for r in rrs] for rrs in answer.additional if rrs.rdtype == dns.rdatatype.A}
        self.assertEqual(glue[nm.peer_name(fast) + "."], ["10.3.0.1"])
        a = z.ask_udp(nm.peer_name(fast), "A")
        self.assertEqual([r.address for r in rrset(a, "A")], ["10.3.0.1"])

    def test_ipv6_hosts_get_aaaa(self):
        """A replica and a tracker on IPv6 are listed with AAAA records, in the SRV glue and by name."""
        z = Zone(replicas=0)
        peer_key = rec.key("v6-peer")
        rec.home_peer(z.reg, peer_key, addresses=(("2001:db8::7", 7401),), reachability="reachable", rtt_ms=3,
                      functions={z.fid: 1})
        z.peers.append((peer_key.node_id, True))
        z.place()
        answer = z.ask_udp(f"_orb._tcp.{z.fid}.orb", "SRV")
        self.assertEqual([str(r.target) for r in rrset(answer, "SRV")], [nm.peer_name(peer_key.node_id) + "."])
        self.assertEqual([r.address for r in rrset(answer, "AAAA", "additional")], ["2001:db8::7"])
        by_name = z.ask_udp(nm.peer_name(peer_key.node_id), "AAAA")
        self.assertEqual([r.address for r in rrset(by_name, "AAAA")], ["2001:db8::7"])
        self.assertEqual(rrset(z.ask_udp(nm.peer_name(peer_key.node_id), "A"), "A"), [])
        rec.remote_tracker(z.reg, rec.key("v6-tracker"), addresses=(("2001:db8::100", 7400),))
        self.assertEqual([r.address for r in rrset(z.ask_udp("seed.orb", "AAAA"), "AAAA")], ["2001:db8::100"])

    def test_seed_lists_live_trackers(self):
        """seed.orb A and SRV list live trackers (this one and federated ones) with wire ports, stale ones not."""
        z = Zone()
        other = rec.key("other-tracker")
        rec.remote_tracker(z.reg, other, addresses=(("10.9.0.1", 7500),))
        a = z.ask_udp("seed.orb", "A")
        self.assertEqual(sorted(r.address for r in rrset(a, "A")), ["10.1.0.1", "10.9.0.1"])
        for name in ("seed.orb", "_orb._tcp.seed.orb"):
            srv = rrset(z.ask_udp(name, "SRV"), "SRV")
            self.assertEqual(sorted((str(r.target), r.port) for r in srv),
                             sorted([(nm.tracker_name(z.key.node_id) + ".", 7400),
                                     (nm.tracker_name(other.node_id) + ".", 7500)]))
        t = z.ask_udp(nm.tracker_name(other.node_id), "A")
        self.assertEqual([r.address for r in rrset(t, "A")], ["10.9.0.1"])
        z.clock.advance(z.reg.tracker_ttl_s + 1)  # the other tracker stops re-signing its record
        z.reg.publish_self([("10.1.0.1", 7400)])
        z.reg.expire()
        self.assertEqual([r.address for r in rrset(z.ask_udp("seed.orb", "A"), "A")], ["10.1.0.1"])
        self.assertEqual(z.ask_udp(nm.tracker_name(other.node_id), "A").rcode(), dns.rcode.NXDOMAIN)

    def test_unknown_and_malformed_names_are_nxdomain_with_soa(self):
        """An unknown fid, a malformed label and an unknown peer are NXDOMAIN with the zone's SOA in authority."""
        z = Zone()
        for name in (f"{fid_of(99)}.orb", "not-base32!.orb", "hello.orb", f"_orb._tcp.{fid_of(99)}.orb",
                     f"{nm.key_label(rec.key('nobody').node_id)}.peer.orb"):
            answer = z.ask_udp(name, "A")
            self.assertEqual(answer.rcode(), dns.rcode.NXDOMAIN, name)
            (soa,) = rrset(answer, "SOA", "authority")
            self.assertEqual(soa.minimum, 10)
            self.assertEqual(answer.authority[0].ttl, 10)

    def test_a_type_a_name_lacks_is_nodata(self):
        """An existing name asked for a type it lacks is NOERROR with no answer and the SOA (NODATA)."""
        z = Zone()
        answer = z.ask_udp(f"{z.fid}.orb", "MX")
        self.assertEqual((answer.rcode(), answer.answer), (dns.rcode.NOERROR, []))
        self.assertEqual(len(rrset(answer, "SOA", "authority")), 1)

    def test_outside_the_zone_is_refused(self):
        """A name outside .orb is REFUSED when no forwarder is set, and so is a zone transfer of .orb."""
        z = Zone()
        self.assertEqual(z.ask_udp("example.com", "A").rcode(), dns.rcode.REFUSED)
        self.assertEqual(z.ask_udp("orb", "AXFR").rcode(), dns.rcode.REFUSED)

    def test_names_are_case_insensitive_and_echoed(self):
        """A name asked in mixed case (0x20) is answered, with the question echoed as asked."""
        z = Zone()
        name = f"{z.fid[:20].upper()}{z.fid[20:]}.oRb."
        answer = z.ask_udp(name, "A")
        self.assertEqual([r.address for r in rrset(answer, "A")], ["10.1.0.1"])
        self.assertEqual(answer.question[0].name.to_text(), name)

    def test_soa_serial_follows_registry_changes(self):
        """The SOA serial grows when the registry changes, and cached answers follow the change at once."""
        z = Zone()
        serial = rrset(z.ask_udp("orb", "SOA"), "SOA")[0].serial
        new_fid = fid_of(2)
        self.assertEqual(z.ask_udp(f"{new_fid}.orb").rcode(), dns.rcode.NXDOMAIN)
        z.reg.upsert_function(rec.function_record(z.owner, new_fid, time=NOW))
        self.assertGreater(rrset(z.ask_udp("orb", "SOA"), "SOA")[0].serial, serial)
        self.assertEqual(z.ask_udp(f"{new_fid}.orb").rcode(), dns.rcode.NOERROR)



class NamedTests(SynchronousTestCase):
    """<name>.<owner>.orb and deprecation in the zone, over a names core set by the test (tests._names)."""

    def setUp(self):
        self.z = Zone()
        self.names = FakeNames(self.z.clock)
        self.z.authority.names = self.names
        self.owner = self.z.owner.public_bytes
        self.label = owner_label(self.owner)
        self.new_fid = fid_of(2)
        self.z.reg.upsert_function(rec.function_record(self.z.owner, self.new_fid, time=NOW, name="adder"))

    def ask(self, name, rdtype):
        self.z.factory._cache.clear()
        return self.z.ask_udp(name, rdtype, use_edns=0, payload=1232)

    def test_a_name_is_a_cname_to_the_fid_it_serves_with_the_target_records(self):
        """<name>.<owner>.orb A is a CNAME to <fid>.orb followed by its A records, as resolvers expect."""
        self.names.set_name(self.owner, "adder", self.z.fid)
        answer = self.ask(f"adder.{self.label}.orb", "A")
        self.assertEqual(answer.rcode(), dns.rcode.NOERROR)
        self.assertTrue(answer.flags & dns.flags.AA)
        self.assertEqual([str(r.target) for r in rrset(answer, "CNAME")], [f"{self.z.fid}.orb."])
        self.assertEqual([r.address for r in rrset(answer, "A")], ["10.1.0.1"])
        self.assertEqual([str(rrs.name) for rrs in answer.answer], [f"adder.{self.label}.orb.", f"{self.z.fid}.orb."])
        only = self.ask(f"adder.{self.label}.orb", "CNAME")
        self.assertEqual([rrs.rdtype for rrs in only.answer], [dns.rdatatype.CNAME])

    def test_a_name_txt_carries_the_targets_txt(self):
        """<name>.<owner>.orb TXT gives the CNAME and the target's TXT (name, version, owner...)."""
        self.names.set_name(self.owner, "adder", self.z.fid)
        (txt,) = rrset(self.ask(f"ADDER.{self.label.upper()}.orb", "TXT"), "TXT")
        self.assertIn(b"v=orb1", txt.strings)

    def test_a_name_srv_follows_to_the_fids_replicas(self):
        """_orb._tcp.<name>.<owner>.orb SRV is a CNAME to _orb._tcp.<fid>.orb and the replicas, with glue."""
        self.names.set_name(self.owner, "adder", self.z.fid)
        answer = self.ask(f"_orb._tcp.adder.{self.label}.orb", "SRV")
        self.assertEqual([str(r.target) for r in rrset(answer, "CNAME")], [f"_orb._tcp.{self.z.fid}.orb."])
        self.assertEqual(len(rrset(answer, "SRV")), 3)
        self.assertEqual(len(rrset(answer, "A", "additional")), 3)

    def test_an_update_moves_the_cname(self):
        """A NAME with a higher seq pointing at a new fid moves the CNAME to it."""
        self.names.set_name(self.owner, "adder", self.z.fid)
        self.names.set_name(self.owner, "adder", self.new_fid)
        answer = self.ask(f"adder.{self.label}.orb", "A")
        self.assertEqual([str(r.target) for r in rrset(answer, "CNAME")], [f"{self.new_fid}.orb."])

    def test_a_name_serves_the_newest_version_not_deprecated(self):
        """When the newest version is deprecated, the name points at the newest one that is not."""
        self.names.set_name(self.owner, "adder", self.z.fid)
        self.names.set_name(self.owner, "adder", self.new_fid)
        self.names.deprecate(self.new_fid, sunset=NOW + 60)
        answer = self.ask(f"adder.{self.label}.orb", "A")
        self.assertEqual([str(r.target) for r in rrset(answer, "CNAME")], [f"{self.z.fid}.orb."])

    def test_unknown_names_and_names_with_nothing_to_serve_are_nxdomain(self):
        """An unknown name, a name of another owner, and a name whose every version is gone: NXDOMAIN."""
        other = owner_label(rec.key("someone else").public_bytes)
        self.names.set_name(self.owner, "adder", self.z.fid)
        self.names.set_name(self.owner, "old", self.new_fid)
        self.names.deprecate(self.new_fid, sunset=NOW + 5)
        self.z.clock.advance(6)
        for name in (f"other.{self.label}.orb", f"adder.{other}.orb", f"old.{self.label}.orb",
                     f"_orb._tcp.old.{self.label}.orb", f"_tcp.old.{self.label}.orb"):
            answer = self.ask(name, "A")
            self.assertEqual(answer.rcode(), dns.rcode.NXDOMAIN, name)
            self.assertEqual(len(rrset(answer, "SOA", "authority")), 1, name)

    def test_without_a_names_core_every_name_is_nxdomain(self):
        """A tracker without names answers NXDOMAIN for <name>.<owner>.orb, and the owner label is NODATA."""
        self.z.authority.names = None
        self.assertEqual(self.ask(f"adder.{self.label}.orb", "A").rcode(), dns.rcode.NXDOMAIN)
        empty = self.ask(f"{self.label}.orb", "A")
        self.assertEqual((empty.rcode(), empty.answer), (dns.rcode.NOERROR, []))

    def test_a_deprecated_fid_txt_says_so(self):
        """<fid>.orb TXT of a deprecated fid adds deprecated=1, successor=<fid> and sunset=<unix>."""
        self.names.deprecate(self.z.fid, successor=self.new_fid, sunset=NOW + 3600)
        (txt,) = rrset(self.ask(f"{self.z.fid}.orb", "TXT"), "TXT")
        fields = dict(s.decode().split("=", 1) for s in txt.strings)
        self.assertEqual((fields["deprecated"], fields["successor"], fields["sunset"]),
                         ("1", self.new_fid, str(NOW + 3600)))
        (fresh,) = rrset(self.ask(f"{self.new_fid}.orb", "TXT"), "TXT")
        self.assertNotIn("deprecated", dict(s.decode().split("=", 1) for s in fresh.strings))

    def test_a_deprecation_without_successor_or_sunset_says_only_deprecated(self):
        """A bare deprecation adds deprecated=1 and no successor or sunset."""
        self.names.deprecate(self.z.fid)
        (txt,) = rrset(self.ask(f"{self.z.fid}.orb", "TXT"), "TXT")
        keys = [s.decode().split("=", 1)[0] for s in txt.strings]
        self.assertEqual(keys[-1], "deprecated")
        self.assertNotIn("successor", keys)
        self.assertNotIn("sunset", keys)

    def test_a_fid_past_its_sunset_is_nxdomain(self):
        """Past the sunset, <fid>.orb and _orb._tcp.<fid>.orb answer NXDOMAIN; before it, they answer."""
        self.names.deprecate(self.z.fid, sunset=NOW + 10)
        self.assertEqual(self.ask(f"{self.z.fid}.orb", "A").rcode(), dns.rcode.NOERROR)
        self.z.clock.advance(10)
        for name, rdtype in ((f"{self.z.fid}.orb", "A"), (f"{self.z.fid}.orb", "TXT"),
                             (f"_orb._tcp.{self.z.fid}.orb", "SRV"), (f"_tcp.{self.z.fid}.orb", "A")):
            self.assertEqual(self.ask(name, rdtype).rcode(), dns.rcode.NXDOMAIN, name)


class TruncationTests(SynchronousTestCase):
    def test_udp_answer_too_big_is_truncated(self):
        """An SRV answer over 512 bytes is sent with TC and no records to a client without EDNS, in full with it."""
        z = Zone(replicas=6)
        plain = z.ask_udp(f"_orb._tcp.{z.fid}.orb", "SRV")
        self.assertTrue(plain.flags & dns.flags.TC)
        self.assertEqual((plain.answer, plain.additional), ([], []))
        self.assertLessEqual(len(z.udp.sent[-1][0]), 512)
        edns = z.ask_udp(f"_orb._tcp.{z.fid}.orb", "SRV", use_edns=0, payload=1232)
        self.assertFalse(edns.flags & dns.flags.TC)
        self.assertEqual(len(rrset(edns, "SRV")), 6)
        self.assertEqual(edns.edns, 0)
        self.assertEqual(edns.payload, 1232)

    def test_tcp_pipelined_queries_each_get_an_answer(self):
        """Two queries in one TCP segment get two length-prefixed answers, in order (RFC 7766)."""
        z = Zone()
        proto, transport = StreamFactory(z.factory, z.clock).buildProtocol(None), StringTransport()
        proto.makeConnection(transport)
        queries = [dns.message.make_query(name, "A") for name in (f"{z.fid}.orb", "seed.orb")]
        proto.dataReceived(b"".join(struct.pack(">H", len(w)) + w for w in (q.to_wire() for q in queries)))
        data, answers = transport.value(), []
        while data:
            (size,) = struct.unpack(">H", data[:2])
            answers.append(dns.message.from_wire(data[2:2 + size]))
            data = data[2 + size:]
        self.assertEqual([a.id for a in answers], [q.id for q in queries])

    def test_tcp_answers_in_full(self):
        """Over TCP the largest SRV answer comes whole, length-prefixed."""
        z = Zone(replicas=MAX_SRV_RECORDS + 2)
        proto = StreamFactory(z.factory, z.clock).buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        query = dns.message.make_query(f"_orb._tcp.{z.fid}.orb", "SRV").to_wire()
        proto.dataReceived(struct.pack(">H", len(query)) + query)
        data = transport.value()
        (size,) = struct.unpack(">H", data[:2])
        self.assertEqual(size, len(data) - 2)
        answer = dns.message.from_wire(data[2:])
        self.assertEqual(len(rrset(answer, "SRV")), MAX_SRV_RECORDS)
        self.assertGreater(size, 1232)


class BadInputTests(SynchronousTestCase):
    def still_answers(self, z):
        self.assertEqual(z.ask_udp(f"{z.fid}.orb").rcode(), dns.rcode.NOERROR)

    def test_short_datagrams_are_dropped(self):
        """Datagrams shorter than a header, and responses, are dropped unanswered; the server answers after."""
        z = Zone()
        response = dns.message.make_response(dns.message.make_query("seed.orb", "A")).to_wire()
        for data in (b"", b"\x00", b"\x12\x34" * 5, response):
            self.assertIsNone(z.send_udp(data), data)
        self.still_answers(z)

    def test_truncated_and_padded_queries_get_formerr(self):
        """A query cut short, or with bytes after it, is answered FORMERR with its id; the server answers after."""
        z = Zone()
        good = dns.message.make_query(f"{z.fid}.orb", "A")
        wire = good.to_wire()
        for data in (wire[:-3], wire[:14], wire + b"\x00junk"):
            answer = z.send_udp(data)
            self.assertEqual((answer.rcode(), answer.id), (dns.rcode.FORMERR, good.id), data)
        self.still_answers(z)

    def test_hundred_questions_get_formerr(self):
        """A query with 100 questions is answered FORMERR, without its questions; the server answers after."""
        z = Zone()
        header = struct.pack(">HHHHHH", 0x4242, 0x0100, 100, 0, 0, 0)
        question = dns.message.make_query("seed.orb", "A").to_wire()[12:]
        answer = z.send_udp(header + question * 100)
        self.assertEqual((answer.rcode(), answer.id, answer.question), (dns.rcode.FORMERR, 0x4242, []))
        self.assertLess(len(z.udp.sent[-1][0]), 20)
        self.still_answers(z)

    def test_a_label_not_base32_is_nxdomain(self):
        """A label under .orb that is no lowercase base32 fid is NXDOMAIN with the SOA; the server answers after."""
        z = Zone()
        for label in ("UPPER-CASE_", "0189", "a" * 63, "\\000"):
            answer = z.ask_udp(f"{label}.orb", "A")
            self.assertEqual(answer.rcode(), dns.rcode.NXDOMAIN, label)
        self.still_answers(z)

    def test_a_header_without_its_question_gets_a_real_answer(self):
        """A bare header claiming one question gets FORMERR with QR set over UDP and TCP (twisted's echoes it without QR)."""
        z = Zone()
        header = struct.pack(">HHHHHH", 0x0102, 0x0100, 1, 0, 0, 0)
        answer = z.send_udp(header)
        self.assertEqual((answer.rcode(), answer.flags & dns.flags.QR), (dns.rcode.FORMERR, dns.flags.QR))
        proto, transport = StreamFactory(z.factory, z.clock).buildProtocol(None), StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(struct.pack(">H", len(header)) + header)
        answer = dns.message.from_wire(transport.value()[2:])
        self.assertEqual((answer.rcode(), answer.flags & dns.flags.QR), (dns.rcode.FORMERR, dns.flags.QR))
        self.still_answers(z)

    def test_unknown_edns_version_gets_badvers(self):
        """A query with EDNS version 1 gets BADVERS (RFC 6891)."""
        z = Zone()
        answer = z.ask_udp(f"{z.fid}.orb", "A", use_edns=1)
        self.assertEqual(answer.rcode(), dns.rcode.BADVERS)
        self.still_answers(z)

    def test_tcp_short_segments_wait_then_time_out(self):
        """A one-byte segment or a frame short of its prefix is closed when idle; a frame fed bytewise is answered."""
        z = Zone()
        factory = StreamFactory(z.factory, z.clock)
        query = dns.message.make_query(f"{z.fid}.orb", "A").to_wire()
        framed = struct.pack(">H", len(query)) + query
        for partial in (b"\x00", framed[:-5]):
            proto, transport = factory.buildProtocol(None), StringTransport()
            proto.makeConnection(transport)
            proto.dataReceived(partial)
            self.assertEqual(transport.value(), b"")
            z.clock.advance(TCP_IDLE_S + 1)
            self.assertTrue(transport.disconnecting)
            proto.connectionLost(None)
        proto, transport = factory.buildProtocol(None), StringTransport()
        proto.makeConnection(transport)
        for i in range(len(framed)):
            proto.dataReceived(framed[i:i + 1])
        answer = dns.message.from_wire(transport.value()[2:])
        self.assertEqual(answer.rcode(), dns.rcode.NOERROR)
        self.assertEqual(z.factory.connections, [proto])

    def test_tcp_garbage_frame_and_oversized_prefix(self):
        """A garbage TCP frame gets FORMERR or nothing; a prefix over the limit closes only that connection."""
        z = Zone()
        factory = StreamFactory(z.factory, z.clock)
        proto, transport = factory.buildProtocol(None), StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(struct.pack(">H", 3) + b"abc" + b"\xff\xff")
        self.assertTrue(transport.disconnecting)
        other, t2 = factory.buildProtocol(None), StringTransport()
        other.makeConnection(t2)
        query = dns.message.make_query("seed.orb", "A").to_wire()
        other.dataReceived(struct.pack(">H", len(query)) + query)
        self.assertEqual(dns.message.from_wire(t2.value()[2:]).rcode(), dns.rcode.NOERROR)

    def test_tcp_connections_are_bounded(self):
        """Past MAX_TCP_CONNECTIONS open connections a new one is closed at once."""
        z = Zone()
        factory = StreamFactory(z.factory, z.clock)
        for _ in range(MAX_TCP_CONNECTIONS):
            factory.buildProtocol(None).makeConnection(StringTransport())
        extra, transport = factory.buildProtocol(None), StringTransport()
        extra.makeConnection(transport)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(z.factory.connections), MAX_TCP_CONNECTIONS)


class RateLimitTests(SynchronousTestCase):
    def test_a_source_over_its_rate_is_slipped_or_dropped(self):
        """Past N answers/s a source gets every 2nd answer as empty TC, the rest dropped; others unaffected; refills."""
        z = Zone(rrl=None)
        z.factory.rate_limiter = RateLimiter(z.clock, 5)
        answers = [z.ask_udp(f"{z.fid}.orb", addr=("198.51.100.7", 53)) for _ in range(9)]
        self.assertTrue(all(a is not None and not a.flags & dns.flags.TC for a in answers[:5]))
        rest = answers[5:]
        slipped = [a for a in rest if a is not None]
        self.assertEqual(len(slipped), 2)
        self.assertTrue(all(a.flags & dns.flags.TC and not a.answer for a in slipped))
        self.assertIsNotNone(z.ask_udp(f"{z.fid}.orb", addr=("203.0.113.9", 53)).answer)
        z.clock.advance(1)
        self.assertTrue(z.ask_udp(f"{z.fid}.orb", addr=("198.51.100.7", 53)).answer)

    def test_loopback_is_exempt_and_zero_is_off(self):
        """Loopback sources are not limited by default, and a rate of 0 limits nobody."""
        clock = task.Clock()
        limiter = RateLimiter(clock, 1)
        self.assertEqual({limiter.check("127.0.0.1") for _ in range(100)}, {"send"})
        off = RateLimiter(clock, 0)
        self.assertEqual({off.check("192.0.2.1") for _ in range(100)}, {"send"})
        strict = RateLimiter(clock, 1, exempt_loopback=False)
        self.assertEqual([strict.check("127.0.0.1") for _ in range(2)][-1] in ("slip", "drop"), True)

    def test_the_table_is_bounded(self):
        """The limiter keeps at most max_sources buckets, however many sources there are."""
        limiter = RateLimiter(task.Clock(), 10, max_sources=100)
        for i in range(5000):
            limiter.check(f"10.{i // 256 % 256}.{i % 256}.1")
        self.assertEqual(len(limiter), 100)


class CacheTests(SynchronousTestCase):
    def test_answers_are_cached_briefly(self):
        """A repeated query is answered from the cache with its own id, until CACHE_S (or the TTL) passes."""
        z = Zone()
        for ident in (1, 2):
            query = dns.message.make_query(f"{z.fid}.orb", "A")
            query.id = ident
            answer = z.send_udp(query.to_wire(), query=query)
            self.assertEqual((answer.id, [r.address for r in rrset(answer, "A")]), (ident, ["10.1.0.1"]))
        self.assertEqual(z.factory.counts["cache_hits"], 1)
        z.clock.advance(min(CACHE_S, 10) + 0.1)
        z.send_udp(query.to_wire(), query=query)
        self.assertEqual(z.factory.counts["cache_hits"], 1)


class ForwardTests(SynchronousTestCase):
    def test_names_outside_the_zone_go_to_the_forwarder_bounded(self):
        """Outside .orb the upstream answers (RA set), SERVFAIL past the in-flight bound; .orb never goes upstream."""
        from twisted.internet import defer
        from twisted.names import dns as tdns

        from orb.dns.service import BoundedForwarder

        asked = []

        class Upstream:
            def query(self, query, timeout=None):
                asked.append(query.name.name)
                d = defer.Deferred()
                pending.append(d)
                return d

        pending = []
        z = Zone()
        forwarder = BoundedForwarder(("192.0.2.53", 53), z.clock, max_in_flight=1)
        forwarder.resolver = Upstream()
        z.factory = OrbDNSServerFactory(z.authority, z.clock, forwarder=forwarder)
        self.assertIsNone(z.ask_udp("example.com", "A"))  # waiting on the upstream
        answer = z.ask_udp("example.org", "A")
        self.assertEqual(answer.rcode(), dns.rcode.SERVFAIL)  # over the bound
        rr = tdns.RRHeader(name=b"example.com", type=tdns.A, payload=tdns.Record_A("192.0.2.80"), auth=True)
        pending[0].callback(([rr], [], []))
        reply = dns.message.from_wire(z.udp.sent[-1][0])
        self.assertEqual([r.address for r in rrset(reply, "A")], ["192.0.2.80"])
        self.assertTrue(reply.flags & dns.flags.RA)
        self.assertFalse(reply.flags & dns.flags.AA)  # not authoritative for what it forwarded
        self.assertEqual(z.ask_udp(f"{z.fid}.orb").rcode(), dns.rcode.NOERROR)
        self.assertEqual(asked, [b"example.com"])


class OptionTests(SynchronousTestCase):
    def test_dns_options_make_a_config(self):
        """--dns with its TTL, forwarder and rate give the DNS config; without --dns there is none."""
        from orb.tracker import tap

        o = tap.Options()
        o.parseOptions(["--data-dir", self.mktemp(), "--dns", "127.0.0.1:0", "--dns-ttl", "5", "--dns-forward",
                        "192.0.2.53:53", "--dns-rrl", "0"])
        self.assertEqual((o["dns"].listen, o["dns"].ttl_s, o["dns"].forward, o["dns"].rrl_per_s),
                         (("127.0.0.1", 0), 5, ("192.0.2.53", 53), 0))
        o = tap.Options()
        o.parseOptions(["--data-dir", self.mktemp()])
        self.assertIsNone(o["dns"])

    def test_bad_dns_options_say_what_is_wrong(self):
        """A --dns that is not HOST:PORT, a TTL out of range, or --dns-forward alone is one actionable line."""
        from orb.tracker import tap

        for argv, expected in ((["--dns", "localhost:53"], "is not an IP address"),
                               (["--dns", "127.0.0.1:0", "--dns-ttl", "99999"], "--dns-ttl must be between"),
                               (["--dns", "127.0.0.1:0", "--dns-ttl", "0"], "--dns-ttl must be between 1"),
                               (["--dns-forward", "192.0.2.53:53"], "--dns-forward needs --dns")):
            o = tap.Options()
            e = self.assertRaises(SystemExit, o.parseOptions, ["--data-dir", self.mktemp(), *argv])
            self.assertIn(expected, str(e), argv)

    def test_peer_dns_seed_option(self):
        """A peer's --dns-seed HOST:PORT is parsed into its config."""
        from orb.peer import tap as peer_tap

        o = peer_tap.Options()
        o.parseOptions(["--data-dir", self.mktemp(), "--dns-seed", "127.0.0.1:5353"])
        self.assertEqual(o["dns-seed"], ("127.0.0.1", 5353))


class ClientTests(SynchronousTestCase):
    def test_srv_targets_without_glue_are_asked_for(self):
        """lookup_srv keeps answer order, uses glue, asks A/AAAA where glue lacks, reads <node>.peer.orb node ids."""
        from twisted.internet import defer
        from twisted.names import dns as tdns
        from twisted.names import error as tdns_error

        from orb.dns import client

        node = rec.key("n1").node_id
        first, second = nm.peer_name(node), "other.example"

        class Resolver:
            def lookupService(self, name, timeout=None):
                srv = [tdns.RRHeader(name=name, type=tdns.SRV, payload=tdns.Record_SRV(1, 10, port, target))
                       for port, target in ((7401, first), (7402, second))]
                glue = [tdns.RRHeader(name=first, type=tdns.A, payload=tdns.Record_A("10.0.0.1"))]
                return defer.succeed((srv, [], glue))

            def lookupAddress(self, name, timeout=None):
                return defer.succeed(([tdns.RRHeader(name=name, type=tdns.A, payload=tdns.Record_A("10.0.0.2"))],
                                      [], []))

            def lookupIPV6Address(self, name, timeout=None):
                return defer.fail(tdns_error.DNSNameError())

        targets = self.successResultOf(client.lookup_srv(None, None, "_orb._tcp.x.orb", Resolver()))
        self.assertEqual([(t.target, t.port, t.addresses, t.node_id) for t in targets],
                         [(first, 7401, ("10.0.0.1",), node), (second, 7402, ("10.0.0.2",), None)])


class GatewayListTests(SynchronousTestCase):
    """<fid>.orb A lists the gateways of live trackers, from their signed tracker records."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.reg = Registry(self.clock, rec.key("gateways-local"))
        self.reg.publish_self([("10.1.0.1", 7400)], [("10.1.0.1", 7480)])

    def remote(self, name, gateways):
        from orb.protocol import federation as fed
        from orb.tracker import registry as regmod

        k = rec.key(name)
        record = fed.TrackerRecord(k.node_id, k.public_bytes, 1, int(self.clock.seconds()), (("10.9.0.1", 7400),),
                                   gateways=gateways).signed(k.sign)
        self.reg.apply_remote(regmod.Change(k.node_id, 1, fed.TRACKER, record))

    def test_other_live_trackers_gateways_follow_this_ones(self):
        """Our gateway first, then another tracker's from its record; one on another port is left out."""
        from orb.dns.service import live_gateways

        self.remote("gateways-far", (("10.9.0.1", 7480),))
        self.remote("gateways-odd-port", (("10.8.0.1", 8080),))
        self.remote("gateways-none", ())
        self.assertEqual(live_gateways(self.reg, ("10.1.0.1", 7480)), [("10.1.0.1", 7480), ("10.9.0.1", 7480)])

    def test_gateways_in_a_tracker_record_are_signed_and_optional(self):
        """A tracker record carries its gateways under its signature; without any the member is absent."""
        from orb.protocol import federation as fed

        k = rec.key("gateways-signed")
        record = fed.TrackerRecord(k.node_id, k.public_bytes, 1, 5, (("10.9.0.1", 7400),),
                                   gateways=(("10.9.0.1", 7480),)).signed(k.sign)
        again = fed.TrackerRecord.from_dict(record.to_dict())
        again.verify()
        self.assertEqual(again.gateways, (("10.9.0.1", 7480),))
        forged = dict(record.to_dict(), gateways=[["10.6.6.6", 7480]])
        self.assertRaises(fed.BadSignature, fed.TrackerRecord.from_dict(forged).verify)
        plain = fed.TrackerRecord(k.node_id, k.public_bytes, 1, 5, (("10.9.0.1", 7400),)).signed(k.sign)
        self.assertNotIn("gateways", plain.to_dict())
        self.assertRaises(fed.RegistryChangeError, fed.TrackerRecord.from_dict, dict(plain.to_dict(), gateways=[]))
