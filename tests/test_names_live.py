"""
Names, updates and deprecation on real daemons (issue 13): two federated
``twistd orb-tracker --dns`` and two ``twistd orb-peer`` on loopback, the
owner's real ``orb`` command, calls by name through the HTTP gateway, DNS
asked with dnspython and ``dig``.

- ``orb update`` moves the name: a call by name before and after the
  update reaches the old and then the new version, at both trackers.
- ``orb deprecate OLD --successor NEW --sunset +Ns`` reaches both trackers
  and the hosts; the old fid's answers carry Deprecation, Sunset and Link;
  past the sunset both trackers answer 410 and NXDOMAIN, and the hosts have
  dropped the package, while the name keeps serving the new version.
"""

import json
import os
import re
import time

import dns.rcode
from twisted.internet import defer
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from orb.protocol.names import owner_label
from tests._daemons import eventually
from tests.test_dns_live import DIG, LiveDNSMixin, read_ports, rrs

SUNSET_AHEAD_S = 25  # time enough to see the deprecation everywhere before the sunset, on a loaded machine

HANDLER = '''\
import json

VERSION = VERSION_TEXT  # each version is another package: another fid


def handler(event, context):
    args = json.loads(event or b"{}")
    return {"sum": args["a"] + args["b"]}
'''


class NamesLiveTests(LiveDNSMixin, TestCase):
    timeout = 300

    @defer.inlineCallbacks
    def start_network(self):
        """Two federated trackers with DNS, and two peers (one homed at each) that can host the adder."""
        t1 = yield self.dns_tracker("t1", "--admit", self.net.node_id_of("t2"))
        t2 = yield self.dns_tracker("t2", "--join", f"{t1.node_id}@{t1.wire_text}")
        peers = []
        for i, home in ((1, t1), (2, t2)):
            peers.append((yield self.start_peer(f"p{i}", "--listen", f"tcp:0:interface=127.{i}.0.1", "--tracker",
                                                home.wire_text)))
        return t1, t2, peers

    def write_function(self, version):
        path = os.path.join(self.net.base_dir, "adder")
        with open(os.path.join(path, "main.py"), "w") as f:
            f.write(HANDLER.replace("VERSION_TEXT", repr(version)))
        with open(os.path.join(path, "orb.toml")) as f:
            toml = f.read()
        toml = re.sub(r'(?m)^version = ".*"', f'version = "{version}"', toml)
        toml = re.sub(r"(?m)^replicas = \d+", "replicas = 2", toml)
        with open(os.path.join(path, "orb.toml"), "w") as f:
            f.write(toml)
        return path

    @defer.inlineCallbacks
    def http(self, tracker, method, path, body=None):
        """(status, body, headers) of one request to ``tracker``'s gateway."""
        from io import BytesIO

        from twisted.web.client import FileBodyProducer

        agent = Agent(self.reactor_, pool=HTTPConnectionPool(self.reactor_, persistent=False))
        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        url = f"http://127.0.0.1:{tracker.info['http']}{path}".encode()
        response = yield agent.request(method, url, Headers({}), producer)
        data = yield readBody(response)
        return response.code, data, response.headers

    @property
    def reactor_(self):
        from twisted.internet import reactor

        return reactor

    @defer.inlineCallbacks
    def call_by_name(self, tracker, label):
        code, body, headers = yield self.http(tracker, b"POST", f"/n/{label}/adder", b'{"a": 2, "b": 3}')
        return code, (json.loads(body) if code == 200 else body), headers

    @defer.inlineCallbacks
    def test_update_moves_the_name_and_deprecation_reaches_everyone(self):
        """update moves the name at both trackers; a deprecation reaches trackers and hosts; past its sunset: 410, NXDOMAIN, dropped."""
        t1, t2, peers = yield self.start_network()
        code, _, err = yield self.orb("keygen")
        self.assertEqual(code, 0, err)
        path = os.path.join(self.net.base_dir, "adder")
        code, _, err = yield self.orb("init", path, "--template", "python", "--name", "adder")
        self.assertEqual(code, 0, err)
        api = f"http://127.0.0.1:{t1.info['http']}"
        self.write_function("1.0.0")
        code, out, err = yield self.orb("update", path, "--tracker", t1.wire_text, "--api", api, "--json")
        self.assertEqual(code, 0, out + err)
        v1 = json.loads(out)
        label = v1["named"]["owner_label"]

        # The name serves v1 at both trackers (t2 learns the NAME record by federation).
        for tracker in (t1, t2):
            def serves(tracker=tracker, fid=v1["fid"]):
                return self.call_by_name(tracker, label).addCallback(
                    lambda r: r[0] == 200 and r[2].getRawHeaders(b"orb-fid") == [fid.encode()] and r)
            code, doc, _ = yield eventually(serves, timeout_s=30, what="the name serving v1")
            self.assertEqual(doc, {"sum": 5})

        # orb update: the name moves to v2 everywhere; v1 still answers at /f/<v1>.
        self.write_function("2.0.0")
        code, out, err = yield self.orb("update", path, "--tracker", t1.wire_text, "--api", api, "--json")
        self.assertEqual(code, 0, out + err)
        v2 = json.loads(out)
        self.assertEqual((v2["old_fid"], v2["seq"]), (v1["fid"], 2))
        for tracker in (t1, t2):
            def moved(tracker=tracker):
                return self.call_by_name(tracker, label).addCallback(
                    lambda r: r[0] == 200 and r[2].getRawHeaders(b"orb-fid") == [v2["fid"].encode()] and r)
            yield eventually(moved, timeout_s=30, what="the name moved to v2")
        code, _, headers = yield self.http(t1, b"POST", f"/f/{v1['fid']}", b'{"a": 1, "b": 1}')
        self.assertEqual((code, headers.getRawHeaders(b"deprecation")), (200, None))
        cname = yield self.ask(t2.dns, f"adder.{label}.orb", "A")
        self.assertEqual([str(r.target) for r in rrs(cname, "CNAME")], [f"{v2['fid']}.orb."])

        # orb deprecate v1, successor v2, sunset SUNSET_AHEAD_S ahead.
        started = time.time()
        code, out, err = yield self.orb("deprecate", v1["fid"], "--successor", v2["fid"], "--sunset",
                                        f"+{SUNSET_AHEAD_S}s", "--tracker", t1.wire_text, "--api", api, "--json")
        self.assertEqual(code, 0, out + err)
        sunset = json.loads(out)["sunset"]
        for tracker in (t1, t2):
            def deprecated(tracker=tracker):
                return tracker.get_json(f"/api/v1/functions/{v1['fid']}").addCallback(
                    lambda r: r[0] == 200 and (r[1].get("deprecation") or {}).get("deprecated"))
            yield eventually(deprecated, timeout_s=15, interval_s=0.1, what="the deprecation at a tracker")
            code, body, headers = yield self.http(tracker, b"POST", f"/f/{v1['fid']}", b'{"a": 1, "b": 1}')
            self.assertEqual(code, 200, body)
            self.assertTrue(headers.getRawHeaders(b"deprecation")[0].startswith(b"@"))
            self.assertEqual(headers.getRawHeaders(b"sunset"),
                             [time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(sunset)).encode()])
            self.assertEqual(headers.getRawHeaders(b"link"),
                             [f'<http://127.0.0.1:{tracker.info["http"]}/f/{v2["fid"]}>; rel="successor-version"'
                              .encode()])
            txt = yield self.ask(tracker.dns, f"{v1['fid']}.orb", "TXT")
            fields = dict(s.decode().split("=", 1) for r in rrs(txt, "TXT") for s in r.strings)
            self.assertEqual((fields["deprecated"], fields["successor"], fields["sunset"]),
                             ("1", v2["fid"], str(sunset)))
        yield eventually(lambda: self.hosts_know(peers, v1["fid"]), timeout_s=15, interval_s=0.1,
                         what="the deprecation at every host")
        self.assertLess(time.time() - started, SUNSET_AHEAD_S, "the deprecation took too long to check before the sunset")
        if DIG:
            lines = yield self.dig(t1.dns, f"{v1['fid']}.orb", "TXT")
            self.assertIn('"deprecated=1"', " ".join(lines))

        # Past the sunset: 410 at both trackers, NXDOMAIN, the hosts dropped the package; the name serves v2.
        for tracker in (t1, t2):
            def gone(tracker=tracker):
                return self.http(tracker, b"POST", f"/f/{v1['fid']}", b"{}").addCallback(lambda r: r[0] == 410 and r)
            code, body, headers = yield eventually(gone, timeout_s=SUNSET_AHEAD_S + 15, what="410 past the sunset")
            self.assertEqual(json.loads(body)["code"], "gone")
            self.assertEqual(headers.getRawHeaders(b"sunset") is not None, True)

            def nxdomain(tracker=tracker):
                return self.ask(tracker.dns, f"{v1['fid']}.orb", "A").addCallback(
                    lambda a: a.rcode() == dns.rcode.NXDOMAIN)
            yield eventually(nxdomain, timeout_s=15, what="NXDOMAIN past the sunset")
            code, doc, headers = yield self.call_by_name(tracker, label)
            self.assertEqual((code, doc, headers.getRawHeaders(b"orb-fid")), (200, {"sum": 5}, [v2["fid"].encode()]))
        if DIG:
            status = yield self.dig_status(t2.dns, f"{v1['fid']}.orb", "A")
            self.assertEqual(status, "NXDOMAIN")
            lines = yield self.dig(t2.dns, f"adder.{label}.orb", "A")
            self.assertEqual(lines, [f"{v2['fid']}.orb.", "127.0.0.1"])
        for peer in peers:
            yield eventually(lambda peer=peer: not os.path.exists(os.path.join(peer.data_dir, "packages", v1["fid"])),
                             timeout_s=20, what="the host dropping the package")
        code, doc = yield t2.get_json(f"/api/v1/names/{label}/adder")
        self.assertEqual([(h["seq"], h["status"]) for h in doc["history"]], [(2, "current"), (1, "gone")])
        self.assertEqual(owner_label(bytes.fromhex(doc["owner"])), label)
        for daemon in (t1, t2, *peers):
            self.assertEqual(daemon.tracebacks, 0, daemon.text[-3000:])
        self.assertTrue(read_ports(t1))

    def hosts_know(self, peers, fid):
        """Whether every host keeps the deprecation (in its package store, where a host keeps it)."""
        return all(host_deprecation(peer.data_dir, fid) is not None for peer in peers)


def host_deprecation(data_dir, fid):
    """The DEPRECATE a host keeps for ``fid`` in its package store (read-only, from another process)."""
    import sqlite3

    from orb.net.packages import INDEX_FILE
    from orb.protocol import fid as fidmod
    from orb.protocol import messages as m

    try:
        db = sqlite3.connect(f"file:{os.path.join(data_dir, INDEX_FILE)}?mode=ro", uri=True, timeout=0.5)
        try:
            row = db.execute("SELECT body FROM deprecations WHERE fid = ?", (fidmod.from_text(fid),)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return m.decode_body(m.MessageType.DEPRECATE, bytes(row[0])) if row is not None else None
