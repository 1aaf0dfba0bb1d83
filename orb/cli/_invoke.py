# -*- test-case-name: tests.test_functions -*-
"""
``orb invoke FID [--data TEXT | --data-file F | -]``: call a deployed function.

By default through the tracker's HTTP gateway (``POST <api>/f/<fid>``);
with ``--wire`` over the ORB wire through a tracker (INVOKE to
``--tracker``), which routes it to the best replica. Without ``--json``
the function's output goes to stdout as it is; with it, one JSON document
with the status, the output, the timing breakdown and the replica.

Exit status: 0 the function answered OK; 1 the function failed (error,
memory, a forbidden syscall, output too large); 11 the deadline passed;
8 no replica could take the call (busy); 10 no such function; 6 the
tracker could not be reached.
"""

import base64
import json
import sys

from twisted.internet import defer

from orb.protocol import fid as _fid
from orb.protocol.codes import ResultStatus

from . import _config, _network, _ui
from ._ui import CommandError

FAILED = {"ERROR", "MEMORY", "KILLED_BY_POLICY", "OUTPUT_TOO_LARGE", "DENIED", "REFUSED", "INTERNAL"}


def register(sub, verb):
    p = verb("invoke", "call a deployed function", invoke,
             "Call FID with the input from --data, --data-file or stdin, through the tracker's HTTP gateway "
             "(--api) or, with --wire, over the ORB wire through --tracker. The output goes to stdout.")
    p.add_argument("fid", metavar="FID")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--data", metavar="TEXT", help="the input, as UTF-8 text")
    given.add_argument("--data-file", metavar="FILE", help="the input, the bytes of FILE ('-' for stdin)")
    p.add_argument("--wire", action="store_true", help="call over the ORB wire through --tracker, not the gateway")
    p.add_argument("--tracker", metavar="[NODEID@]HOST:PORT", help="for --wire (default: $ORB_TRACKER, config.toml)")
    p.add_argument("--network", metavar="NAME", help="for --wire (default: $ORB_NETWORK, config.toml, main)")
    p.add_argument("--api", metavar="URL", help="the gateway (default: $ORB_API, else api = \"...\" in config.toml)")
    p.add_argument("--timeout", metavar="S", type=_network._seconds, default=30.0,
                   help="the call's deadline in seconds (default 30)")


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
    try:
        raw = _fid.from_text(args.fid)
        _fid.check(raw)
    except _fid.FidError:
        raise CommandError(f"FID {args.fid!r} is not a fid: give the 53 base32 characters `orb hash` prints",
                           _ui.EXIT_USAGE, "usage") from None
    data = _input(args)
    if args.wire:
        tracker = _config.resolve_tracker(args.tracker)
        network = _config.resolve_network(args.network)
        doc = _network.run_flow(lambda reactor: wire_call(reactor, tracker, network, raw, data, args.timeout), {})
    else:
        api = _config.resolve_api(args.api, required=True)
        doc = _network.run_flow(lambda reactor: gateway_call(reactor, api, args.fid, data, args.timeout), {})
    return report(args, doc)


@defer.inlineCallbacks
def gateway_call(reactor, api, fid_text, data, timeout_s):
    from io import BytesIO

    from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool

    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False), connectTimeout=10)
    url = f"{api}/f/{fid_text}"
    try:
        d = agent.request(b"POST", url.encode("ascii"), None, FileBodyProducer(BytesIO(data)))
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
    header = response.headers.getRawHeaders(b"x-orb-status")
    if not header:
        raise CommandError(f"{url} answered HTTP {response.code} without X-Orb-Status: is {api} a tracker's "
                           "gateway?", _ui.EXIT_NETWORK, "network")
    status = header[0].decode("ascii", "replace").upper()
    replica = (response.headers.getRawHeaders(b"orb-replica") or [b""])[0].decode("ascii", "replace") or None
    timing = {}
    for part in (response.headers.getRawHeaders(b"server-timing") or [b""])[0].decode("ascii", "replace").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name and dur:
            timing[f"{name}_ms"] = float(dur)
    if status == "OK":
        return {"status": status, "output": body, "replica": replica, "timing": timing, "route": "gateway"}
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = body.decode("utf-8", "replace")
    return {"status": status, "output": b"", "log": message, "replica": replica, "timing": timing,
            "route": "gateway"}


@defer.inlineCallbacks
def wire_call(reactor, tracker, network, raw, data, timeout_s):
    from orb.net.adapter import RemoteError, RequestTimeout
    from orb.protocol.messages import Invoke

    client = _network.SessionClient()
    p = yield _network.connect(reactor, tracker, network, client)
    try:
        result = yield p.request(Invoke(fid=raw, deadline_ms=int(timeout_s * 1000), token=b"", input=data),
                                 timeout_s=timeout_s + 5)
    except RequestTimeout:
        raise CommandError(f"the tracker did not answer within {timeout_s + 5:g} s", _ui.EXIT_TIMEOUT,
                           "timeout") from None
    except RemoteError as e:
        raise CommandError(f"the tracker refused the call: {_network._remote_text(e.text)}", _ui.EXIT_BUSY,
                           "busy") from None
    finally:
        yield _network.close_session(reactor, p, client)
    timing = {f"{name}_ms": getattr(result, f"{name}_us") / 1000 for name in ("queue", "fetch", "boot", "exec")}
    return {"status": result.status_kind.name, "output": result.output, "log": result.log.decode("utf-8", "replace"),
            "replica": None, "timing": timing, "route": "wire"}


def report(args, doc):
    status = doc["status"]
    output = doc["output"]
    if args.json:
        try:
            text = {"output": output.decode("utf-8")}
        except UnicodeDecodeError:
            text = {"output_base64": base64.b64encode(output).decode("ascii")}
        _ui.emit(args, {"ok": status == "OK", "status": status.lower(), **text, "log": doc.get("log", ""),
                        "replica": doc["replica"], "timing": doc["timing"], "route": doc["route"]}, None)
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
    if status == ResultStatus.BUSY.name:
        return _ui.EXIT_BUSY
    if status == ResultStatus.NOT_FOUND.name:
        return _ui.EXIT_NOT_FOUND
    return _ui.EXIT_FAILED
