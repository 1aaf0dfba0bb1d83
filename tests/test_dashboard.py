"""The dashboard, rendered for real by headless Chromium.

Starts the tracker's HTTP resource on a loopback port with a registry of
live peers, loads ``/`` in Chromium (which runs dashboard.js against the
API), and checks the rendered DOM and a screenshot.  Skipped, with the
reason, where Chromium is not installed; CI installs it (.ci/apt-deps).
"""

import json
import os
import re
import shutil
import signal
import struct
import tempfile

from twisted.internet import defer, protocol, reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ResultStatus
from orb.tracker.gateway import GatewayConfig
from orb.tracker.http import build_site
from orb.tracker.router import Answer
from orb.tracker.registry import Registry
from orb.tracker.stats import Stats
from tests import _records as records

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SETSID = shutil.which("setsid")
CHROMIUM_TIMEOUT_S = 60
FID = fidmod.to_text(fidmod.fid_for(b"dashboard"))
PEER_COUNT_RE = re.compile(r'id="peer-count"[^>]*>\s*(\d+)\s*<')
CELL_RE = r'<td class="{}[^"]*"[^>]*>([^<]*)</td>'


class FailingEveryThird:
    """Router.call's contract: every third call of a function fails, the others echo their input."""

    def __init__(self):
        self.count = 0

    def call(self, fid_raw, data, deadline_s=None, token=b"", trace_id=b""):
        self.count += 1
        status = ResultStatus.ERROR if self.count % 3 == 0 else ResultStatus.OK
        return defer.succeed(Answer(m.Result(status=int(status), queue_us=0, fetch_us=0, boot_us=0, exec_us=900,
                                             output=data, log=b"boom"), pid(1), network_us=100))


def pid(n):
    return records.key(f"dashboard-peer-{n}").node_id


class _Collect(protocol.ProcessProtocol):
    def __init__(self):
        self.out = bytearray()
        self.done = defer.Deferred()

    def outReceived(self, data):
        if len(self.out) < 8 * 1024 * 1024:
            self.out += data

    def errReceived(self, data):
        pass  # Chromium is chatty about D-Bus; nothing to act on

    def processEnded(self, reason):
        self.done.callback(reason.value.exitCode)


class DashboardTests(TestCase):
    if CHROMIUM is None:
        skip = "chromium is not installed (Debian package 'chromium'; .ci/apt-deps installs it)"
    elif SETSID is None:
        skip = "setsid (util-linux) is needed to clean up Chromium's process group"

    timeout = 4 * CHROMIUM_TIMEOUT_S

    def setUp(self):
        self.registry = Registry(reactor, records.key("dashboard-tracker"))
        self.stats = Stats(reactor)
        self.registry.publish_self([("127.0.0.1", 7400)])
        self.registry.upsert_function(records.function_record(records.key("dashboard-owner"), FID,
                                                              time=int(reactor.seconds()), replicas=2))
        for i in range(1, 8):
            records.home_peer(
                self.registry,
                records.key(f"dashboard-peer-{i}"),
                [(f"127.0.{i}.1", 7400 + i)],
                ("reachable", "relayed", "unknown")[i % 3],
                rtt_ms=3.5 * i * i,
                load_permille=100 * i,
                functions={FID: 1} if i % 2 else {},
            )
            self.stats.observe_rtt_ms(3.5 * i * i)
        self.stats.count_message("in", "HELLO")
        self.stats.count_message("out", "HELLO_ACK")
        site = build_site(self.registry, self.stats, FailingEveryThird(), reactor, GatewayConfig(rate_per_s=0))
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/"

    @inlineCallbacks
    def chromium(self, *mode):
        """Run headless Chromium on the dashboard; returns its stdout."""
        profile = tempfile.mkdtemp(prefix="orb-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        args = [
            SETSID, CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900",
            "--virtual-time-budget=5000", *mode, self.url,
        ]
        env = {"HOME": profile, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        proto = _Collect()
        proc = reactor.spawnProcess(proto, SETSID, args, env=env)
        group = proc.pid  # setsid made Chromium the leader of a fresh group

        def kill_group():
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

        self.addCleanup(kill_group)
        timer = reactor.callLater(CHROMIUM_TIMEOUT_S, kill_group)
        code = yield proto.done
        if timer.active():
            timer.cancel()
        kill_group()  # renderer and zygote children, if any linger
        self.assertEqual(code, 0, f"chromium exited with {code}")
        return bytes(proto.out).decode("utf-8", "replace")

    def rendered_peer_count(self, dom):
        m = PEER_COUNT_RE.search(dom)
        self.assertIsNotNone(m, "no #peer-count in the rendered page")
        return int(m.group(1))

    @inlineCallbacks
    def test_dashboard_shows_live_peer_count(self):
        """In a browser the dashboard shows the registry's peers, count and functions, and the new count on reload."""
        dom = yield self.chromium("--dump-dom")
        self.assertEqual(self.rendered_peer_count(dom), 7)
        # The tables were filled from the API, not left as placeholders.
        self.assertIn(pid(3).hex(), dom)
        self.assertIn(FID, dom)
        self.assertIn('class="status live"', dom)

        # The registry changes; the page shows the new count.
        for i in range(8, 11):
            records.home_peer(self.registry, records.key(f"dashboard-peer-{i}"), [(f"127.0.{i}.1", 7400)],
                              "reachable", rtt_ms=1.0)
        self.registry.observe_peer(pid(1), connected=False)  # its session is gone
        dom = yield self.chromium("--dump-dom")
        self.assertEqual(self.rendered_peer_count(dom), 9)

    @inlineCallbacks
    def test_dashboard_shows_function_call_figures(self):
        """After calls through the gateway the dashboard shows the function's replicas, call rate, p50, p99 and error rate."""
        from io import BytesIO

        from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody

        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        codes = []
        for i in range(6):
            response = yield agent.request(b"POST", f"{self.url}f/{FID}".encode(), None,
                                           FileBodyProducer(BytesIO(b"in %d" % i)))
            yield readBody(response)
            codes.append(response.code)
        self.assertEqual(codes, [200, 200, 502, 200, 200, 502])
        response = yield agent.request(b"GET", f"{self.url}api/v1/functions".encode())
        (doc,) = json.loads((yield readBody(response)))["functions"]
        dom = yield self.chromium("--dump-dom")
        row = re.search(r'<tr data-fid="' + FID + r'">(.*?)</tr>', dom, re.S)
        self.assertIsNotNone(row, "no row for the function")
        cells = {name: re.search(CELL_RE.format(name), row.group(1)).group(1)
                 for name in ("replicas", "rate", "p50", "p99", "errors")}
        self.assertEqual(cells["replicas"], f"{doc['live_replicas']} / 2")
        self.assertEqual(cells["rate"], f"{6 / 60:.2f} /s")
        self.assertEqual(cells["errors"], "33.3 %")
        for name in ("p50", "p99"):
            shown = float(cells[name].removesuffix(" ms"))
            self.assertLessEqual(abs(shown - doc["calls"][f"{name}_ms"]), 0.051, (name, cells[name], doc["calls"]))

    @inlineCallbacks
    def test_screenshot(self):
        """The dashboard renders in a browser to a full 1280x900 screenshot that is not a blank or error page."""
        shot = os.path.abspath(self.mktemp() + ".png")
        yield self.chromium(f"--screenshot={shot}")
        self.assertTrue(os.path.exists(shot), "chromium wrote no screenshot")
        with open(shot, "rb") as f:
            png = f.read()
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        width, height = struct.unpack(">II", png[16:24])
        self.assertEqual((width, height), (1280, 900))
        # A blank or error page compresses to almost nothing; the dashboard does not.
        self.assertGreater(len(png), 30_000)
