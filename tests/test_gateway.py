"""
The HTTP gateway (orb.tracker.gateway): a real Site on a loopback port,
real HTTP clients and raw sockets, and a scripted router standing in for
orb.tracker.router (its ``call`` contract: Deferred[Answer], never an
errback); and ``GatewayDaemonTests``: a real ``twistd orb-tracker`` with
peers hosting a deployed function, called over loopback HTTP and by the
real ``orb invoke``.
"""

import json
import os
import struct

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from orb.protocol import fid as fidmod
from orb.protocol import manifest as mf
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, ResultStatus, TlvType
from orb.protocol.deploy import sign_deploy
from orb.protocol.federation import FunctionRecord
from orb.tracker import gateway as gw
from orb.tracker import stats as statsmod
from orb.tracker.http import build_site, render_metrics
from orb.tracker.registry import Registry
from orb.tracker.router import Answer
from orb.tracker.stats import Stats
from tests import _records as records
from tests._daemons import ORB, DaemonTestMixin, eventually, sleep
from tests._names import FakeNames, owner_label
from tests.test_dns_live import read_ports

OWNER_KEY = records.key("gateway-owner")
FID = fidmod.to_text(fidmod.fid_for(b"gateway-test"))
SMALL_FID = fidmod.to_text(fidmod.fid_for(b"gateway-small"))  # max_input_bytes = 16
UNKNOWN_FID = fidmod.to_text(fidmod.fid_for(b"gateway-unknown"))
REPLICA = records.key("gateway-replica").node_id
SMALL_CAP = 16


def small_function():
    text = records.MANIFEST_TOML.format(name="small", version="1", replicas=1).replace(
        "[[sample]]", f"max_input_bytes = {SMALL_CAP}\n\n[[sample]]")
    data = mf.canonical_bytes(mf.from_toml(text))
    sig = sign_deploy(OWNER_KEY, fidmod.from_text(SMALL_FID), data, 100, 1000)
    return FunctionRecord(SMALL_FID, OWNER_KEY.public_bytes, data, 100, 1000, sig)


def ok(output, **kw):
    return m.Result(status=int(ResultStatus.OK), queue_us=1000, fetch_us=2000, boot_us=3000, exec_us=4000,
                    output=output, log=b"", **kw)


class ScriptedRouter:
    """Router.call's contract; ``answer(fid_raw, data)`` gives the Answer, or a Deferred of one."""

    def __init__(self):
        self.calls = []
        self.answer = lambda fid_raw, data: Answer(ok(data[::-1]), REPLICA, network_us=5000)

    def call(self, fid_raw, data, deadline_s=None, token=b"", trace_id=b""):
        self.calls.append({"fid": fid_raw, "data": data, "deadline_s": deadline_s, "trace_id": trace_id})
        return defer.maybeDeferred(self.answer, fid_raw, data)


class _Raw(protocol.Protocol):
    """A raw HTTP client: what it received, and ``closed`` when the server hung up."""

    def __init__(self):
        self.received = bytearray()
        self.closed = defer.Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.closed.callback(bytes(self.received))


class GatewaySiteMixin:
    config = gw.GatewayConfig(rate_per_s=0, receive_timeout_s=1.0, idle_timeout_s=2.0)

    def setUp(self):
        self.registry = Registry(reactor, records.key("gateway-tracker"))
        self.registry.publish_self([("127.0.0.1", 7400)])
        self.registry.upsert_function(records.function_record(OWNER_KEY, FID, time=1000, replicas=1))
        self.registry.upsert_function(small_function())
        self.stats = Stats(reactor)
        self.router = ScriptedRouter()
        self.names = self.make_names()
        self.site = build_site(self.registry, self.stats, self.router, reactor, self.config, names=self.names)
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=self.pool)

    def make_names(self):
        """The names core the site reads (None: a tracker without names)."""
        return None

    @defer.inlineCallbacks
    def request(self, method, path, body=None, headers=None):
        """(status, body bytes, headers) of one real HTTP request."""
        from io import BytesIO

        from twisted.web.client import FileBodyProducer

        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        response = yield self.agent.request(method, (self.base + path).encode(), Headers(headers or {}), producer)
        data = yield readBody(response)
        return response.code, data, response.headers

    @defer.inlineCallbacks
    def raw(self, data=b""):
        """A raw connection that has sent ``data``."""
        client = _Raw()
        yield protocol.ClientCreator(reactor, lambda: client).connectTCP("127.0.0.1", self.port.getHost().port)
        self.addCleanup(lambda: client.transport.loseConnection() if client.transport.connected else None)
        if data:
            client.transport.write(data)
        return client


def one(headers, name):
    values = headers.getRawHeaders(name)
    return values[0].decode() if values else None


class GatewayRouteTests(GatewaySiteMixin, TestCase):
    @defer.inlineCallbacks
    def test_post_calls_the_function(self):
        """POST /f/<fid> answers the output with status, replica, request id (the trace id), timing and CORS headers."""
        code, body, headers = yield self.request(b"POST", f"/f/{FID}", b"hello")
        self.assertEqual((code, body), (200, b"olleh"))
        self.assertEqual(one(headers, b"x-orb-status"), "ok")
        self.assertEqual(one(headers, b"orb-replica"), REPLICA.hex())
        self.assertEqual(one(headers, b"access-control-allow-origin"), "*")
        request_id = one(headers, b"orb-request-id")
        self.assertEqual(len(request_id), 32)
        (call,) = self.router.calls
        self.assertEqual((call["fid"], call["data"], call["trace_id"]), (fidmod.from_text(FID), b"hello",
                                                                          bytes.fromhex(request_id)))
        timing = dict(part.strip().split(";dur=") for part in one(headers, b"server-timing").split(","))
        self.assertEqual(set(timing), {"queue", "fetch", "boot", "exec", "network", "total"})
        self.assertEqual([float(timing[k]) for k in ("queue", "fetch", "boot", "exec", "network")],
                         [1.0, 2.0, 3.0, 4.0, 5.0])
        self.assertIsNone(one(headers, b"orb-cached"))
        self.assertEqual(self.stats.calls.figures(FID).calls_total, 1)

    @defer.inlineCallbacks
    def test_get_metadata_and_preflight(self):
        """GET /f/<fid> is the function's metadata as JSON; OPTIONS answers a CORS preflight."""
        code, body, headers = yield self.request(b"GET", f"/f/{FID}")
        doc = json.loads(body)
        self.assertEqual((code, doc["fid"], doc["name"], doc["dns_name"]), (200, FID, "echo", f"{FID}.orb"))
        self.assertEqual(doc["max_input_bytes"], mf.MAX_INPUT_BYTES)
        self.assertIn("calls", doc)
        self.assertEqual(one(headers, b"access-control-allow-origin"), "*")
        code, body, headers = yield self.request(b"OPTIONS", f"/f/{FID}", headers={
            b"Origin": [b"http://example.test"], b"Access-Control-Request-Method": [b"POST"]})
        self.assertEqual(code, 204)
        self.assertIn("POST", one(headers, b"access-control-allow-methods"))
        self.assertIn("Orb-Deadline-Ms", one(headers, b"access-control-allow-headers"))
        self.assertEqual(self.router.calls, [])

    @defer.inlineCallbacks
    def test_host_header_routes_to_the_function(self):
        """With Host: <fid>.orb:PORT, POST / calls the function and GET / is its metadata; a bad label is 400."""
        host = f"{FID}.orb:{self.port.getHost().port}".encode()
        code, body, _ = yield self.request(b"POST", "/", b"abc", headers={b"Host": [host]})
        self.assertEqual((code, body), (200, b"cba"))
        code, body, _ = yield self.request(b"GET", "/", headers={b"Host": [FID.upper().encode() + b".ORB."]})
        self.assertEqual((code, json.loads(body)["fid"]), (200, FID))
        code, body, _ = yield self.request(b"POST", "/", b"", headers={b"Host": [b"not-a-fid.orb"]})
        self.assertEqual((code, json.loads(body)["code"]), (400, "bad-fid"))
        # Another host name still gets the dashboard at /.
        code, body, _ = yield self.request(b"GET", "/", headers={b"Host": [b"localhost"]})
        self.assertEqual(code, 200)
        self.assertIn(b"<html", body)

    @defer.inlineCallbacks
    def test_bad_requests_get_their_codes(self):
        """Malformed fid and path 400, unknown fid 404, PUT 405, and a bad Orb-Deadline-Ms 400; none reaches the router."""
        cases = [
            (b"POST", "/f/not-a-fid", {}, 400, "bad-fid"),
            (b"POST", f"/f/{FID}/more", {}, 400, "bad-path"),
            (b"POST", f"/f/{UNKNOWN_FID}", {}, 404, "not-found"),
            (b"PUT", f"/f/{FID}", {}, 405, "method-not-allowed"),
            (b"POST", f"/f/{FID}", {b"Orb-Deadline-Ms": [b"0"]}, 400, "bad-deadline"),
            (b"POST", f"/f/{FID}", {b"Orb-Deadline-Ms": [b"soon"]}, 400, "bad-deadline"),
            (b"POST", f"/f/{FID}", {b"Orb-Deadline-Ms": [b"-5"]}, 400, "bad-deadline"),
            (b"POST", f"/f/{FID}", {b"Orb-Deadline-Ms": [str(gw.MAX_DEADLINE_MS + 1).encode()]}, 400,
             "bad-deadline"),
        ]
        for method, path, headers, status, code in cases:
            got, body, response_headers = yield self.request(method, path, b"x", headers)
            self.assertEqual((got, json.loads(body)["code"]), (status, code), (method, path, headers))
            self.assertEqual(one(response_headers, b"access-control-allow-origin"), "*")
        self.assertEqual(self.router.calls, [])
        code, _, _ = yield self.request(b"POST", f"/f/{FID}", b"x", {b"Orb-Deadline-Ms": [b"2500"]})
        self.assertEqual((code, self.router.calls[0]["deadline_s"]), (200, 2.5))

    @defer.inlineCallbacks
    def test_every_result_status_has_its_http_status(self):
        """Each RESULT status maps to its HTTP status and code; failures carry the log tail; busy carries Retry-After."""
        expected = {
            ResultStatus.ERROR: (502, "function-error"), ResultStatus.TIMEOUT: (504, "timeout"),
            ResultStatus.MEMORY: (502, "out-of-memory"), ResultStatus.KILLED_BY_POLICY: (502, "killed-by-policy"),
            ResultStatus.OUTPUT_TOO_LARGE: (502, "output-too-large"), ResultStatus.BUSY: (503, "busy"),
            ResultStatus.NOT_FOUND: (404, "not-found"), ResultStatus.DENIED: (403, "denied"),
            ResultStatus.REFUSED: (503, "refused"), ResultStatus.INTERNAL: (502, "internal"),
            ResultStatus.GONE: (410, "gone"), ResultStatus.PAYMENT_REQUIRED: (402, "payment-required"),
        }
        self.assertEqual(set(expected) | {ResultStatus.OK}, set(ResultStatus))
        for status, (http_status, code) in expected.items():
            log = b"x" * 10_000 + b"Traceback: ZeroDivisionError"
            self.router.answer = lambda fid, data, status=status, log=log: Answer(
                m.Result(status=int(status), queue_us=0, fetch_us=0, boot_us=0, exec_us=7, output=b"", log=log),
                REPLICA)
            got, body, headers = yield self.request(b"POST", f"/f/{FID}", b"in")
            doc = json.loads(body)
            self.assertEqual((got, doc["code"], doc["status"]), (http_status, code, status.name.lower()))
            self.assertEqual(one(headers, b"x-orb-status"), status.name.lower())
            self.assertTrue(doc["log"].endswith("ZeroDivisionError"))
            self.assertLessEqual(len(doc["log"]), gw.ERROR_LOG_TAIL_BYTES)
            self.assertEqual(one(headers, b"retry-after"), "1" if http_status == 503 else None)
        self.assertEqual(self.stats.calls.figures(FID).errors_total, len(expected))

    @defer.inlineCallbacks
    def test_busy_uses_the_routers_retry_after(self):
        """A busy answer's Retry-After is the router's retry_after_s, rounded up."""
        busy = m.Result(status=int(ResultStatus.BUSY), queue_us=0, fetch_us=0, boot_us=0, exec_us=0, output=b"",
                        log=b"")

        class Later:
            result, replica, network_us, cached, route, attempts, retry_after_s = busy, None, 0, False, "direct", 2, 6.2

        self.router.answer = lambda fid, data: Later()
        code, _, headers = yield self.request(b"POST", f"/f/{FID}", b"")
        self.assertEqual((code, one(headers, b"retry-after")), (503, "7"))

    @defer.inlineCallbacks
    def test_a_router_refusal_is_a_client_error(self):
        """A call the router refuses before routing (out_of_range) is 400 bad-deadline and no call in the figures."""
        refused = m.Result(status=int(ResultStatus.INTERNAL), queue_us=0, fetch_us=0, boot_us=0, exec_us=0,
                           output=b"", log=b"a deadline past the maximum")

        class Refused:
            result, replica, network_us, cached, route, attempts, retry_after_s = refused, None, 0, False, "", 0, None
            refusal = int(ErrorCode.OUT_OF_RANGE)

        self.router.answer = lambda fid, data: Refused()
        code, body, _ = yield self.request(b"POST", f"/f/{FID}", b"")
        self.assertEqual((code, json.loads(body)["code"]), (400, "bad-deadline"))
        self.assertEqual(self.stats.calls.figures(FID).calls_total, 0)

    @defer.inlineCallbacks
    def test_cached_answer_says_so(self):
        """An answer from the result cache has Orb-Cached: 1 and an Age from the RESULT's cached TLV."""
        age = m.Tlv(int(TlvType.CACHED), struct.pack(">I", 5_300))
        self.router.answer = lambda fid, data: Answer(ok(b"out", ext=(age,)), None, cached=True, route="cache")
        code, body, headers = yield self.request(b"POST", f"/f/{FID}", b"in")
        self.assertEqual((code, body, one(headers, b"orb-cached"), one(headers, b"age")), (200, b"out", "1", "5"))
        self.assertEqual(one(headers, b"orb-route"), "cache")
        timing = dict(part.strip().split(";dur=") for part in one(headers, b"server-timing").split(","))
        self.assertEqual({k: float(v) for k, v in timing.items() if k != "total"},
                         dict.fromkeys(("queue", "fetch", "boot", "exec", "network"), 0.0))

    @defer.inlineCallbacks
    def test_large_output_arrives_whole(self):
        """A 1 MiB output is written in chunks and arrives byte for byte with its Content-Length."""
        output = bytes(range(256)) * 4096
        self.router.answer = lambda fid, data: Answer(ok(output), REPLICA)
        client = yield self.raw(f"POST /f/{FID} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                "Content-Length: 0\r\n\r\n".encode())
        answer = yield client.closed
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertIn(b"\r\nContent-Length: %d" % len(output), head)
        self.assertEqual(body, output)


class GatewayNamesTests(GatewaySiteMixin, TestCase):
    """/n/<owner>/<name> and deprecation headers, over a names core the test sets (tests._names)."""

    def make_names(self):
        self.label = owner_label(OWNER_KEY.public_bytes)
        return FakeNames(reactor)

    @defer.inlineCallbacks
    def test_a_name_calls_the_version_it_serves(self):
        """POST /n/<owner>/<name> calls the fid the name serves and says which in Orb-Fid; GET is its metadata."""
        self.names.set_name(OWNER_KEY.public_bytes, "echo", FID)
        code, body, headers = yield self.request(b"POST", f"/n/{self.label}/echo", b"hello")
        self.assertEqual((code, body, one(headers, b"orb-fid")), (200, b"olleh", FID))
        self.assertEqual(self.router.calls[0]["fid"], fidmod.from_text(FID))
        self.assertIsNone(one(headers, b"deprecation"))
        code, body, headers = yield self.request(b"GET", f"/n/{self.label.upper()}/Echo")
        doc = json.loads(body)
        self.assertEqual((code, doc["fid"], doc["named"]["seq"], doc["named"]["dns_name"], doc["deprecation"]),
                         (200, FID, 1, f"echo.{self.label}.orb", None))
        self.names.set_name(OWNER_KEY.public_bytes, "echo", SMALL_FID)
        code, _, headers = yield self.request(b"POST", f"/n/{self.label}/echo", b"hi")
        self.assertEqual((code, one(headers, b"orb-fid")), (200, SMALL_FID))

    @defer.inlineCallbacks
    def test_a_name_by_host_header(self):
        """With Host: <name>.<owner>.orb, POST / calls the version the name serves."""
        self.names.set_name(OWNER_KEY.public_bytes, "echo", FID)
        host = f"echo.{self.label}.orb:{self.port.getHost().port}".encode()
        code, body, headers = yield self.request(b"POST", "/", b"abc", headers={b"Host": [host]})
        self.assertEqual((code, body, one(headers, b"orb-fid")), (200, b"cba", FID))

    @defer.inlineCallbacks
    def test_a_name_input_cap_is_its_versions(self):
        """A name's calls are refused 413 past the manifest cap of the version it serves, before the router."""
        self.names.set_name(OWNER_KEY.public_bytes, "small", SMALL_FID)
        code, body, _ = yield self.request(b"POST", f"/n/{self.label}/small", b"x" * (SMALL_CAP + 1))
        self.assertEqual((code, json.loads(body)["code"]), (413, "input-too-large"))
        self.assertEqual(self.router.calls, [])

    @defer.inlineCallbacks
    def test_bad_and_unknown_names(self):
        """A malformed owner label or name is 400 bad-name, an unknown name 404 name-not-found; no call is made."""
        other = owner_label(records.key("nobody").public_bytes)
        cases = [(f"/n/{self.label}/echo", 404, "name-not-found"), (f"/n/{other}/echo", 404, "name-not-found"),
                 (f"/n/{self.label[:-1]}/echo", 400, "bad-name"), (f"/n/{self.label}/-echo", 400, "bad-name"),
                 (f"/n/{self.label}/echo/more", 400, "bad-path"), (f"/n/{self.label}", 400, "bad-path")]
        for path, status, code in cases:
            got, body, _ = yield self.request(b"POST", path, b"x")
            self.assertEqual((got, json.loads(body)["code"]), (status, code), path)
        self.assertEqual(self.router.calls, [])

    @defer.inlineCallbacks
    def test_a_deprecated_fid_answers_with_the_headers(self):
        """A deprecated fid's calls and metadata carry Deprecation @<unix>, Sunset (HTTP-date) and Link successor-version."""
        sunset = int(reactor.seconds()) + 3600
        self.names.deprecate(FID, successor=SMALL_FID, sunset=sunset)
        at = int(reactor.seconds())  # the first answer about it: when this tracker learnt of it, here
        for method in (b"POST", b"GET"):
            code, _, headers = yield self.request(method, f"/f/{FID}", b"hello",
                                                  headers={b"Host": [b"gw.example:8080"]})
            self.assertEqual(code, 200)
            self.assertIn(one(headers, b"deprecation"), (f"@{at}", f"@{at + 1}"))
            self.assertEqual(one(headers, b"sunset"), http_date(sunset))
            self.assertEqual(one(headers, b"link"), f'<http://gw.example:8080/f/{SMALL_FID}>; rel="successor-version"')
            self.assertIn("Deprecation", one(headers, b"access-control-expose-headers"))
        code, body, _ = yield self.request(b"GET", f"/f/{FID}")
        self.assertEqual(json.loads(body)["deprecation"]["successor"], SMALL_FID)
        code, _, headers = yield self.request(b"POST", f"/f/{SMALL_FID}", b"x")
        self.assertEqual((code, one(headers, b"deprecation"), one(headers, b"sunset")), (200, None, None))

    @defer.inlineCallbacks
    def test_a_bare_deprecation_and_an_odd_host(self):
        """Without successor or sunset only Deprecation is set; a Host that is not a plain host gives a relative Link."""
        self.names.deprecate(SMALL_FID)
        code, _, headers = yield self.request(b"POST", f"/f/{SMALL_FID}", b"x")
        self.assertEqual((code, one(headers, b"sunset"), one(headers, b"link")), (200, None, None))
        self.assertTrue(one(headers, b"deprecation").startswith("@"))
        self.names.deprecate(FID, successor=SMALL_FID)
        _, _, headers = yield self.request(b"POST", f"/f/{FID}", b"x", headers={b"Host": [b"a b>"]})
        self.assertEqual(one(headers, b"link"), f'</f/{SMALL_FID}>; rel="successor-version"')

    @defer.inlineCallbacks
    def test_a_name_prefers_the_newest_version_not_deprecated(self):
        """Once the newest version is deprecated the name calls the newest one that is not."""
        self.names.set_name(OWNER_KEY.public_bytes, "echo", FID)
        self.names.set_name(OWNER_KEY.public_bytes, "echo", SMALL_FID)
        self.names.deprecate(SMALL_FID, sunset=int(reactor.seconds()) + 60)
        code, _, headers = yield self.request(b"POST", f"/n/{self.label}/echo", b"x")
        self.assertEqual((code, one(headers, b"orb-fid"), one(headers, b"deprecation")), (200, FID, None))
        self.names.deprecate(FID)
        code, _, headers = yield self.request(b"POST", f"/n/{self.label}/echo", b"x")
        self.assertEqual(code, 200)
        self.assertEqual(one(headers, b"orb-fid"), SMALL_FID)  # every version deprecated: the newest
        self.assertIsNotNone(one(headers, b"deprecation"))

    @defer.inlineCallbacks
    def test_past_the_sunset_is_410_gone(self):
        """Past its sunset a fid answers 410 gone (calls and metadata), and so does a name with nothing left."""
        sunset = int(reactor.seconds()) - 1
        self.names.set_name(OWNER_KEY.public_bytes, "echo", FID)
        self.names.deprecate(FID, successor=SMALL_FID, sunset=sunset)
        for method in (b"POST", b"GET"):
            code, body, headers = yield self.request(method, f"/f/{FID}", b"x")
            doc = json.loads(body)
            self.assertEqual((code, doc["code"], doc["successor"], doc["sunset"]), (410, "gone", SMALL_FID, sunset))
            self.assertEqual(one(headers, b"sunset"), http_date(sunset))
            code, body, _ = yield self.request(method, f"/n/{self.label}/echo", b"x")
            self.assertEqual((code, json.loads(body)["code"]), (410, "gone"))
        self.assertEqual(self.router.calls, [])


def http_date(unix_s):
    from email.utils import formatdate

    return formatdate(unix_s, usegmt=True)


class GatewayBoundsTests(GatewaySiteMixin, TestCase):
    @defer.inlineCallbacks
    def test_oversized_input_is_refused_from_content_length(self):
        """A Content-Length over the cap gets 413 before any body is sent; the router never sees it."""
        client = yield self.raw(f"POST /f/{FID} HTTP/1.1\r\nHost: x\r\nContent-Length: {2 * mf.MAX_INPUT_BYTES}"
                                "\r\n\r\n".encode())
        answer = yield client.closed
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:200])
        self.assertEqual(json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"], "input-too-large")
        self.assertEqual(self.router.calls, [])

    @defer.inlineCallbacks
    def test_oversized_upload_in_progress_still_reads_413(self):
        """A client that asks 100-continue, or keeps sending its oversized body, reads a clean 413, not a reset."""
        client = yield self.raw(f"POST /f/{FID} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                                f"Content-Length: {4 * mf.MAX_INPUT_BYTES}\r\n\r\n".encode())
        for _ in range(8):  # 2 MiB of body after the answer is on its way
            yield deferLater(reactor, 0.02, lambda: None)
            if client.transport.connected:
                client.transport.write(b"z" * (256 * 1024))
        client.transport.loseConnection()
        answer = yield client.closed
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:200])
        self.assertNotIn(b"100 Continue", answer)
        self.assertEqual(json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"], "input-too-large")
        self.assertEqual(self.router.calls, [])

    @defer.inlineCallbacks
    def test_manifest_cap_applies(self):
        """A function whose manifest sets max_input_bytes gets 413 past it, by Content-Length or chunked body."""
        code, body, _ = yield self.request(b"POST", f"/f/{SMALL_FID}", b"y" * (SMALL_CAP + 1))
        self.assertEqual((code, json.loads(body)["code"]), (413, "input-too-large"))
        chunked = (f"POST /f/{SMALL_FID} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n").encode()
        client = yield self.raw(chunked)
        answer = yield client.closed
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:200])
        code, body, _ = yield self.request(b"POST", f"/f/{SMALL_FID}", b"y" * SMALL_CAP)
        self.assertEqual(code, 200)
        self.assertEqual([c["data"] for c in self.router.calls], [b"y" * SMALL_CAP])

    @defer.inlineCallbacks
    def test_slowloris_is_dropped_while_others_are_served(self):
        """A client trickling its headers, one trickling its body and one sending nothing are dropped; a normal call succeeds meanwhile."""
        header_trickler = yield self.raw(b"POST /f/" + FID.encode() + b" HTTP/1.1\r\n")
        body_trickler = yield self.raw(f"POST /f/{FID} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode())
        silent = yield self.raw()
        dropped = []
        for c in (header_trickler, body_trickler, silent):
            c.closed.addCallback(dropped.append)
        started = reactor.seconds()
        for i in range(12):  # 2.4 s of trickling, a byte every 0.2 s
            for c, byte in ((header_trickler, b"X-Slow: y\r\n"[i % 11 : i % 11 + 1]), (body_trickler, b"z")):
                if c.transport.connected:
                    c.transport.write(byte)
            if i == 3:
                code, body, _ = yield self.request(b"POST", f"/f/{FID}", b"honest")
                self.assertEqual((code, body), (200, b"tsenoh"))
            yield deferLater(reactor, 0.2, lambda: None)
        yield defer.gatherResults([header_trickler.closed, body_trickler.closed, silent.closed])
        self.assertLess(reactor.seconds() - started, 4.0)
        self.assertTrue(header_trickler.received.startswith(b"HTTP/1.1 408 "), bytes(header_trickler.received))
        self.assertTrue(body_trickler.received.startswith(b"HTTP/1.1 408 "), bytes(body_trickler.received))
        self.assertEqual([c["data"] for c in self.router.calls], [b"honest"])

    @defer.inlineCallbacks
    def test_a_client_that_goes_away_cancels_its_call(self):
        """A caller that disconnects mid-call has its call cancelled at the router, and its slot freed."""
        cancelled = []
        pending = defer.Deferred(cancelled.append)
        self.router.answer = lambda fid, data: pending
        client = yield self.raw(f"POST /f/{FID} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi".encode())
        yield deferLater(reactor, 0.2, lambda: None)
        gateway = self.site.gateway
        self.assertEqual(gateway.in_flight, 1)
        client.transport.loseConnection()
        yield client.closed
        yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual((len(cancelled), gateway.in_flight), (1, 0))


class GatewayLimitTests(GatewaySiteMixin, TestCase):
    config = gw.GatewayConfig(rate_per_s=0.5, burst=2, max_in_flight=1, receive_timeout_s=1.0, idle_timeout_s=2.0,
                              max_connections=3)

    @defer.inlineCallbacks
    def test_connections_are_capped(self):
        """Past max_connections a new connection is closed at once; those open are served, and room frees up."""
        held = []
        for _ in range(3):
            held.append((yield self.raw()))
        extra = yield self.raw()
        answer = yield extra.closed
        self.assertEqual(answer, b"")
        held[0].transport.write(f"GET /f/{FID} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = yield held[0].closed
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        yield deferLater(reactor, 0.1, lambda: None)
        code, _, _ = yield self.request(b"GET", f"/f/{FID}")
        self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def test_rate_limit_and_in_flight_cap(self):
        """Past its burst a client gets 429 with Retry-After; past max_in_flight a call gets 503 busy with Retry-After."""
        pending = defer.Deferred()
        self.router.answer = lambda fid, data: pending
        first = self.request(b"POST", f"/f/{FID}", b"1")
        yield deferLater(reactor, 0.2, lambda: None)
        code, body, headers = yield self.request(b"POST", f"/f/{FID}", b"2")
        self.assertEqual((code, json.loads(body)["code"], one(headers, b"retry-after")), (503, "busy", "1"))
        code, body, headers = yield self.request(b"POST", f"/f/{FID}", b"3")
        self.assertEqual((code, json.loads(body)["code"]), (429, "rate-limited"))
        self.assertGreaterEqual(int(one(headers, b"retry-after")), 1)
        pending.callback(Answer(ok(b"done"), REPLICA))
        code, body, _ = yield first
        self.assertEqual((code, body), (200, b"done"))


class _Orb(protocol.ProcessProtocol):
    """The real ``orb`` command with ``stdin`` written to it: (exit status, stdout, stderr)."""

    def __init__(self, stdin):
        self.stdin, self.out, self.err = stdin, bytearray(), bytearray()
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data):
        self.out += data

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        self.done.callback((reason.value.exitCode, self.out.decode(), self.err.decode()))


class InvokeCommandTests(GatewaySiteMixin, TestCase):
    """``orb invoke`` against the real gateway (scripted router): input, --json and exit statuses."""

    def orb(self, *argv, stdin=b""):
        proto = _Orb(stdin)
        env = dict(os.environ, ORB_HOME=self.mktemp())
        reactor.spawnProcess(proto, ORB, [ORB, "invoke", *argv, "--api", self.base], env=env)
        return proto.done

    @defer.inlineCallbacks
    def test_stdin_json_and_exit_statuses(self):
        """Input from stdin ('-'); --json shows status, timing, replica, cached; 413, busy and a bad fid have their exit codes."""
        code, out, err = yield self.orb(FID, "-", stdin=b"from stdin")
        self.assertEqual((code, out), (0, "nidts morf"), err)
        age = m.Tlv(int(TlvType.CACHED), struct.pack(">I", 2_000))
        self.router.answer = lambda fid, data: Answer(ok(b"hit", ext=(age,)), REPLICA, cached=True, route="cache")
        code, out, err = yield self.orb(FID, "--data", "x", "--json")
        doc = json.loads(out)
        self.assertEqual((code, doc["status"], doc["output"], doc["cached"], doc["replica"]),
                         (0, "ok", "hit", True, REPLICA.hex()), err)
        self.assertEqual(doc["timing"]["exec_ms"], 0.0)  # a cached answer ran nothing
        self.assertEqual(doc["route"], "gateway/cache")
        self.router.answer = lambda fid, data: Answer(ok(b"ran"), REPLICA, network_us=5000)
        code, out, err = yield self.orb(FID, "--data", "x", "--json")
        doc = json.loads(out)
        self.assertEqual((doc["cached"], doc["timing"]["exec_ms"], doc["timing"]["network_ms"]), (False, 4.0, 5.0))
        code, out, err = yield self.orb(SMALL_FID, "--data", "y" * (SMALL_CAP + 1))
        self.assertEqual(code, 3, out + err)
        self.assertIn("input-too-large", err)
        busy = m.Result(status=int(ResultStatus.BUSY), queue_us=0, fetch_us=0, boot_us=0, exec_us=0, output=b"",
                        log=b"every replica is busy")
        self.router.answer = lambda fid, data: Answer(busy)
        code, out, err = yield self.orb(FID, "--data", "x")
        self.assertEqual(code, 8, out + err)
        code, out, err = yield self.orb("not-a-fid", "--data", "x")
        self.assertEqual(code, 2, out + err)


class GatewayOptionsTests(SynchronousTestCase):
    def test_tracker_options_set_the_gateway_limits(self):
        """twistd orb-tracker --gateway-* options become the gateway's limits; nonsense is refused with a message."""
        import socket

        from orb.tracker import tap

        def free_port():
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]

        def parse(*extra):
            options = tap.Options()
            options.parseOptions(["--data-dir", self.mktemp(), "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
                                  "--http", f"tcp:{free_port()}:interface=127.0.0.1", *extra])
            return options

        options = parse("--gateway-rate", "5", "--gateway-burst", "3", "--gateway-max-input-bytes", "1000",
                        "--gateway-receive-timeout", "2.5")
        self.assertEqual((options["gateway-rate"], options["gateway-burst"], options["gateway-max-input-bytes"],
                          options["gateway-receive-timeout"]), (5.0, 3, 1000, 2.5))
        self.assertEqual(parse("--gateway-rate", "0")["gateway-rate"], 0.0)
        defaults = parse()
        self.assertEqual((defaults["gateway-rate"], defaults["gateway-max-input-bytes"]),
                         (gw.GatewayConfig().rate_per_s, mf.MAX_INPUT_BYTES))
        for bad in (("--gateway-burst", "0"), ("--gateway-rate", "fast"),
                    ("--gateway-max-input-bytes", str(mf.MAX_INPUT_BYTES + 1))):
            with self.assertRaises(SystemExit, msg=bad) as e:  # twistd prints it and exits
                parse(*bad)
            self.assertIn(bad[0], str(e.exception))


class ClientBucketTests(SynchronousTestCase):
    def test_bucket_refills_and_table_is_bounded(self):
        """A client may burst, then waits 1/rate per call; the table forgets the least recently seen client."""
        clock = Clock()
        buckets = gw.ClientBuckets(clock, rate_per_s=2.0, burst=3, max_clients=2)
        self.assertEqual([buckets.take("a") for _ in range(3)], [0.0, 0.0, 0.0])
        self.assertAlmostEqual(buckets.take("a"), 0.5)
        clock.advance(0.5)
        self.assertEqual(buckets.take("a"), 0.0)
        buckets.take("b")
        buckets.take("c")
        self.assertEqual(len(buckets), 2)
        self.assertEqual(buckets.take("a"), 0.0)  # forgotten, so a fresh bucket


class CallStatsTests(SynchronousTestCase):
    def test_figures_over_the_last_minute(self):
        """Call rate, p50, p99 and error rate count the last minute's calls only; totals count all."""
        clock = Clock()
        stats = Stats(clock)
        for i in range(1, 101):
            stats.calls.observe_call(FID, i / 1000, ok=i % 4 != 0)
        f = stats.calls.figures(FID)
        self.assertEqual((f.window_calls, f.p50_ms, f.p99_ms, f.error_rate), (100, 50.0, 99.0, 0.25))
        self.assertAlmostEqual(f.rate_per_s, 100 / statsmod.CALL_WINDOW_S, places=2)
        clock.advance(statsmod.CALL_WINDOW_S + 1)
        self.assertEqual(stats.calls.figures(FID).window_calls, 0)  # the minute has passed
        stats.calls.observe_call(FID, 0.002, ok=True)
        f = stats.calls.figures(FID)
        self.assertEqual((f.calls_total, f.errors_total, f.window_calls, f.p99_ms, f.error_rate), (101, 25, 1, 2.0, 0.0))

    def test_bounded(self):
        """At most MAX_CALLS_KEPT calls per function and MAX_FUNCTIONS_TRACKED functions are kept."""
        stats = Stats(Clock())
        for i in range(statsmod.MAX_CALLS_KEPT + 10):
            stats.calls.observe_call(FID, 0.001, ok=True)
        self.assertEqual(stats.calls.figures(FID).window_calls, statsmod.MAX_CALLS_KEPT)
        for i in range(statsmod.MAX_FUNCTIONS_TRACKED + 1):
            stats.calls.observe_call(f"f{i}", 0.001, ok=True)
        self.assertEqual(len(stats.calls.fids()), statsmod.MAX_FUNCTIONS_TRACKED)
        self.assertNotIn(FID, stats.calls.fids())

    def test_metrics_and_api_show_function_figures(self):
        """/metrics exports each called function's calls, errors, rate, error ratio and p50/p99."""
        registry = Registry(Clock(), records.key("gateway-tracker"))
        stats = Stats(Clock())
        stats.calls.observe_call(FID, 0.010, ok=True)
        stats.calls.observe_call(FID, 0.030, ok=False)
        text = render_metrics(registry, stats)
        self.assertIn(f'orb_function_calls_total{{fid="{FID}"}} 2', text)
        self.assertIn(f'orb_function_errors_total{{fid="{FID}"}} 1', text)
        self.assertIn(f'orb_function_error_ratio{{fid="{FID}"}} 0.5', text)
        self.assertIn(f'orb_function_latency_ms{{fid="{FID}",quantile="0.5"}} 10', text)
        self.assertIn(f'orb_function_latency_ms{{fid="{FID}",quantile="0.99"}} 30', text)
        self.assertIn(f'orb_function_calls_per_second{{fid="{FID}"}}', text)


SPINNER = """\
import json
import time


def handler(event, context):
    args = json.loads(event or b"{}")
    end = time.monotonic() + args.get("spin_s", 0)
    while time.monotonic() < end:
        pass
    return {"sum": args["a"] + args["b"]}
"""


class GatewayDaemonTests(DaemonTestMixin, TestCase):
    """The gateway and ``orb invoke`` against a real tracker and real peers."""

    timeout = 300


    @defer.inlineCallbacks
    def deployed(self):
        """A tracker, three peers, and the spinner function deployed: (tracker, api url, fid)."""
        tracker = yield self.start_tracker("t1", "--dns", "127.0.0.1:0")
        ports = yield eventually(lambda: read_ports(tracker).get("dns") and read_ports(tracker), timeout_s=10,
                                 what="the DNS port in ports.json")
        tracker.dns = ("127.0.0.1", ports["dns"])
        for i in range(1, 4):
            yield self.start_peer(f"p{i}", "--listen", f"tcp:0:interface=127.{i}.0.1", "--tracker",
                                          tracker.wire_text)
        yield sleep(2)
        path = os.path.join(self.net.base_dir, "spinner")
        for argv in (("keygen",), ("init", path, "--template", "python", "--name", "spinner")):
            code, out, err = yield self.orb(*argv)
            self.assertEqual(code, 0, out + err)
        with open(os.path.join(path, "main.py"), "w") as f:
            f.write(SPINNER)
        api = f"http://127.0.0.1:{tracker.info['http']}"
        code, out, err = yield self.orb("deploy", path, "--tracker", tracker.wire_text, "--api", api, "--json")
        self.assertEqual(code, 0, out + err)
        return tracker, api, json.loads(out)["fid"]

    @defer.inlineCallbacks
    def http(self, method, url, body=None, headers=None):
        from io import BytesIO

        from twisted.web.client import FileBodyProducer

        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        response = yield agent.request(method, url.encode(), Headers(headers or {}), producer)
        data = yield readBody(response)
        return response.code, data, response.headers

    @defer.inlineCallbacks
    def test_routes_statuses_and_orb_invoke(self):
        """Against real daemons: every route and status code, <fid>.orb through the tracker's DNS, a slowloris beside an honest call, /metrics, orb invoke's exit codes."""
        tracker, api, fid = yield self.deployed()
        port = tracker.info["http"]
        code, body, headers = yield self.http(b"POST", f"{api}/f/{fid}", b'{"a": 20, "b": 22}')
        self.assertEqual((code, json.loads(body)), (200, {"sum": 42}), body)
        info = yield tracker.get_json(f"/api/v1/functions/{fid}")
        verified = {h["node_id"] for h in info[1]["hosts"] if h["verified"]}
        self.assertIn(one(headers, b"orb-replica"), verified)
        timing = one(headers, b"server-timing")
        for name in ("queue", "fetch", "boot", "exec", "network", "total"):
            self.assertIn(f"{name};dur=", timing)
        self.assertEqual(len(one(headers, b"orb-request-id")), 32)
        self.assertEqual(one(headers, b"access-control-allow-origin"), "*")

        # curl -X POST http://<fid>.orb:PORT/ with the tracker as the DNS server: <fid>.orb resolves to the
        # gateway, and the Host header routes the call.
        from twisted.names import client as dns_client

        answers, _, _ = yield dns_client.Resolver(servers=[tracker.dns]).lookupAddress(f"{fid}.orb")
        address = answers[0].payload.dottedQuad()
        code, body, _ = yield self.http(b"POST", f"http://{address}:{port}/", b'{"a": 1, "b": 1}',
                                        {b"Host": [f"{fid}.orb:{port}".encode()]})
        self.assertEqual((code, json.loads(body)), (200, {"sum": 2}))
        code, body, _ = yield self.http(b"GET", f"{api}/f/{fid}")
        self.assertEqual((code, json.loads(body)["name"], json.loads(body)["live_replicas"]), (200, "spinner", 3))
        code, _, headers = yield self.http(b"OPTIONS", f"{api}/f/{fid}")
        self.assertEqual((code, one(headers, b"access-control-allow-origin")), (204, "*"))

        # Bad input, each with its status and code.
        for method, url, body, headers, status, error in [
            (b"POST", f"{api}/f/not-a-fid", b"", {}, 400, "bad-fid"),
            (b"POST", f"{api}/f/{UNKNOWN_FID}", b"", {}, 404, "not-found"),
            (b"POST", f"{api}/f/{fid}", b"{}", {b"Orb-Deadline-Ms": [b"0"]}, 400, "bad-deadline"),
            (b"POST", f"{api}/f/{fid}", b"{}", {b"Orb-Deadline-Ms": [b"300001"]}, 400, "bad-deadline"),
            (b"POST", f"{api}/f/{fid}", b'{"a": 1}', {}, 502, "function-error"),
            (b"POST", f"{api}/f/{fid}", b'{"a": 1, "b": 2, "spin_s": 5}', {b"Orb-Deadline-Ms": [b"800"]}, 504,
             "timeout"),
        ]:
            got, answer, _ = yield self.http(method, url, body, headers)
            self.assertEqual((got, json.loads(answer)["code"]), (status, error), answer[:500])
            if status == 502:
                self.assertIn("KeyError", json.loads(answer)["log"])

        # An oversized input is refused from its Content-Length; a slowloris is dropped; honest calls go on.
        big = _Raw()
        yield protocol.ClientCreator(reactor, lambda: big).connectTCP("127.0.0.1", port)
        big.transport.write(f"POST /f/{fid} HTTP/1.1\r\nHost: x\r\nContent-Length: {2 * mf.MAX_INPUT_BYTES}"
                            "\r\n\r\n".encode())
        refused = yield big.closed
        self.assertTrue(refused.startswith(b"HTTP/1.1 413 "), refused[:200])
        slow = _Raw()
        yield protocol.ClientCreator(reactor, lambda: slow).connectTCP("127.0.0.1", port)
        self.addCleanup(lambda: slow.transport.loseConnection() if slow.transport.connected else None)
        slow.transport.write(f"POST /f/{fid} HTTP/1.1\r\n".encode())
        code, body, _ = yield self.http(b"POST", f"{api}/f/{fid}", b'{"a": 2, "b": 3}')
        self.assertEqual((code, json.loads(body)), (200, {"sum": 5}))
        for _ in range(int(gw.GatewayConfig().receive_timeout_s) * 2 + 4):
            if not slow.transport.connected:
                break
            slow.transport.write(b"X")
            yield deferLater(reactor, 0.5, lambda: None)
        dropped = yield slow.closed
        self.assertTrue(dropped.startswith(b"HTTP/1.1 408 "), dropped[:200])

        # The figures: the functions API and /metrics.
        code, doc = yield tracker.get_json(f"/api/v1/functions/{fid}")
        self.assertEqual((doc["calls"]["calls_total"], doc["calls"]["errors_total"]), (5, 2))
        self.assertIsNotNone(doc["calls"]["p99_ms"])
        code, metrics, _ = yield self.http(b"GET", f"{api}/metrics")
        self.assertIn(f'orb_function_calls_total{{fid="{fid}"}} 5'.encode(), metrics)

        # orb invoke: gateway and wire, and its exit codes.
        code, out, err = yield self.orb("invoke", fid, "--data", '{"a": 3, "b": 4}', "--api", api, "--json")
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        self.assertEqual((doc["status"], json.loads(doc["output"]), doc["cached"]), ("ok", {"sum": 7}, False))
        self.assertIn(doc["replica"], verified)
        self.assertEqual(set(doc["timing"]), {f"{k}_ms" for k in ("queue", "fetch", "boot", "exec", "network",
                                                                  "total")})
        self.assertTrue(doc["route"].startswith("gateway"))
        code, out, err = yield self.orb("invoke", fid, "--data", '{"a": 3, "b": 4}', "--wire", "--tracker",
                                        tracker.wire_text, "--json")
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        self.assertEqual((doc["route"], json.loads(doc["output"])), ("wire", {"sum": 7}))
        self.assertIn("network_ms", doc["timing"])
        self.assertIn(doc["replica"], verified)  # the tracker's replica TLV names the host that ran it
        node_key = os.path.join(self.net.base_dir, "owner", "private", "node.key")
        self.assertEqual(os.stat(node_key).st_mode & 0o777, 0o600)  # this node's own key, kept
        for argv, status in [
            ((fid, "--data", '{"a": 1}'), 1),  # the function failed
            ((fid, "--data", '{"a": 1, "b": 1, "spin_s": 5}', "--timeout", "0.8"), 11),  # the deadline passed
            ((UNKNOWN_FID, "--data", ""), 10),  # no such function
        ]:
            code, out, err = yield self.orb("invoke", *argv, "--api", api)
            self.assertEqual(code, status, (argv, out, err))
        code, out, err = yield self.orb("invoke", fid, "--data", "{}", "--api", "http://127.0.0.1:1")
        self.assertEqual(code, 6, out + err)  # a network error
        self.assertEqual(tracker.tracebacks, 0, tracker.text[-3000:])
