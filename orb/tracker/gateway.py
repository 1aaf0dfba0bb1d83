# -*- test-case-name: tests.test_gateway -*-
"""
The HTTP gateway on the tracker's HTTP endpoint: a function answers curl.

Routes (``GatewayResource``; ``GatewaySite`` adds Host-header routing):

============================  ================================================
``POST /f/<fid>``             call the function: the request body is its
                              input, the response body its output
``GET /f/<fid>``              the function's metadata, JSON
``OPTIONS /f/<fid>``          CORS preflight
``POST /`` with               the same call, for ``curl -X POST
``Host: <fid>.orb[:P]``       http://<fid>.orb:PORT/`` once the tracker is the
                              DNS server (``GET /``: metadata)
``POST /n/<owner>/<name>``    call the version a name serves (RFC 9.10: the
                              newest not deprecated); ``Orb-Fid`` says which
``GET /n/<owner>/<name>``     that version's metadata, and the name's
``POST /`` with               the same, for ``curl -X POST
``Host: <name>.<owner>.orb``  http://<name>.<owner>.orb:PORT/``
============================  ================================================

A deprecated fid's answers (calls, metadata, and the 410 past its sunset)
carry ``Deprecation: @<unix>`` (RFC 9745: when this tracker learnt of the
deprecation; the signed statement has no time), ``Sunset: <HTTP-date>`` (RFC 8594) when it has a sunset, and
``Link: <http://HOST/f/<successor>>; rel="successor-version"`` when it
names a successor.

A caller may send ``Orb-Deadline-Ms: N`` (1 to 300000, decimal digits):
the call's deadline in milliseconds, from when the gateway has the whole
request; without it the function's own ``timeout_ms`` applies.

A private function (RFC 10.9) takes ``Authorization: Bearer <token>``; a
token bound to a key also needs ``Orb-Key``, ``Orb-Date`` and
``Orb-Signature`` (``proven_key``). Its GET shows only ``private_view``
unless that proof is the owner's. A public function's call may carry a
token as well: one that parses is checked the same way (a forged or
expired one is 403; an Authorization that is no token is ignored), and a call
with the owner's token is one the owner pays its hosts for (RFC 10.10).
A function whose manifest requires payment answers 402
``payment-required`` once its escrow deposit is spent (RFC 10.10.2).

Every answer carries CORS headers (``Access-Control-Allow-Origin: *``) and
``Orb-Request-Id`` (32 hex digits, also the INVOKE's ``trace_id`` TLV).
A call's answer carries ``X-Orb-Status`` (the RESULT status, lowercase),
``Orb-Replica`` (the host's node id, hex), ``Orb-Route``, ``Server-Timing``
(``queue``, ``fetch``, ``boot``, ``exec``, ``network`` and ``total``, in
ms; all but ``total`` are 0 for a cached answer, which ran nothing) and,
for an answer from the tracker's result cache, ``Orb-Cached: 1`` and
``Age``. Errors are JSON: ``{"code": ..., "error": ..., "message": ...,
"request_id": ...}`` where ``code`` is stable:

======  =================================  ===================================
status  ``code``                           when
======  =================================  ===================================
400     ``bad-fid``, ``bad-deadline``,     a malformed fid (path or Host), a bad
        ``bad-path``, ``bad-name``         ``Orb-Deadline-Ms``, a path not ``/f/<fid>``
                                           or ``/n/<owner>/<name>``, a malformed
                                           owner label or name
401     ``token_required``                 a private function called without
                                           ``Authorization: Bearer``
403     ``token_expired``, ``token_scope``, the token is refused (RFC 9.11.2),
        ``token_revoked``, ``token_forged``, or a bad ``Orb-Signature`` proof
        ``token_caller``, ``token_widened``, (``token_caller``); ``denied``: any
        ``token_malformed``, ``denied``      other RESULT ``denied``
404     ``not-found``                      no such function
404     ``name-not-found``                 no NAME record for that owner and name
410     ``gone``                           the fid is past its sunset, or every
                                           version of the name is (or RESULT ``gone``)
405     ``method-not-allowed``             not GET, HEAD, POST or OPTIONS
408     ``request-timeout``                the request did not arrive in time
413     ``input-too-large``                over the manifest's ``max_input_bytes``
                                           or the tracker's cap (from
                                           Content-Length, before the body)
429     ``rate-limited``                   the client's IP is over its rate;
                                           ``Retry-After``
502     ``function-error``, ``out-of-      the function failed: ``status`` and
        memory``, ``killed-by-policy``,    ``log`` (its tail) in the body
        ``output-too-large``, ``internal``
503     ``busy``, ``refused``              no replica can take the call now;
                                           ``Retry-After``
504     ``timeout``                        the deadline passed
======  =================================  ===================================

Bounds: a new connection must send its first request line within
``receive_timeout_s``, a request's headers and body must arrive within
``receive_timeout_s`` of its first line, and a kept-alive connection must
start its next request within ``idle_timeout_s`` (a slowloris client is
dropped, others are not slowed); the body is held once, in one buffer no larger than the
cap; at most ``max_in_flight`` calls wait on the router; the per-IP
token buckets are an LRU table of ``max_clients``; at most
``max_connections`` connections are open (``ConnectionLimit``). The output is written
in ``OUTPUT_CHUNK_BYTES`` pieces as the client reads.
"""

import base64
import binascii
import collections
import hashlib
import io
import struct
import json
import math
import os
import re
import weakref

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.web import http, server
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from orb.dns import names as dnsnames
from orb.protocol import fid as fidmod
from orb.protocol import token as tokenmod
from orb.identity import verify_signature
from orb.protocol.codes import ErrorCode, ResultStatus
from orb.protocol.manifest import MAX_INPUT_BYTES, MAX_TIMEOUT_MS
from orb.tracker.cache import cached_age_ms

log = Logger()

PROOF_WINDOW_S = 60  # Orb-Date within this of the gateway's clock (RFC 10.9)
MAX_DEADLINE_MS = MAX_TIMEOUT_MS  # the longest a function may run; a longer Orb-Deadline-Ms is refused
DEADLINE_HEADER = b"orb-deadline-ms"
OUTPUT_CHUNK_BYTES = 64 * 1024
REFUSED_LINGER_S = 2.0  # after a 413, the rest of the body is read and dropped this long before the close
ERROR_LOG_TAIL_BYTES = 4096  # the end of a failed call's log that a 502 carries
DEFAULT_RETRY_AFTER_S = 1
JSON_TYPE = b"application/json"
TOO_MANY_REQUESTS = 429  # not in twisted.web.http
EXPOSED_HEADERS = (b"X-Orb-Status, Orb-Request-Id, Orb-Replica, Orb-Route, Orb-Cached, Age, Server-Timing, "
                   b"Retry-After, WWW-Authenticate, Orb-Fid, Deprecation, Sunset, Link")
_HOST_RE = re.compile(rb"[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?\Z|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?\Z")

# Every RESULT status, and what the gateway answers for it: (HTTP status, stable code).
RESULT_HTTP = {
    ResultStatus.OK: (http.OK, "ok"),
    ResultStatus.ERROR: (http.BAD_GATEWAY, "function-error"),
    ResultStatus.TIMEOUT: (http.GATEWAY_TIMEOUT, "timeout"),
    ResultStatus.MEMORY: (http.BAD_GATEWAY, "out-of-memory"),
    ResultStatus.KILLED_BY_POLICY: (http.BAD_GATEWAY, "killed-by-policy"),
    ResultStatus.OUTPUT_TOO_LARGE: (http.BAD_GATEWAY, "output-too-large"),
    ResultStatus.BUSY: (http.SERVICE_UNAVAILABLE, "busy"),
    ResultStatus.NOT_FOUND: (http.NOT_FOUND, "not-found"),
    ResultStatus.DENIED: (http.FORBIDDEN, "denied"),
    ResultStatus.REFUSED: (http.SERVICE_UNAVAILABLE, "refused"),
    ResultStatus.INTERNAL: (http.BAD_GATEWAY, "internal"),
    ResultStatus.GONE: (http.GONE, "gone"),
    ResultStatus.PAYMENT_REQUIRED: (http.PAYMENT_REQUIRED, "payment-required"),
}
RETRY_LATER = (ResultStatus.BUSY, ResultStatus.REFUSED)
# An Answer's ``refusal`` (an ErrorCode: the router refused the call before routing it).
ROUTER_REFUSALS = {
    int(ErrorCode.OUT_OF_RANGE): (http.BAD_REQUEST, "bad-deadline"),
    int(ErrorCode.TOO_LARGE): (http.REQUEST_ENTITY_TOO_LARGE, "input-too-large"),
}


@attrs.frozen
class GatewayConfig:
    """The gateway's limits (``twistd orb-tracker --gateway-*``)."""

    max_input_bytes: int = MAX_INPUT_BYTES  # the tracker's cap on a call's input, whatever the manifest says
    rate_per_s: float = 50.0  # calls per second per client IP, sustained; 0: no limit
    burst: int = 100  # calls a client IP may make at once
    max_clients: int = 10_000  # client IPs with a token bucket; the least recently seen is forgotten first
    max_in_flight: int = 512  # calls waiting on the router; more get 503
    max_connections: int = 4096  # open HTTP connections; more are closed on accept
    receive_timeout_s: float = 10.0  # a request's headers and body arrive within this of its first line
    idle_timeout_s: float = 60.0  # a connection starts its next request within this


class ClientBuckets:
    """Token buckets by client IP: ``rate_per_s`` sustained, ``burst`` at once, ``max_clients`` kept."""

    def __init__(self, clock, rate_per_s, burst, max_clients):
        self.clock = clock
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_clients = max_clients
        self._buckets = collections.OrderedDict()  # ip -> (tokens, at)

    def take(self, ip):
        """Take a token for ``ip``: 0.0 if it may go ahead, else the seconds until it may."""
        if self.rate_per_s <= 0:
            return 0.0
        now = self.clock.seconds()
        tokens, at = self._buckets.pop(ip, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate_per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate_per_s
        self._buckets[ip] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self):
        return len(self._buckets)


def _json_bytes(doc):
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _cors(request):
    request.setHeader(b"Access-Control-Allow-Origin", b"*")
    request.setHeader(b"Access-Control-Expose-Headers", EXPOSED_HEADERS)


def _answer_json(request, status, doc):
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", JSON_TYPE)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Cache-Control", b"no-store")
    return _json_bytes(doc)


def _error(request, http_status, code, message, **extra):
    doc = {"code": code, "error": code, "message": message, **extra}
    request_id = request.responseHeaders.getRawHeaders(b"orb-request-id")
    if request_id:
        doc["request_id"] = request_id[0].decode("ascii")
    return _answer_json(request, http_status, doc)


def raw_error(status, code, message):
    """A complete HTTP/1.1 error response, for when the request never reached a resource."""
    body = _json_bytes({"code": code, "error": code, "message": message})
    head = [
        b"HTTP/1.1 %d %s" % (status, http.RESPONSES.get(status, b"Too Many Requests" if status == 429 else b"Error")),
        b"Content-Type: " + JSON_TYPE,
        b"Content-Length: %d" % len(body),
        b"Connection: close",
        b"Cache-Control: no-store",
        b"Access-Control-Allow-Origin: *",
        b"Access-Control-Expose-Headers: " + EXPOSED_HEADERS,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def parse_fid(text):
    """The 32-byte fid that ``text`` (bytes, the 53 base32 characters) names, or None."""
    try:
        raw = fidmod.from_text(text.decode("ascii"))
        fidmod.check(raw)
    except (UnicodeDecodeError, fidmod.FidError):
        return None
    return raw


def host_labels(request_or_headers):
    """For a ``Host: <labels>.orb[:port]`` header, the labels before ``.orb`` (bytes, lowercase); else None."""
    headers = getattr(request_or_headers, "requestHeaders", request_or_headers)
    values = headers.getRawHeaders(b"host")
    if not values:
        return None
    host = values[0].strip().lower()
    if host.startswith(b"["):
        return None  # an IPv6 literal
    host = host.rsplit(b":", 1)[0] if b":" in host else host
    host = host.rstrip(b".")
    if not host.endswith(b".orb"):
        return None
    labels = host[: -len(b".orb")].split(b".")
    return labels if all(labels) else None


def host_label(request_or_headers):
    """For a ``Host: <label>.orb[:port]`` header, ``<label>`` (bytes, lowercase); else None."""
    labels = host_labels(request_or_headers)
    return labels[0] if labels is not None and len(labels) == 1 else None


def host_name(request_or_headers):
    """For a ``Host: <name>.<owner>.orb[:port]`` header, ``[<owner>, <name>]`` (bytes); else None."""
    labels = host_labels(request_or_headers)
    return [labels[1], labels[0]] if labels is not None and len(labels) == 2 else None


def parse_name(owner, name):
    """(owner label, name) as text from two path segments (bytes), or None when either is malformed."""
    try:
        owner_text, name_text = owner.decode("ascii").lower(), name.decode("ascii").lower()
    except UnicodeDecodeError:
        return None
    if not dnsnames.is_owner_label(owner_text) or dnsnames.classify(f"{name_text}.{owner_text}.orb").kind \
            is not dnsnames.Kind.NAMED:
        return None
    return owner_text, name_text


def parse_deadline_ms(request):
    """The ``Orb-Deadline-Ms`` header: None if absent, an int from 1 to MAX_DEADLINE_MS, or ValueError."""
    values = request.requestHeaders.getRawHeaders(DEADLINE_HEADER)
    if not values:
        return None
    raw = values[0].strip()
    if len(values) > 1 or not raw.isdigit() or len(raw) > 10:
        raise ValueError(f"Orb-Deadline-Ms must be one whole number of milliseconds from 1 to {MAX_DEADLINE_MS}")
    value = int(raw)
    if not 1 <= value <= MAX_DEADLINE_MS:
        raise ValueError(f"Orb-Deadline-Ms must be from 1 to {MAX_DEADLINE_MS} milliseconds, not {value}")
    return value


def capability_token(request):
    """The INVOKE ``token`` a request carries: the bytes of ``Authorization: Bearer <base64url>`` (RFC 10.9),
    b"" without one; ValueError (a TokenError) for a Bearer value that is not a token's text."""
    values = request.requestHeaders.getRawHeaders(b"authorization") or []
    for value in values:
        value = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, rest = value.strip().partition(" ")
        if scheme.lower() == "bearer":
            return tokenmod.from_text(rest.strip())
    return b""


def proven_key(request, body, now):
    """The key an ``Orb-Key``/``Orb-Date``/``Orb-Signature`` proof shows the caller holds (RFC 10.9), None
    without one; ValueError for a proof that is present but fails."""
    headers = request.requestHeaders
    key_text, date_text, sig_text = ((headers.getRawHeaders(h) or [b""])[0].decode("latin-1") or None
                                     for h in (b"orb-key", b"orb-date", b"orb-signature"))
    if key_text is None and sig_text is None:
        return None
    try:
        key = _b64url(key_text, 32)
        sig = _b64url(sig_text, 64)
        if date_text is None or not date_text.strip().isdigit() or len(date_text.strip()) > 12:
            raise ValueError("Orb-Date must be Unix seconds")
        date = int(date_text.strip())
    except ValueError as e:
        raise ValueError(f"bad key proof: {e}") from None
    if abs(date - now) > PROOF_WINDOW_S:
        raise ValueError(f"Orb-Date is more than {PROOF_WINDOW_S} s from the gateway's clock")
    if not verify_signature(key, sig, proof_bytes(date, body, request.method, request.uri)):
        raise ValueError("Orb-Signature does not verify with Orb-Key")
    return key


def proof_bytes(date, body, method, target):
    """What ``Orb-Signature`` signs (RFC 10.9)."""
    return b"".join([b"ORB-HTTP-v1\x00", struct.pack(">Q", date), hashlib.sha256(body).digest(), method, b" ", target])


def _b64url(text, n):
    if text is None:
        raise ValueError("Orb-Key, Orb-Date and Orb-Signature go together")
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if len(raw) != n:
        raise ValueError(f"expected {n} bytes")
    return raw


def private_view(function):
    """All that a private function's metadata shows to anyone but its owner (RFC 10.9)."""
    return {"fid": function.fid, "visibility": "private", "dns_name": f"{function.fid}.orb",
            "call": f"/f/{function.fid}"}


class DeprecationTimes:
    """When this tracker learnt of each deprecation, for ``Deprecation: @<unix>``: the signed DEPRECATE
    carries no time of its own. Recorded as a deprecation record enters the registry (from its owner or by
    federation); one already held at start, or never seen arrive, gets the time it is first asked about.
    Keyed by (fid, seq); at most MAX_ENTRIES, the least recently used forgotten first."""

    MAX_ENTRIES = 10_000  # as many as the registry holds deprecation records

    def __init__(self, clock, registry=None):
        self.clock = clock
        self._at = collections.OrderedDict()  # (fid text, seq) -> unix seconds
        watch = getattr(registry, "watch_records", None)
        if watch is not None:
            watch(self._record_taken)

    def _record_taken(self, spec, record):
        if getattr(spec, "name", None) == "deprecation" and getattr(record, "deprecated", False):
            self._remember((record.fid, record.seq))

    def _remember(self, key):
        at = self._at.pop(key, None)
        self._at[key] = int(self.clock.seconds()) if at is None else at
        while len(self._at) > self.MAX_ENTRIES:
            self._at.popitem(last=False)
        return self._at[key]

    def since(self, status):
        """The Unix time this tracker learnt of ``status`` (a FidStatus)."""
        return self._remember((status.fid, status.seq))


def successor_url(request, successor):
    """``http://HOST/f/<successor>`` with the request's own Host (when it is a plain host[:port]), else the
    path alone, which RFC 8288 resolves against the request's URL."""
    values = request.requestHeaders.getRawHeaders(b"host")
    host = values[0].strip() if values else b""
    path = f"/f/{successor}"
    if host and _HOST_RE.match(host):
        scheme = "https" if request.isSecure() else "http"
        return f"{scheme}://{host.decode('ascii')}{path}"
    return path


def deprecation_headers(request, status, since):
    """``Deprecation``, ``Sunset`` and ``Link: rel="successor-version"`` for a deprecated fid (RFC 10.8),
    from ``status`` (the names core's FidStatus, or None: nothing is set) and ``since`` (a
    DeprecationTimes)."""
    if status is None or not status.deprecated:
        return
    request.setHeader(b"Deprecation", b"@%d" % since.since(status))  # RFC 9745: an sf-date
    if status.sunset:
        request.setHeader(b"Sunset", http.datetimeToString(int(status.sunset)))  # RFC 8594: an HTTP-date
    if status.successor:
        link = f'<{successor_url(request, status.successor)}>; rel="successor-version"'
        request.setHeader(b"Link", link.encode("ascii"))


def deprecation_json(status):
    """A fid's deprecation as JSON (the gateway's metadata and the HTTP API), or None when it has none."""
    if status is None:
        return None
    return {"deprecated": bool(status.deprecated), "successor": status.successor or None,
            "sunset": int(status.sunset) or None, "gone": bool(status.gone), "seq": int(status.seq)}


class _OutputProducer:
    """Writes a call's output to the client ``OUTPUT_CHUNK_BYTES`` at a time, as the transport drains."""

    def __init__(self, request, data):
        self.request = request
        self.view = memoryview(data)
        self.offset = 0

    def start(self):
        self.request.registerProducer(self, False)

    def resumeProducing(self):
        if self.view is None:
            return
        chunk = self.view[self.offset : self.offset + OUTPUT_CHUNK_BYTES]
        self.offset += len(chunk)
        if chunk:
            self.request.write(bytes(chunk))
        if self.offset >= len(self.view):
            self.view = None
            self.request.unregisterProducer()
            self.request.finish()

    def pauseProducing(self):
        pass

    def stopProducing(self):
        self.view = None


class GatewayResource(Resource):
    """
    ``/f/<fid>``: calls and metadata. ``router.call`` routes a call
    (orb.tracker.router); ``calls`` (a ``CallStats``) gets every answered
    call; ``metadata(function)``, if given, adds to the GET document.
    """

    isLeaf = True

    def __init__(self, clock, registry, router, calls, config=GatewayConfig(), metadata=None, names=None):
        super().__init__()
        self.names = names  # the tracker's names core (orb.tracker.names), or None: /n/ finds nothing
        self.deprecation_times = DeprecationTimes(clock, registry)
        self.clock = clock
        self.registry = registry
        self.router = router
        self.calls = calls
        self.config = config
        self.buckets = ClientBuckets(clock, config.rate_per_s, config.burst, config.max_clients)
        self.in_flight = 0
        self.metadata = metadata  # FunctionRecord -> more members for GET (the HTTP API's view of the function)
        # Router.call takes trace_id since the router's rewrite for issue 11; a router without it gets none.

    # -- names and deprecation -------------------------------------------------------------------------

    def fid_status(self, fid):
        """The fid's deprecation (a FidStatus), or None."""
        return self.names.fid_status(fid) if self.names is not None else None

    def serving(self, owner_label, name):
        """(fid text or None, known): the fid that ``<name>.<owner>`` serves, and whether the name is known."""
        if self.names is None:
            return None, False
        fid = self.names.serving_fid(owner_label, name)
        if fid is not None:
            return fid, True
        return None, self.names.resolve(owner_label, name) is not None

    # -- what GatewayRequest asks before the body arrives --------------------------------------------

    def input_cap_bytes(self, fid_raw):
        """The largest input a call of ``fid_raw`` may carry: the tracker's cap, or the manifest's if lower."""
        cap = self.config.max_input_bytes
        if fid_raw is None:
            return cap
        function = self.registry.function(fidmod.to_text(fid_raw))
        if function is None:
            return cap
        declared = function.manifest_json().get("max_input_bytes", MAX_INPUT_BYTES)
        return min(cap, declared) if isinstance(declared, int) else cap

    # -- rendering -------------------------------------------------------------------------------------

    def render(self, request):
        request_id = os.urandom(16)
        request.setHeader(b"Orb-Request-Id", request_id.hex().encode("ascii"))
        _cors(request)
        if request.method == b"OPTIONS":
            request.setHeader(b"Access-Control-Allow-Methods", b"GET, HEAD, POST, OPTIONS")
            request.setHeader(b"Access-Control-Allow-Headers",
                             b"Content-Type, Orb-Deadline-Ms, Authorization, Orb-Key, Orb-Date, Orb-Signature")
            request.setHeader(b"Access-Control-Max-Age", b"600")
            request.setResponseCode(http.NO_CONTENT)
            return b""
        if request.method not in (b"GET", b"HEAD", b"POST"):
            request.setHeader(b"Allow", b"GET, HEAD, POST, OPTIONS")
            return _error(request, http.NOT_ALLOWED, "method-not-allowed",
                          "call a function with POST; GET gives its metadata")
        wait_s = self.buckets.take(_client_ip(request))
        if wait_s > 0:
            request.setHeader(b"Retry-After", str(max(1, math.ceil(wait_s))).encode("ascii"))
            return _error(request, TOO_MANY_REQUESTS, "rate-limited",
                          "this address is over its call rate; retry after Retry-After seconds")
        named = None
        if request.prepath[-1:] == [b"n"]:
            if len(request.postpath) != 2 and request.postpath[2:] != [b""]:
                return _error(request, http.BAD_REQUEST, "bad-path", "the path of a named function is /n/<owner>/<name>")
            named = parse_name(*request.postpath[:2])
            if named is None:
                return _error(request, http.BAD_REQUEST, "bad-name",
                              "not a name: /n/<owner>/<name> takes an owner label (32 base32 characters, "
                              "`orb info NAME` prints it) and a DNS label")
            fid, known = self.serving(*named)
            if fid is None and not known:
                return _error(request, http.NOT_FOUND, "name-not-found",
                              f"no function is named {named[1]} by owner {named[0]}")
            if fid is None:
                return _error(request, http.GONE, "gone", f"every version of {named[1]}.{named[0]} is past its sunset")
            fid_raw = fidmod.from_text(fid)
            request.setHeader(b"Orb-Fid", fid.encode("ascii"))
        else:
            if len(request.postpath) != 1 and request.postpath[1:] != [b""]:
                return _error(request, http.BAD_REQUEST, "bad-path", "the path of a function is /f/<fid>")
            fid_raw = parse_fid(request.postpath[0]) if request.postpath else None
            if fid_raw is None:
                return _error(request, http.BAD_REQUEST, "bad-fid",
                              "not a fid: give the 53 base32 characters `orb hash` prints")
            fid = fidmod.to_text(fid_raw)
        status = self.fid_status(fid)
        deprecation_headers(request, status, self.deprecation_times)
        if status is not None and status.gone:
            extra = {"successor": status.successor} if status.successor else {}
            return _error(request, http.GONE, "gone", f"function {fid} is past its sunset "
                          f"({http.datetimeToString(int(status.sunset)).decode('ascii')}); its owner withdrew it",
                          fid=fid, sunset=int(status.sunset), **extra)
        function = self.registry.function(fid)
        if function is None:
            return _error(request, http.NOT_FOUND, "not-found", f"no function {fid} is deployed")
        private = function.manifest_json().get("visibility", "public") != "public"
        if request.method != b"POST":
            if private and not self._proves_owner(request, function):
                return _answer_json(request, http.OK, private_view(function))
            doc = self._metadata(function, status)
            if named is not None:
                view = self.names.resolve(*named)
                doc["named"] = {"owner_label": named[0], "name": named[1], "dns_name": dnsnames.named_name(named[1], named[0]),
                                "seq": view.seq if view is not None else None, "serving": fid}
            return _answer_json(request, http.OK, doc)
        try:
            deadline_ms = parse_deadline_ms(request)
        except ValueError as e:
            return _error(request, http.BAD_REQUEST, "bad-deadline", str(e))
        body = request.take_body() if isinstance(request, GatewayRequest) else request.content.read()
        cap = self.input_cap_bytes(fid_raw)
        if len(body) > cap:
            return _error(request, http.REQUEST_ENTITY_TOO_LARGE, "input-too-large",
                          f"the input is {len(body)} bytes; this function takes at most {cap}")
        if self.in_flight >= self.config.max_in_flight:
            request.setHeader(b"Retry-After", str(DEFAULT_RETRY_AFTER_S).encode("ascii"))
            return _error(request, http.SERVICE_UNAVAILABLE, "busy",
                          "the gateway has too many calls in flight; retry after Retry-After seconds")
        # A private function needs a token. A public one takes a token too: checked, it makes the call one
        # its owner pays hosts for (RFC 10.10); an Authorization that is no token is ignored there.
        try:
            token = capability_token(request)
        except tokenmod.TokenError as e:
            if private:
                return _error(request, http.FORBIDDEN, e.reason, e.text)
            token = b""
        try:
            caller = proven_key(request, body, int(self.clock.seconds()))
        except ValueError as e:  # a proof that is present but fails (RFC 10.9)
            return _error(request, http.FORBIDDEN, tokenmod.CALLER, str(e))
        self._call(request, fid, fid_raw, body, deadline_ms, request_id, token, caller)
        return NOT_DONE_YET

    def _proves_owner(self, request, function):
        try:
            return proven_key(request, b"", int(self.clock.seconds())) == function.owner
        except ValueError:
            return False

    def _metadata(self, function, status=None):
        manifest = function.manifest_json()
        doc = {
            "fid": function.fid,
            "name": manifest["name"],
            "version": function.version,
            "owner": function.owner.hex(),
            "package_size": function.package_size,
            "deployed_at": function.issued_at,
            "dns_name": f"{function.fid}.orb",
            "call": f"/f/{function.fid}",
            "max_input_bytes": min(self.config.max_input_bytes, manifest.get("max_input_bytes", MAX_INPUT_BYTES)),
            "manifest": manifest,
            "calls": self.calls.figures(function.fid).to_json(),
            "deprecation": deprecation_json(status),
        }
        if self.metadata is not None:
            doc.update(self.metadata(function))
        return doc

    def _call(self, request, fid, fid_raw, body, deadline_ms, request_id, token=b"", caller=None):
        started = self.clock.seconds()
        self.in_flight += 1
        kwargs = {"deadline_s": None if deadline_ms is None else deadline_ms / 1000,
                  "token": token, "trace_id": request_id}
        if caller is not None:
            kwargs["caller"] = caller
        try:
            d = self.router.call(fid_raw, body, **kwargs)
        except Exception:
            d = defer.fail()
        del body

        def cancel_on_disconnect(reason):
            d.cancel()  # the router withdraws the call: CANCEL to the host, which kills the jail child

        request.notifyFinish().addErrback(cancel_on_disconnect)

        def done(outcome):
            self.in_flight -= 1
            return outcome

        def answered(answer):
            if not getattr(answer, "refusal", 0):  # a call refused before routing is not a call of the function
                self.calls.observe_call(fid, self.clock.seconds() - started,
                                        answer.result.status_kind == ResultStatus.OK)
            if request._disconnected or request.finished:
                return
            self._respond(request, answer, self.clock.seconds() - started)

        def failed(failure):
            if failure.check(defer.CancelledError):
                return  # the client went away
            log.failure("gateway call of {fid} failed", failure, fid=fid)
            if not (request._disconnected or request.finished):
                request.write(_error(request, http.BAD_GATEWAY, "internal", "the tracker failed to route the call"))
                request.finish()

        def broken(failure):
            log.failure("gateway: answering a call of {fid} failed", failure, fid=fid)
            if not (request._disconnected or request.finished):
                request.loseConnection()

        d.addBoth(done)
        d.addCallbacks(answered, failed)
        d.addErrback(broken)

    def _respond(self, request, answer, total_s):
        refusal = getattr(answer, "refusal", 0)
        if refusal:  # the router refused the call before routing it
            status, code = ROUTER_REFUSALS.get(refusal, (http.BAD_REQUEST, "bad-request"))
            request.write(_error(request, status, code, answer.result.log[:500].decode("utf-8", "replace")))
            request.finish()
            return
        result = answer.result
        status = result.status_kind
        code, name = RESULT_HTTP[status]
        request.setHeader(b"X-Orb-Status", status.name.lower().encode("ascii"))
        if answer.replica is not None:
            request.setHeader(b"Orb-Replica", answer.replica.hex().encode("ascii"))
        request.setHeader(b"Orb-Route", str(getattr(answer, "route", "direct")).encode("ascii", "replace"))
        age_ms = cached_age_ms(result)
        cached = getattr(answer, "cached", False) or age_ms is not None
        timing = [("queue", result.queue_us / 1000), ("fetch", result.fetch_us / 1000),
                  ("boot", result.boot_us / 1000), ("exec", result.exec_us / 1000),
                  ("network", answer.network_us / 1000)]
        if cached:  # this call ran nothing: the stored RESULT's times were another call's
            timing = [(name, 0.0) for name, _ in timing]
        timing.append(("total", total_s * 1000))
        request.setHeader(b"Server-Timing", ", ".join(f"{k};dur={v:.3f}" for k, v in timing).encode("ascii"))
        if cached:
            request.setHeader(b"Orb-Cached", b"1")
            request.setHeader(b"Age", str((age_ms or 0) // 1000).encode("ascii"))
        if status == ResultStatus.OK:
            request.setResponseCode(http.OK)
            request.setHeader(b"Content-Type", b"application/octet-stream")
            request.setHeader(b"Content-Length", str(len(result.output)).encode("ascii"))
            request.setHeader(b"Cache-Control", b"no-store")
            _OutputProducer(request, result.output).start()
            return
        if status in RETRY_LATER:
            retry_s = getattr(answer, "retry_after_s", None) or DEFAULT_RETRY_AFTER_S
            request.setHeader(b"Retry-After", str(max(1, math.ceil(retry_s))).encode("ascii"))
        logtext = result.log[-ERROR_LOG_TAIL_BYTES:].decode("utf-8", "replace")
        if status == ResultStatus.DENIED:  # a refused token: 401 or 403 with the reason (RFC 10.9)
            reason, _, text = logtext.partition(": ")
            if reason in tokenmod.REASONS:
                code = http.UNAUTHORIZED if reason == tokenmod.REQUIRED else http.FORBIDDEN
                if code == http.UNAUTHORIZED:
                    request.setHeader(b"WWW-Authenticate", b'Bearer realm="orb"')
                request.write(_error(request, code, reason, text[:500], status="denied", log=logtext[:600]))
                request.finish()
                return
        message = {
            ResultStatus.ERROR: "the function failed",
            ResultStatus.TIMEOUT: "the deadline passed before the function answered",
            ResultStatus.MEMORY: "the function ran out of memory",
            ResultStatus.KILLED_BY_POLICY: "the jail stopped a forbidden system call",
            ResultStatus.OUTPUT_TOO_LARGE: "the function's output passed the cap",
            ResultStatus.BUSY: "no replica can take the call right now; retry after Retry-After seconds",
            ResultStatus.NOT_FOUND: "no replica holds this function",
            ResultStatus.DENIED: "the call needs a capability token",
            ResultStatus.REFUSED: "the replicas refuse to run untrusted code unconfined",
            ResultStatus.INTERNAL: "the host failed",
            ResultStatus.GONE: "the function is past the sunset its owner set",
            ResultStatus.PAYMENT_REQUIRED: "the function's escrow deposit cannot pay for this call: its owner "
                                           "must top it up (orb fund)",
        }[status]
        request.write(_error(request, code, name, message, status=status.name.lower(), log=logtext,
                             replica=answer.replica.hex() if answer.replica is not None else None))
        request.finish()


def _client_ip(request):
    peer = request.getClientAddress()
    return getattr(peer, "host", str(peer))


class GatewayRequest(server.Request):
    """
    A request whose body is held once, in one buffer bounded by the call's
    input cap: refused with 413 from Content-Length before the body, or as
    soon as a chunked body passes the cap. The headers and the body must
    arrive within the gateway's ``receive_timeout_s`` of the first line.
    """

    # A POST body is a function's input, never an HTML form: twisted.web's form parsing (the
    # Content-Type through the email package, the body through parse_qs) was a tenth of the
    # tracker's time per call (bench/invoke.py --profile). Query strings are still parsed.
    _parsePOSTFormSubmission = False

    def __init__(self, channel, *args, **kwargs):
        super().__init__(channel, *args, **kwargs)
        self.body = bytearray()
        self._cap = None
        self._refused = False
        site = channel.site
        self._gateway = site.gateway
        transport = channel.transport
        seen = site.request_started(transport)
        self._receive_timer = site.reactor.callLater(site.gateway.config.receive_timeout_s, self._too_slow)
        # Once answered, a kept-alive connection must start its next request within idle_timeout_s.
        self.notifyFinish().addCallbacks(lambda _: site.watch(lambda: transport, seen, site.gateway.config.idle_timeout_s),
                                         lambda _: None)  # a lost connection needs no watching

    def _cancel_timer(self):
        if self._receive_timer is not None and self._receive_timer.active():
            self._receive_timer.cancel()
        self._receive_timer = None

    def _refuse(self, status, code, message, linger=False):
        """Answer now and close. With ``linger`` (a 413 while the client may still be sending its body)
        only our side is closed, and what the client sends is read and dropped for REFUSED_LINGER_S, so
        that its kernel does not reset the connection before it reads the answer."""
        self._refused = True
        self._cancel_timer()
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the answer
        transport = self.channel.transport
        if transport is None:
            return
        transport.write(raw_error(status, code, message))
        if linger and hasattr(transport, "loseWriteConnection"):
            transport.loseWriteConnection()
            self._receive_timer = self.channel.site.reactor.callLater(REFUSED_LINGER_S, transport.abortConnection)
        else:
            self.channel.loseConnection()

    def _too_slow(self):
        self._receive_timer = None
        log.info("gateway: dropping {peer}: its request did not arrive within {s} s",
                 peer=str(self.getClientAddress()), s=self._gateway.config.receive_timeout_s)
        self._refuse(http.REQUEST_TIMEOUT, "request-timeout", "the request did not arrive in time")

    def _target_fid(self):
        """The fid a call in the making is for: from the request line's path (the channel has parsed it,
        though Twisted sets ``self.path`` only once the body is in) or the Host header."""
        path = getattr(self.channel, "_path", b"").split(b"?", 1)[0]
        parts = path.split(b"/")
        if len(parts) >= 3 and parts[0] == b"" and parts[1] == b"f":
            return parse_fid(parts[2])
        named = None
        if len(parts) >= 4 and parts[0] == b"" and parts[1] == b"n":
            named = parse_name(parts[2], parts[3])
        elif path == b"/":
            label = host_label(self.requestHeaders)
            if label is not None:
                return parse_fid(label)
            labels = host_name(self.requestHeaders)
            named = parse_name(*labels) if labels is not None else None
        if named is not None:
            fid, _ = self._gateway.serving(*named)
            return fidmod.from_text(fid) if fid is not None else None
        return None

    def gotLength(self, length):
        self.content = io.BytesIO()  # Twisted's form parsing sees no body; the input is self.body
        self._cap = self._gateway.input_cap_bytes(self._target_fid())
        if length is not None and length > self._cap:
            self._refuse(http.REQUEST_ENTITY_TOO_LARGE, "input-too-large",
                         f"the input is {length} bytes; this function takes at most {self._cap}", linger=True)

    def handleContentChunk(self, data):
        if self._refused:
            return
        if len(self.body) + len(data) > self._cap:
            self._refuse(http.REQUEST_ENTITY_TOO_LARGE, "input-too-large",
                         f"the input passes this function's cap of {self._cap} bytes", linger=True)
            return
        self.body += data

    def take_body(self):
        """The input, as bytes; the buffer is emptied."""
        data = bytes(self.body)
        self.body = bytearray()
        return data

    def requestReceived(self, command, path, version):
        self._cancel_timer()
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def connectionLost(self, reason):
        self._cancel_timer()
        super().connectionLost(reason)


class GatewaySite(server.Site):
    """
    The tracker's HTTP site: ``GatewayRequest`` for every request,
    ``Host: <fid>.orb`` routing of ``/`` to the gateway; a new connection
    that starts no request within ``receive_timeout_s``, or a kept-alive
    one that starts no next request within ``idle_timeout_s``, is closed.
    """

    def __init__(self, resource, gateway, reactor):
        super().__init__(resource, requestFactory=GatewayRequest, reactor=reactor,
                         timeout=gateway.config.idle_timeout_s)
        self.gateway = gateway
        self._requests_started = weakref.WeakKeyDictionary()  # transport -> requests begun on it
        self._watches = {}  # id(watch) -> DelayedCall: connections that must start a request in time
        self._stopped = False

    def request_started(self, transport):
        """Count a request begun on ``transport``; returns how many have begun on it."""
        if transport is None:
            return 0
        self._requests_started[transport] = self._requests_started.get(transport, 0) + 1
        return self._requests_started[transport]

    def watch(self, get_transport, seen, within_s):
        """Close the connection unless it has started more than ``seen`` requests ``within_s`` from now."""
        def check():
            del self._watches[key]
            transport = get_transport()
            if transport is None or not getattr(transport, "connected", False):
                return
            if self._requests_started.get(transport, 0) <= seen:
                transport.write(raw_error(http.REQUEST_TIMEOUT, "request-timeout", "no request arrived in time"))
                transport.loseConnection()

        if self._stopped:
            return
        key = id(check)
        self._watches[key] = self.reactor.callLater(within_s, check)

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        # The site's protocol wraps the HTTPChannel (to switch to HTTP/2 after ALPN); the transport is the inner one's.
        # A new connection sends its first request line within receive_timeout_s.
        self.watch(lambda: getattr(getattr(channel, "_channel", channel), "transport", None), 0,
                   self.gateway.config.receive_timeout_s)
        return channel

    def log(self, request):
        """No access-log line per request: calls are counted in /metrics and the function figures, and a
        log line per call was a fifth of the tracker's CPU per call (bench/invoke.py --profile)."""

    def startFactory(self):
        self._stopped = False
        super().startFactory()

    def stopFactory(self):
        self._stopped = True
        for call in self._watches.values():
            if call.active():
                call.cancel()
        self._watches.clear()
        super().stopFactory()

    def getResourceFor(self, request):
        if request.postpath in ([b""], []):
            label, named = host_label(request), host_name(request)
            if label is not None or named is not None:
                request.site = self
                request.sitepath = []
                request.prepath = [b"f"] if label is not None else [b"n"]
                request.postpath = [label] if label is not None else named
                return self.gateway
        return super().getResourceFor(request)


class ConnectionLimit(policies.WrappingFactory):
    """The site behind a cap of ``max_connections`` open connections: one more is closed on accept."""

    def __init__(self, site):
        super().__init__(site)
        self.gateway = site.gateway
        self.max_connections = site.gateway.config.max_connections

    def buildProtocol(self, addr):
        if len(self.protocols) >= self.max_connections:
            log.info("gateway: {n} connections open; refusing {addr}", n=len(self.protocols), addr=str(addr))
            return None
        return super().buildProtocol(addr)
