"""Tests for orb.tracker.http and orb.tracker.stats."""

import json
import math

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import getChildForRequest
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from orb.protocol import fid as fidmod
from orb.tracker import stats as statsmod
from orb.tracker.http import build_resource, render_metrics
from orb.tracker.registry import Registry
from orb.tracker.stats import Stats
from tests import _records as records
from tests._names import FakeNames, owner_label

TRACKER_KEY = records.key("http-tracker")
OTHER_KEY = records.key("http-other")
OWNER_KEY = records.key("http-owner")
TRACKER = TRACKER_KEY.node_id
OTHER = OTHER_KEY.node_id
OWNER = OWNER_KEY.public_bytes
FID = fidmod.to_text(fidmod.fid_for(b"http-test"))


# Peer keys in node-id order, so that pid(1) < pid(2) < ... as listings sort them.
PEER_KEYS = [None] + sorted((records.key(f"http-peer-{i}") for i in range(1, 10)), key=lambda k: k.node_id)


def pid(n):
    return PEER_KEYS[n].node_id


def populated(clock=None):
    clock = clock or Clock()
    clock.advance(1000)
    reg = Registry(clock, TRACKER_KEY)
    stats = Stats(clock)
    reg.publish_self([("127.0.0.1", 7400)])
    records.remote_tracker(reg, OTHER_KEY, [("127.0.0.2", 7400)])
    reg.set_tracker_connected(OTHER, True)
    reg.upsert_function(records.function_record(OWNER_KEY, FID, time=1000, version="2", replicas=3))
    records.home_peer(reg, PEER_KEYS[1], [("127.0.0.1", 7401)], "reachable", rtt_ms=4,
                      load_permille=500, functions={FID: 2})
    records.home_peer(reg, PEER_KEYS[2], [("::1", 7402)], "relayed", rtt_ms=40, functions={FID: 2})
    records.home_peer(reg, PEER_KEYS[3], [], "unknown")
    return reg, stats, clock


def get(root, path, method=b"GET", args=None):
    """Render ``path`` through the resource tree with a DummyRequest."""
    segments = path.lstrip(b"/").split(b"/")
    req = DummyRequest(segments)
    req.method = method
    req.args = args or {}
    resource = getChildForRequest(root, req)
    body = resource.render(req)
    return req, body


def header(req, name):
    values = req.responseHeaders.getRawHeaders(name)
    return values[0] if values else None


class ApiTests(SynchronousTestCase):
    def setUp(self):
        self.reg, self.stats, self.clock = populated()
        self.root = build_resource(self.reg, self.stats)

    def get_json(self, path, status=200, **kw):
        req, body = get(self.root, path, **kw)
        self.assertEqual(req.responseCode or 200, status, body)
        self.assertEqual(header(req, b"content-type"), b"application/json")
        return json.loads(body)

    def test_peers(self):
        """GET /api/v1/peers lists live peers sorted by id, with their addresses, RTT, load and age."""
        self.clock.advance(5)
        self.reg.touch(pid(1))
        data = self.get_json(b"/api/v1/peers")
        self.assertEqual(data["total"], 3)
        first = data["peers"][0]
        self.assertEqual(first["node_id"], pid(1).hex())
        self.assertEqual(first["reachability"], "reachable")
        self.assertEqual(first["rtt_ms"], 4)
        self.assertEqual(first["load_permille"], 500)
        self.assertEqual(first["addresses"], [{"ip": "127.0.0.1", "port": 7401}])
        self.assertEqual(first["functions"], {FID: 2})
        self.assertEqual(first["age_s"], 0)
        self.assertTrue(first["home_is_here"])
        self.assertEqual(data["peers"][1]["age_s"], 5)

    def test_peers_paging(self):
        """limit and offset page through the peers; a bad value is a JSON 400."""
        data = self.get_json(b"/api/v1/peers", args={b"limit": [b"1"], b"offset": [b"1"]})
        self.assertEqual([p["node_id"] for p in data["peers"]], [pid(2).hex()])
        self.assertEqual(data["total"], 3)
        bad = self.get_json(b"/api/v1/peers", status=400, args={b"limit": [b"lots"]})
        self.assertEqual(bad["error"], "bad-query")
        self.get_json(b"/api/v1/peers", status=400, args={b"limit": [b"0"]})

    def test_one_peer(self):
        """GET /api/v1/peers/<id> shows one peer, whatever the case of the hex id."""
        data = self.get_json(b"/api/v1/peers/" + pid(2).hex().encode())
        self.assertEqual(data["reachability"], "relayed")
        self.assertEqual(data["addresses"], [{"ip": "::1", "port": 7402}])
        # Upper-case hex is the same id.
        self.get_json(b"/api/v1/peers/" + pid(2).hex().upper().encode())

    def test_unknown_peer_is_404(self):
        """A well-formed id of a peer we do not know is a JSON 404."""
        data = self.get_json(b"/api/v1/peers/" + pid(9).hex().encode(), status=404)
        self.assertEqual(data["error"], "not-found")

    def test_malformed_peer_id_is_400(self):
        """A path segment that is not 64 hex digits is a JSON 400, not a crash or a 404."""
        for bad in [b"xyz", b"00" * 31, b"zz" * 32, b"\xff" * 64, b"00" * 33]:
            data = self.get_json(b"/api/v1/peers/" + bad, status=400)
            self.assertEqual(data["error"], "bad-id")

    def test_unknown_paths_are_json_404(self):
        """Unknown API paths answer a JSON 404."""
        for path in [b"/api", b"/api/v2/peers", b"/api/v1/nope", b"/nope", b"/api/v1/peers/" + pid(1).hex().encode() + b"/x"]:
            data = self.get_json(path, status=404)
            self.assertEqual(data["error"], "not-found")

    def test_read_only(self):
        """The API refuses writes with 405 and an Allow header."""
        req, body = get(self.root, b"/api/v1/peers", method=b"POST")
        self.assertEqual(req.responseCode, 405)
        self.assertEqual(header(req, b"allow"), b"GET, HEAD")
        self.assertEqual(json.loads(body)["error"], "method-not-allowed")

    def test_trackers(self):
        """GET /api/v1/trackers shows this tracker and the others with liveness and peer counts."""
        data = self.get_json(b"/api/v1/trackers")
        self.assertEqual(data["self"], TRACKER.hex())
        by_id = {t["node_id"]: t for t in data["trackers"]}
        self.assertTrue(by_id[TRACKER.hex()]["self"])
        self.assertEqual(by_id[TRACKER.hex()]["peers"], 3)
        self.assertTrue(by_id[OTHER.hex()]["connected"])
        self.assertEqual(by_id[OTHER.hex()]["addresses"], [{"ip": "127.0.0.2", "port": 7400}])

    def test_functions(self):
        """GET /api/v1/functions shows each function with its live replicas, best first."""
        data = self.get_json(b"/api/v1/functions")
        (f,) = data["functions"]
        self.assertEqual(f["fid"], FID)
        self.assertEqual(f["version"], "2")
        self.assertEqual(f["owner"], OWNER.hex())
        self.assertEqual((f["replicas"], f["live_replicas"]), (3, 2))
        self.assertEqual(f["hosted_by"], [pid(1).hex(), pid(2).hex()])  # fastest first

    def test_functions_use_the_one_ranking(self):
        """hosted_by lists replicas in routing.rank_replicas order: a loaded peer loses to a slightly slower idle one."""
        records.home_peer(self.reg, PEER_KEYS[1], [("127.0.0.1", 7401)], "reachable", rtt_ms=30,
                          load_permille=1000, functions={FID: 2}, seq=2)
        records.home_peer(self.reg, PEER_KEYS[2], [("::1", 7402)], "relayed", rtt_ms=40, functions={FID: 2}, seq=2)
        records.home_peer(self.reg, PEER_KEYS[3], [], "unknown", functions={FID: 2}, seq=2)
        (f,) = self.get_json(b"/api/v1/functions")["functions"]
        self.assertEqual(f["hosted_by"], [pid(2).hex(), pid(1).hex(), pid(3).hex()])

    def test_functions_carry_manifest_fields(self):
        """Each listed function carries its name, version, runtime, size, deploy time and owner."""
        (f,) = self.get_json(b"/api/v1/functions")["functions"]
        self.assertEqual((f["name"], f["version"], f["runtime"]), ("echo", "2", "python"))
        self.assertEqual((f["package_size"], f["deployed_at"], f["owner"]), (1024, 1000, OWNER.hex()))
        self.assertEqual((f["verified_replicas"], f["manager"], f["tracker_hosts"]), (0, None, False))

    def test_functions_filtered_by_owner(self):
        """?owner=<hex> lists only that owner's functions, in either case; a malformed owner is a JSON 400."""
        other_owner = records.key("http-owner-2")
        fid2 = fidmod.to_text(fidmod.fid_for(b"http-test-2"))
        self.reg.upsert_function(records.function_record(other_owner, fid2, time=1001, name="other"))
        everyone = self.get_json(b"/api/v1/functions")
        self.assertEqual(everyone["total"], 2)
        mine = self.get_json(b"/api/v1/functions", args={b"owner": [OWNER.hex().upper().encode()]})
        self.assertEqual([f["fid"] for f in mine["functions"]], [FID])
        theirs = self.get_json(b"/api/v1/functions", args={b"owner": [other_owner.public_bytes.hex().encode()]})
        self.assertEqual([f["name"] for f in theirs["functions"]], ["other"])
        nobody = self.get_json(b"/api/v1/functions", args={b"owner": [b"00" * 32]})
        self.assertEqual(nobody, {"total": 0, "functions": []})
        bad = self.get_json(b"/api/v1/functions", status=400, args={b"owner": [b"alice"]})
        self.assertEqual(bad["error"], "bad-query")

    def test_one_function(self):
        """GET /api/v1/functions/<fid> shows the manifest and each replica's node, address, /16 group, RTT and last check."""
        self.reg.publish_placement(FID, [(pid(1), 1005), (pid(2), 0)])
        data = self.get_json(b"/api/v1/functions/" + FID.encode())
        self.assertEqual(data["manifest"]["name"], "echo")
        self.assertEqual(data["manifest"]["samples"][0]["input"], {"text": "hi"})
        self.assertEqual(data["placement"]["tracker"], TRACKER.hex())
        self.assertEqual(data["manager"], TRACKER.hex())
        self.assertEqual((data["live_replicas"], data["verified_replicas"]), (2, 1))
        first, second = data["hosts"]
        self.assertEqual(first["node_id"], pid(1).hex())
        self.assertEqual(first["address"], {"ip": "127.0.0.1", "port": 7401})
        self.assertEqual(first["network_group"], "127.0.0.0/16")
        self.assertEqual((first["rtt_ms"], first["verified_at"], first["verified"]), (4, 1005, True))
        self.assertEqual((first["is_tracker"], first["live"], first["in_placement"]), (False, True, True))
        self.assertEqual(second["node_id"], pid(2).hex())
        self.assertEqual(second["network_group"], "::/32")
        self.assertEqual((second["verified_at"], second["verified"]), (None, False))

    def test_one_function_hosted_by_the_tracker(self):
        """A function its managing tracker hosts itself lists that tracker as a verified replica."""
        self.reg.publish_placement(FID, [(TRACKER, 1002)])
        data = self.get_json(b"/api/v1/functions/" + FID.encode())
        self.assertTrue(data["tracker_hosts"])
        placed = [h for h in data["hosts"] if h["in_placement"]]
        self.assertEqual(len(placed), 1)
        self.assertEqual(placed[0]["node_id"], TRACKER.hex())
        self.assertEqual((placed[0]["is_tracker"], placed[0]["is_this_tracker"], placed[0]["verified"]),
                         (True, True, True))
        self.assertEqual(placed[0]["address"], {"ip": "127.0.0.1", "port": 7400})
        # The peers that announce it without being placed yet are listed after it.
        self.assertEqual([h["in_placement"] for h in data["hosts"]], [True, False, False])

    def test_network_groups(self):
        """Replica network groups are IPv4 /16 and IPv6 /32 prefixes, as placement spreads them."""
        from orb.tracker.http import network_group

        self.assertEqual(network_group("127.2.0.9"), "127.2.0.0/16")
        self.assertEqual(network_group("203.0.113.200"), "203.0.0.0/16")
        self.assertEqual(network_group("2001:db8:1:2::7"), "2001:db8::/32")
        self.assertIsNone(network_group("not-an-ip"))

    def test_one_function_errors(self):
        """A malformed fid is a JSON 400 and an unknown fid a JSON 404."""
        bad = self.get_json(b"/api/v1/functions/not-a-fid", status=400)
        self.assertEqual(bad["error"], "bad-fid")
        unknown = fidmod.to_text(fidmod.fid_for(b"nobody deployed this"))
        missing = self.get_json(b"/api/v1/functions/" + unknown.encode(), status=404)
        self.assertEqual(missing["error"], "not-found")
        self.get_json(b"/api/v1/functions/" + FID.encode() + b"/more", status=404)

    def test_stats(self):
        """GET /api/v1/stats reports uptime, counts, reachability, message totals and rates."""
        self.stats.count_message("in", "PING")
        self.stats.count_message("in", "PING")
        self.stats.count_message("out", "PONG")
        self.clock.advance(20)
        data = self.get_json(b"/api/v1/stats")
        self.assertEqual(data["uptime_s"], 20)
        self.assertEqual(data["counts"]["peers"], 3)
        self.assertEqual(data["counts"]["functions"], 1)
        self.assertEqual(data["reachability"], {"reachable": 1, "relayed": 1, "unknown": 1})
        self.assertEqual(data["messages"], {"in": {"PING": 2}, "out": {"PONG": 1}})
        self.assertEqual(data["rates_per_s"]["in"]["PING"], 0.1)
        self.assertEqual(data["rtt_ms"]["peers_measured"], 2)

    def test_internal_error_is_json_500(self):
        """A bug behind the API gives a logged JSON 500, not a traceback page."""
        def broken():
            raise RuntimeError("bug")

        self.patch(self.reg, "peers", broken)
        data = self.get_json(b"/api/v1/peers", status=500)
        self.assertEqual(data["error"], "internal")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_dashboard_files(self):
        """The dashboard's HTML, script and style are served with a strict CSP."""
        req, body = get(self.root, b"/")
        self.assertEqual(header(req, b"content-type"), b"text/html; charset=utf-8")
        self.assertIn(b'id="peer-count"', body)
        self.assertIn(b"script-src 'self'", header(req, b"content-security-policy"))
        req, body = get(self.root, b"/dashboard.js")
        self.assertEqual(header(req, b"content-type"), b"text/javascript; charset=utf-8")
        self.assertIn(b'"api/v1/peers"', body)  # relative: the tree can be mounted anywhere
        req, body = get(self.root, b"/style.css")
        self.assertTrue(header(req, b"content-type").startswith(b"text/css"))


class NamesApiTests(SynchronousTestCase):
    """/api/v1/names/<owner>/<name> and the deprecation in /api/v1/functions, over a names core set by the test."""

    def setUp(self):
        self.reg, self.stats, self.clock = populated()
        self.names = FakeNames(self.clock)
        self.root = build_resource(self.reg, self.stats, names=self.names)
        self.label = owner_label(OWNER)
        self.fids = [fidmod.to_text(fidmod.fid_for(f"http-v{i}".encode())) for i in range(3)]

    def get_json(self, path, status=200):
        req, body = get(self.root, path.encode())
        self.assertEqual(req.responseCode or 200, status, body)
        self.assertEqual(header(req, b"content-type"), b"application/json")
        return json.loads(body)

    def test_a_name_with_its_history(self):
        """A name answers its current fid, seq, status and every seq with its fid and that fid's status."""
        for fid in self.fids:
            self.names.set_name(OWNER, "adder", fid)
        self.names.deprecate(self.fids[2], successor=self.fids[1], sunset=self.clock.seconds() + 60)
        self.names.deprecate(self.fids[0], sunset=self.clock.seconds() - 1)
        doc = self.get_json(f"/api/v1/names/{self.label}/adder")
        self.assertEqual((doc["owner"], doc["owner_label"], doc["name"], doc["dns_name"]),
                         (OWNER.hex(), self.label, "adder", f"adder.{self.label}.orb"))
        self.assertEqual((doc["fid"], doc["seq"], doc["serving"], doc["status"]), (self.fids[2], 3, self.fids[1], "current"))
        self.assertEqual([(h["seq"], h["fid"], h["status"]) for h in doc["history"]],
                         [(3, self.fids[2], "deprecated"), (2, self.fids[1], "current"), (1, self.fids[0], "gone")])
        self.assertEqual(doc["history"][0]["sunset"], self.clock.seconds() + 60)
        self.assertEqual(doc["history"][0]["successor"], self.fids[1])

    def test_a_name_whose_versions_are_all_deprecated_or_gone(self):
        """A name serving a deprecated version says deprecated; with every version gone it says gone."""
        self.names.set_name(OWNER, "adder", self.fids[0])
        self.names.deprecate(self.fids[0], sunset=self.clock.seconds() + 5)
        doc = self.get_json(f"/api/v1/names/{self.label}/adder")
        self.assertEqual((doc["status"], doc["serving"], doc["deprecation"]["sunset"]),
                         ("deprecated", self.fids[0], self.clock.seconds() + 5))
        self.clock.advance(5)
        doc = self.get_json(f"/api/v1/names/{self.label}/adder")
        self.assertEqual((doc["status"], doc["serving"], doc["history"][0]["status"]), ("gone", None, "gone"))

    def test_a_superseded_version_is_told_apart(self):
        """An older version that nobody deprecated is superseded: it still answers at /f/ but the name moved on."""
        self.names.set_name(OWNER, "adder", self.fids[0])
        self.names.set_name(OWNER, "adder", self.fids[1])
        doc = self.get_json(f"/api/v1/names/{self.label}/adder")
        self.assertEqual([h["status"] for h in doc["history"]], ["current", "superseded"])

    def test_bad_and_unknown_names(self):
        """A malformed owner label or name is 400 bad-name; an unknown one 404 name-not-found; a short path 404."""
        self.assertEqual(self.get_json(f"/api/v1/names/{self.label}/nope", 404)["code"], "name-not-found")
        self.assertEqual(self.get_json(f"/api/v1/names/{self.label[:5]}/adder", 400)["code"], "bad-name")
        self.assertEqual(self.get_json(f"/api/v1/names/{self.label}/a_b", 400)["code"], "bad-name")
        self.assertEqual(self.get_json(f"/api/v1/names/{self.label}", 404)["code"], "not-found")
        root = build_resource(self.reg, self.stats)  # no names core
        req, body = get(root, f"/api/v1/names/{self.label}/adder".encode())
        self.assertEqual((req.responseCode, json.loads(body)["code"]), (404, "name-not-found"))

    def test_a_function_carries_its_deprecation(self):
        """/api/v1/functions/<fid> and the listing carry deprecation; past the sunset the fid answers 410 gone."""
        self.assertIsNone(self.get_json(f"/api/v1/functions/{FID}")["deprecation"])
        self.names.deprecate(FID, successor=self.fids[0], sunset=self.clock.seconds() + 10)
        doc = self.get_json(f"/api/v1/functions/{FID}")["deprecation"]
        self.assertEqual((doc["deprecated"], doc["successor"], doc["sunset"], doc["gone"]),
                         (True, self.fids[0], self.clock.seconds() + 10, False))
        (listed,) = self.get_json("/api/v1/functions")["functions"]
        self.assertTrue(listed["deprecation"]["deprecated"])
        self.clock.advance(10)
        doc = self.get_json(f"/api/v1/functions/{FID}", 410)
        self.assertEqual((doc["code"], doc["fid"], doc["deprecation"]["gone"]), ("gone", FID, True))


class MetricsTests(SynchronousTestCase):
    def test_exposition_format(self):
        """/metrics is valid Prometheus text: every sample belongs to a family with HELP and TYPE."""
        reg, stats, clock = populated()
        stats.count_message("in", "PING")
        stats.count_bytes("in", "PING", 24)
        stats.count_message("out", "ADDR")
        stats.count_bytes("out", "ADDR", 1000)
        for rtt in (0.5, 3.0, 40.0, 9000.0):
            stats.observe_rtt_ms(rtt)
        clock.advance(12.5)
        root = build_resource(reg, stats)
        req, body = get(root, b"/metrics")
        self.assertEqual(header(req, b"content-type"), b"text/plain; version=0.0.4; charset=utf-8")
        text = body.decode()
        lines = text.splitlines()
        self.assertIn("# TYPE orb_peers gauge", lines)
        self.assertIn("orb_peers 3", lines)
        self.assertIn("orb_trackers 2", lines)
        self.assertIn("orb_functions 1", lines)
        self.assertIn("# TYPE orb_messages_total counter", lines)
        self.assertIn('orb_messages_total{direction="in",type="PING"} 1', lines)
        self.assertIn('orb_messages_total{direction="out",type="ADDR"} 1', lines)
        self.assertIn('orb_message_bytes_total{direction="out",type="ADDR"} 1000', lines)
        self.assertIn('orb_message_bytes_total{direction="in",type="PING"} 24', lines)
        self.assertIn("orb_uptime_seconds 12.5", lines)
        self.assertIn('orb_peers_by_reachability{reachability="relayed"} 1', lines)
        self.assertIn("# TYPE orb_peer_rtt_ms histogram", lines)
        self.assertIn('orb_peer_rtt_ms_bucket{le="1"} 1', lines)
        self.assertIn('orb_peer_rtt_ms_bucket{le="5"} 2', lines)
        self.assertIn('orb_peer_rtt_ms_bucket{le="5000"} 3', lines)
        self.assertIn('orb_peer_rtt_ms_bucket{le="+Inf"} 4', lines)
        self.assertIn("orb_peer_rtt_ms_count 4", lines)
        self.assertIn("orb_peer_rtt_ms_sum 9043.5", lines)
        # Every sample line belongs to a family with HELP and TYPE.
        families = {l.split()[2] for l in lines if l.startswith("# TYPE")}
        helps = {l.split()[2] for l in lines if l.startswith("# HELP")}
        self.assertEqual(families, helps)
        for line in lines:
            if line.startswith("#"):
                continue
            name = line.split("{")[0].split(" ")[0]
            self.assertTrue(any(name == f or name.startswith(f + "_") for f in families), line)
            float(line.rsplit(" ", 1)[1].replace("+Inf", "inf"))

    def test_label_escaping(self):
        """A hostile message type name cannot break the metrics output."""
        reg, stats, _ = populated()
        stats.count_message("in", 'bad"type\n')  # not a valid type name
        text = render_metrics(reg, stats)
        self.assertIn('orb_messages_total{direction="in",type="unknown"} 1', text)


class StatsTests(SynchronousTestCase):
    def test_type_names_bounded(self):
        """Counting many distinct type names keeps a bounded table; the rest count as other."""
        self.patch(statsmod, "MAX_MESSAGE_TYPES", 3)
        stats = Stats(Clock())
        for i in range(10):
            stats.count_message("in", f"T{i}")
        totals = stats.message_totals()
        self.assertLessEqual(len(totals), 4)
        self.assertEqual(sum(totals.values()), 10)
        self.assertEqual(totals[("in", "other")], 7)

    def test_direction_is_checked(self):
        """A direction other than in/out is a wiring bug and raises."""
        with self.assertRaises(ValueError):
            Stats(Clock()).count_message("sideways", "PING")
        with self.assertRaises(ValueError):
            Stats(Clock()).count_bytes("sideways", "PING", 1)

    def test_bytes_add_up(self):
        """Byte totals are the sum of the frame sizes counted, separately from message counts."""
        stats = Stats(Clock())
        for n in (24, 100, 1000):
            stats.count_bytes("out", "ADDR", n)
        stats.count_message("out", "ADDR")
        self.assertEqual(stats.byte_totals(), {("out", "ADDR"): 1124})
        self.assertEqual(stats.message_totals(), {("out", "ADDR"): 1})
        for bad in (-1, 1.5, None):
            with self.assertRaises(ValueError):
                stats.count_bytes("out", "ADDR", bad)

    def test_byte_types_share_the_bound(self):
        """Byte counters and message counters together keep at most MAX_MESSAGE_TYPES type names."""
        self.patch(statsmod, "MAX_MESSAGE_TYPES", 2)
        stats = Stats(Clock())
        stats.count_message("in", "A")
        stats.count_bytes("in", "B", 5)
        stats.count_bytes("in", "C", 7)
        stats.count_message("in", "D")
        self.assertEqual(stats.byte_totals(), {("in", "B"): 5, ("in", "other"): 7})
        self.assertEqual(stats.message_totals(), {("in", "A"): 1, ("in", "other"): 1})

    def test_rates_over_last_minute(self):
        """Message rates follow the last minute, not the average since start."""
        clock = Clock()
        stats = Stats(clock)
        for _ in range(600):  # 10/s for a minute
            clock.advance(0.1)
            stats.count_message("in", "PING")
        self.assertAlmostEqual(stats.rates_per_s()["in"]["PING"], 10.0, delta=0.5)
        for _ in range(60):  # then 1/s for a minute
            clock.advance(1)
            stats.count_message("in", "PING")
        self.assertAlmostEqual(stats.rates_per_s()["in"]["PING"], 1.0, delta=0.3)

    def test_rtt_ignores_nonsense(self):
        """NaN and negative RTTs do not reach the histogram."""
        stats = Stats(Clock())
        stats.observe_rtt_ms(math.nan)
        stats.observe_rtt_ms(-1)
        self.assertEqual(stats.rtt_count, 0)


class RealServerTests(TestCase):
    """The resource tree behind a real Site on a loopback port."""

    def setUp(self):
        self.reg, self.stats, _ = populated()
        self.reg._clock = reactor
        self.stats.clock = reactor
        self.port = reactor.listenTCP(0, Site(build_resource(self.reg, self.stats)), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}".encode()
        self.agent = Agent(reactor)

    @inlineCallbacks
    def fetch(self, path, method=b"GET"):
        resp = yield self.agent.request(method, self.base + path, Headers({}))
        body = yield readBody(resp)
        return resp, body

    @inlineCallbacks
    def test_peers_over_http(self):
        """The peers API answers JSON over a real HTTP connection."""
        resp, body = yield self.fetch(b"/api/v1/peers")
        self.assertEqual(resp.code, 200)
        self.assertEqual(resp.headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(json.loads(body)["total"], 3)

    @inlineCallbacks
    def test_errors_over_http(self):
        """Bad ids, unknown peers and writes give 400, 404 and 405 over real HTTP."""
        resp, body = yield self.fetch(b"/api/v1/peers/nothex")
        self.assertEqual(resp.code, 400)
        self.assertEqual(json.loads(body)["error"], "bad-id")
        resp, body = yield self.fetch(b"/api/v1/peers/" + pid(7).hex().encode())
        self.assertEqual(resp.code, 404)
        resp, body = yield self.fetch(b"/api/v1/stats", method=b"DELETE")
        self.assertEqual(resp.code, 405)

    @inlineCallbacks
    def test_metrics_and_dashboard_over_http(self):
        """/metrics (messages and bytes) and the dashboard are served over real HTTP."""
        self.stats.count_message("in", "HELLO")
        self.stats.count_bytes("in", "HELLO", 100)
        resp, body = yield self.fetch(b"/metrics")
        self.assertEqual(resp.code, 200)
        self.assertIn(b'orb_messages_total{direction="in",type="HELLO"} 1', body)
        self.assertIn(b'orb_message_bytes_total{direction="in",type="HELLO"} 100', body)
        resp, body = yield self.fetch(b"/")
        self.assertEqual(resp.code, 200)
        self.assertIn(b"peer-count", body)
        resp, body = yield self.fetch(b"/", method=b"HEAD")
        self.assertEqual((resp.code, body), (200, b""))
