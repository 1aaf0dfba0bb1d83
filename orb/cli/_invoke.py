# -*- test-case-name: tests.test_functions -*-
"""
``orb invoke FID [--data TEXT | --data-file F | -]``: call a deployed function.

By default through the tracker's HTTP gateway (``POST <api>/f/<fid>``,
with ``Orb-Deadline-Ms`` from ``--timeout``); with ``--wire`` over the ORB
wire through a tracker (INVOKE to ``--tracker``), which routes it to the
best replica, in a session under this node's own key
(``$ORB_HOME/private/node.key``, made on first use). Without ``--json`` the function's output goes to stdout as
it is; with it, one JSON document: ``ok``, ``status``, ``output`` (or
``output_base64``), ``log``, ``timing`` (``queue_ms``, ``fetch_ms``,
``boot_ms``, ``exec_ms``, ``network_ms``, ``total_ms``), ``replica``,
``cached``, ``route``, ``request_id``.

Exit status (EXIT_HELP): 0 the function answered OK; 1 the function
failed (error, memory, a forbidden syscall, output too large); 11 the
deadline passed; 6 the gateway or tracker could not be reached or broke
off; 8 no replica could take the call, or this address is over its rate
(busy, 429); 10 no such function; 3 the input is unreadable or over the
function's cap (413); 2 a malformed fid or deadline.
"""

import argparse
import base64
import json
import os
import sys
import textwrap
import time

from twisted.internet import defer

from orb.protocol.codes import ResultStatus
from orb.protocol.manifest import MAX_TIMEOUT_MS as MAX_DEADLINE_MS  # the gateway's, and a host's, largest deadline

from . import _config, _network, _ui
from ._ui import CommandError

EXIT_HELP = """\
exit status of invoke:
  0    the function answered OK
  1    the function failed (error, out of memory, a forbidden syscall, output too large)
  2    a malformed FID
  3    the input cannot be read, or is over the function's or the gateway's cap (HTTP 413)
  6    the gateway or tracker could not be reached or broke off (a network error)
  7    a private function refused the call: no token, or a token refused (expired, revoked, ...)
  8    no replica could take the call, or this address is over its rate: retry later
  10   no such function
  11   the call's deadline passed (a timeout)"""
# Gateway answers without a RESULT (the call never ran): stable error code -> (exit status, kind).
GATEWAY_REFUSALS = {
    "bad-fid": (_ui.EXIT_USAGE, "usage"), "bad-deadline": (_ui.EXIT_USAGE, "usage"),
    "bad-path": (_ui.EXIT_USAGE, "usage"), "not-found": (_ui.EXIT_NOT_FOUND, "not_found"),
    "input-too-large": (_ui.EXIT_INPUT, "too_large"), "rate-limited": (_ui.EXIT_BUSY, "busy"),
    "busy": (_ui.EXIT_BUSY, "busy"), "request-timeout": (_ui.EXIT_NETWORK, "network"),
    **{reason: (_ui.EXIT_REFUSED, "denied") for reason in (
        "token_required", "token_malformed", "token_forged", "token_widened", "token_expired", "token_scope",
        "token_revoked", "token_caller")},
}


def register(sub, verb):
    p = verb("invoke", "call a deployed function", invoke,
             "Call FID with the input from --data, --data-file or stdin, through the tracker's HTTP gateway "
             "(--api) or, with --wire, over the ORB wire through --tracker. The output goes to stdout; --json "
             "prints the status, output, timing breakdown (queue, fetch, boot, exec, network), replica, cached "
             "and route.")
    p.description = textwrap.fill(p.description, 79)
    p.epilog = EXIT_HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("fid", metavar="FID")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--data", metavar="TEXT", help="the input, as UTF-8 text")
    given.add_argument("--data-file", metavar="FILE", help="the input, the bytes of FILE ('-' for stdin)")
    given.add_argument("stdin", nargs="?", choices=["-"], metavar="-",
                       help="read the input from stdin (also the default without --data or --data-file)")
    route = p.add_mutually_exclusive_group()
    route.add_argument("--wire", action="store_true",
                       help="call over the ORB wire through --tracker, not the gateway, with this node's key "
                            "($ORB_HOME/private/node.key, made on first use)")
    route.add_argument("--direct", action="store_true",
                       help="no tracker in the path: resolve _orb._tcp.FID.orb SRV at --dns and call the first "
                            "reachable replica over the ORB wire, falling back down the list")
    p.add_argument("--dns", metavar="HOST:PORT", help="for --direct: a tracker's DNS (default: $ORB_DNS, "
                                                      "127.0.0.1:53)")
    p.add_argument("--tracker", metavar="[NODEID@]HOST:PORT", help="for --wire (default: $ORB_TRACKER, config.toml)")
    p.add_argument("--network", metavar="NAME", help="for --wire and --direct (default: $ORB_NETWORK, config.toml, "
                                                     "main)")
    p.add_argument("--api", metavar="URL", help="the gateway (default: $ORB_API, else api = \"...\" in config.toml)")
    p.add_argument("--timeout", metavar="S", type=_network._seconds, default=30.0,
                   help="the call's deadline in seconds, at most 300 (default 30)")
    p.add_argument("--token", metavar="TOKEN|@FILE",
                   help="a capability token for a private function (orb grant): sent as Authorization: Bearer "
                        "(with a proof of this node's key for a key-bound token), or in INVOKE with --wire")


def _input(args):
    if args.data is not None:
        return args.data.encode("utf-8")
    path = args.data_file or "-"
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CommandError(f"cannot read --data-file {path}: {e.strerror}", _ui.EXIT_INPUT, "input") from None


def invoke(args):
    raw = _ui.fid_argument(args.fid)
    data = _input(args)
    token = b""
    if getattr(args, "token", None):
        from ._tokens import read_token

        token = read_token(args.token).encode()
    if args.direct:
        from . import _direct, _resolve

        server = _resolve.dns_server(args.dns)
        network = _config.resolve_network(args.network)
        doc = _network.run_flow(lambda reactor: _direct.direct_call(reactor, server, args.fid, data, args.timeout,
                                                                     network), {})
    elif args.wire:
        tracker = _config.resolve_tracker(args.tracker)
        network = _config.resolve_network(args.network)
        doc = _network.run_flow(lambda reactor: wire_call(reactor, tracker, network, raw, data, args.timeout,
                                                                           token), {})
    else:
        api = _config.resolve_api(args.api, required=True)
        doc = _network.run_flow(lambda reactor: gateway_call(reactor, api, args.fid, data, args.timeout,
                                                                              token), {})
    return report(args, doc)


def _timing(pairs):
    return {f"{name}_ms": round(value, 3) for name, value in pairs}


@defer.inlineCallbacks
def gateway_call(reactor, api, fid_text, data, timeout_s, token=b""):
    from io import BytesIO

    from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
    from twisted.web.http_headers import Headers

    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False), connectTimeout=10)
    url = f"{api}/f/{fid_text}"
    deadline_ms = max(1, min(MAX_DEADLINE_MS, int(timeout_s * 1000)))
    headers = Headers({b"Orb-Deadline-Ms": [str(deadline_ms).encode("ascii")],
                       b"Content-Type": [b"application/octet-stream"]})
    if token:
        for name, value in token_headers(token, data, f"/f/{fid_text}", int(time.time())).items():
            headers.setRawHeaders(name, [value])
    try:
        d = agent.request(b"POST", url.encode("ascii"), headers, FileBodyProducer(BytesIO(data)))
        d.addTimeout(timeout_s + 5, reactor)
        response = yield d
        body = defer.Deferred()
        response.deliverBody(_network._BoundedBody(body, _network.MAX_HTTP_BODY_BYTES))
        body = yield body
    except defer.TimeoutError:
        raise CommandError(f"the gateway at {api} did not answer within {timeout_s + 5:g} s", _ui.EXIT_TIMEOUT,
                           "timeout") from None
    except Exception as e:
        raise CommandError(f"cannot reach the gateway at {api}: {_network._why(e)} (--api, $ORB_API)",
                           _ui.EXIT_NETWORK, "network") from None

    def header(name):
        values = response.headers.getRawHeaders(name)
        return values[0].decode("ascii", "replace") if values else None

    status = header(b"x-orb-status")
    try:
        doc = json.loads(body) if response.code != 200 else {}
    except ValueError:
        doc = {}
    if status is None:  # the gateway refused the request before any call
        code = doc.get("code") if isinstance(doc, dict) else None
        if code not in GATEWAY_REFUSALS:
            raise CommandError(f"{url} answered HTTP {response.code} without X-Orb-Status: is {api} a tracker's "
                               "gateway?", _ui.EXIT_NETWORK, "network")
        exit_code, kind = GATEWAY_REFUSALS[code]
        retry = header(b"retry-after")
        message = _network._remote_text(doc.get("message", ""))
        raise CommandError(f"the gateway refused the call (HTTP {response.code} {code}): {message}"
                           + (f"; retry after {retry} s" if retry else ""), exit_code, kind,
                           {"http_status": response.code, "code": code})
    timing = {}
    for part in (header(b"server-timing") or "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        try:
            timing[f"{name}_ms"] = float(dur)
        except ValueError:
            continue
    out = {"status": status.upper(), "output": body if response.code == 200 else b"",
           "log": doc.get("log", doc.get("message", "")) if isinstance(doc, dict) else "",
           "replica": header(b"orb-replica"), "timing": timing, "cached": header(b"orb-cached") == "1",
           "route": f"gateway/{header(b'orb-route') or 'direct'}", "request_id": header(b"orb-request-id"),
           "http_status": response.code}
    return out


def token_headers(token, data, target, now):
    """``Authorization: Bearer`` and, for a token bound to this node's key, the proof of that key (RFC 10.9)."""
    from orb.protocol import token as tokenmod

    headers = {b"Authorization": b"Bearer " + tokenmod.to_text(token).encode("ascii")}
    holder = tokenmod.decode(token).last.holder
    if holder is not None:
        from ._tokens import node_key, proof_headers

        key = node_key()
        if key.public_bytes == holder:
            headers.update(proof_headers(key, b"POST", target.encode("ascii"), data, now))
    return headers


@defer.inlineCallbacks
def wire_call(reactor, tracker, network, raw, data, timeout_s, token=b""):
    from orb.net.adapter import RemoteError, RequestTimeout
    from orb.protocol.codes import TlvType
    from orb.protocol.messages import Invoke, Tlv

    from orb.identity import IdentityError, NodeKey

    try:
        key = NodeKey.load_or_create(_config.orb_home())  # this node's own key, $ORB_HOME/private/node.key
    except (IdentityError, OSError) as e:
        raise CommandError(f"cannot use this node's key in {_config.orb_home()}: {e}", _ui.EXIT_INPUT,
                           "input") from None
    client = _network.SessionClient()
    p = yield _network.connect(reactor, tracker, network, client, key=key)
    trace_id = os.urandom(16)
    sent = time.monotonic()
    try:
        result = yield p.request(Invoke(fid=raw, deadline_ms=max(1, min(MAX_DEADLINE_MS, int(timeout_s * 1000))),
                                        token=token, input=data, ext=(Tlv(int(TlvType.TRACE_ID), trace_id),)),
                                 timeout_s=timeout_s + 5)
    except RequestTimeout:
        raise CommandError(f"the tracker did not answer within {timeout_s + 5:g} s", _ui.EXIT_TIMEOUT,
                           "timeout") from None
    except RemoteError as e:
        raise CommandError(f"the tracker refused the call: {_network._remote_text(e.text)}", _ui.EXIT_BUSY,
                           "busy") from None
    finally:
        yield _network.close_session(reactor, p, client)
    total_ms = (time.monotonic() - sent) * 1000
    at_host = [(name, getattr(result, f"{name}_us") / 1000) for name in ("queue", "fetch", "boot", "exec")]
    network_ms = max(0.0, total_ms - sum(v for _, v in at_host))
    cached = any(t.type == int(TlvType.CACHED) for t in result.ext)
    replica = next((t.value.hex() for t in result.ext if t.type == int(TlvType.REPLICA) and len(t.value) == 32), None)
    return {"status": result.status_kind.name, "output": result.output, "log": result.log.decode("utf-8", "replace"),
            "replica": replica, "timing": _timing([*at_host, ("network", network_ms), ("total", total_ms)]),
            "cached": cached, "route": "wire", "request_id": trace_id.hex()}


def report(args, doc):
    status = doc["status"]
    output = doc["output"]
    if args.json:
        try:
            text = {"output": output.decode("utf-8")}
        except UnicodeDecodeError:
            text = {"output_base64": base64.b64encode(output).decode("ascii")}
        _ui.emit(args, {"ok": status == "OK", "status": status.lower(), **text, "log": doc.get("log", ""),
                        "replica": doc["replica"], "timing": doc["timing"], "route": doc["route"],
                        "cached": doc.get("cached", False), "request_id": doc.get("request_id")}, None)
    elif status == "OK":
        sys.stdout.buffer.write(output)
        sys.stdout.buffer.flush()
    if status == "OK":
        return _ui.EXIT_OK
    message = f"the call ended {status.lower()}: {_network._remote_text(doc.get('log', ''), 500)}"
    if not args.json:
        sys.stderr.write(message + "\n")
    if status == ResultStatus.TIMEOUT.name:
        return _ui.EXIT_TIMEOUT
    if status in (ResultStatus.BUSY.name, ResultStatus.REFUSED.name):
        return _ui.EXIT_BUSY
    if status == ResultStatus.NOT_FOUND.name:
        return _ui.EXIT_NOT_FOUND
    if status == ResultStatus.DENIED.name:
        return _ui.EXIT_REFUSED
    if status == ResultStatus.GONE.name:
        return _ui.EXIT_GONE
    if status == ResultStatus.PAYMENT_REQUIRED.name:
        return _ui.EXIT_PAYMENT_REQUIRED
    return _ui.EXIT_FAILED
