# -*- test-case-name: tests.test_logs -*-
"""
``orb logs FID [-f] [--since SECONDS]``: the stderr of a function's recent
calls, from every replica, in time order (RFC 10.7).

Only the function's owner may read them: the request (LOGS) is signed with
the owner key, the one ``orb deploy`` signs with (``--key``, default
$ORB_HOME/owner.key), and sent over the ORB wire to a tracker
(``--tracker``, ``--network``), which checks it, asks every replica and
merges their answers. Each replica holds the last calls it ran (a bounded
number, in memory).

Each entry prints as one header line, the time the call ended (UTC, the
host's clock), the replica (short node id), the status, the exec time and
the trace id, then the call's stderr indented. ``--since S`` shows only the
calls of the last S seconds. ``-f`` keeps asking every second for the calls
that ended after the last one shown, until Ctrl-C (exit status 130). With
``--json``: one JSON document (without ``-f``), or one JSON object a line
per entry (with ``-f``).

Exit status: 0; 7 the key is not the function's owner key (or this
machine's clock is more than 120 s off); 10 no such function; 8 no replica
answered; 6 the tracker could not be reached; 130 interrupted (``-f``).
"""

import base64
import datetime
import json
import os
import sys
import time

import attrs
from twisted.internet import defer, error, task

from orb.protocol import fid as _fid
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, ResultStatus

from . import _config, _function, _keys, _network, _ui
from ._ui import CommandError

POLL_INTERVAL_S = 1.0
REQUEST_TIMEOUT_S = 15.0
MAX_PAGES = 64  # without -f: LOG_LINES asked for in a row while they say more


def register(sub):
    p = sub.add_parser("logs", help="show the stderr of a function's recent calls, from every replica",
                       description="Show the stderr of FID's recent calls from every replica, in time order. "
                                   "Only the function's owner may: the request is signed with the owner key. "
                                   "With -f, keep printing new calls until Ctrl-C.")
    p.add_argument("--json", action="store_true", help="print JSON (with -f: one object a line per entry)")
    p.set_defaults(func=_function._guarded(logs))
    p.add_argument("fid", metavar="FID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new calls every second until Ctrl-C")
    p.add_argument("--since", metavar="S", type=_network._seconds,
                   help="only calls that ended in the last S seconds (default: all the replicas hold)")
    p.add_argument("--tracker", metavar="[NODEID@]HOST:PORT",
                   help="the tracker (default: $ORB_TRACKER, else tracker = \"...\" in config.toml)")
    p.add_argument("--network", metavar="NAME", help="the network's name (default: $ORB_NETWORK, config.toml, main)")
    p.add_argument("--key", metavar="PATH", help="the owner key (default: $ORB_HOME/owner.key)")


@attrs.frozen
class LogsPlan:
    fid: bytes
    key: object  # the owner's NodeKey
    tracker: object
    network: str
    since_us: int
    follow: bool
    json: bool


def prepare(args, now_s=None):
    raw = _ui.fid_argument(args.fid)
    key = _keys.load_owner_key(args.key or _config.default_key_path())
    now_s = time.time() if now_s is None else now_s
    since_us = 0 if args.since is None else max(0, int((now_s - args.since) * 1_000_000))
    return LogsPlan(raw, key, _config.resolve_tracker(args.tracker), _config.resolve_network(args.network),
                    since_us, args.follow, bool(args.json))


def logs(args):
    plan = prepare(args)
    if plan.follow:
        box = {}
        try:
            _network.run_flow(lambda reactor: follow_flow(reactor, plan, box, sys.stdout), box)
        except CommandError as e:
            if e.exit_code == _ui.EXIT_INTERRUPTED:
                return _ui.EXIT_INTERRUPTED  # Ctrl-C is how -f ends: no error to print
            raise
        return _ui.EXIT_OK
    doc = _network.run_flow(lambda reactor: logs_flow(reactor, plan), {})
    if plan.json:
        _ui.emit(args, doc, None)
    else:
        for entry in doc["entries"]:
            sys.stdout.write(format_entry(entry))
        if not doc["entries"]:
            sys.stderr.write("no calls logged by the replicas" + (" in that time" if plan.since_us else "") + "\n")
        elif doc["more"]:
            sys.stderr.write("(more calls were left out: try --since, or -f)\n")
        sys.stdout.flush()
    return _ui.EXIT_OK


def signed_request(key, fid, since_us, now_s, max_entries=m.MAX_LOG_ENTRIES, nonce=None):
    """LOGS for ``fid`` signed by the owner ``key`` (RFC 10.7): a fresh nonce, issued at ``now_s``."""
    request = m.Logs(fid=fid, owner_key=key.public_bytes, since_us=since_us, max_entries=max_entries,
                     issued_at=int(now_s), nonce=nonce if nonce is not None else os.urandom(16),
                     signature=b"\0" * 64)
    return attrs.evolve(request, signature=key.sign(request.signed_bytes()))


# Each refusal of LOGS: (exit status, what to tell the owner).
REFUSALS = {
    ErrorCode.DENIED: (_ui.EXIT_REFUSED, "refused: this key is not the function's owner key"),
    ErrorCode.OUT_OF_RANGE: (_ui.EXIT_REFUSED, "refused: this machine's clock is too far from the network's"),
    ErrorCode.NOT_FOUND: (_ui.EXIT_NOT_FOUND, "no such function"),
    ErrorCode.BUSY: (_ui.EXIT_BUSY, "no replica answered; try again shortly"),
    ErrorCode.RATE_LIMITED: (_ui.EXIT_BUSY, "the tracker is rate-limiting this session; try again shortly"),
    ErrorCode.SHUTDOWN: (_ui.EXIT_BUSY, "the tracker is shutting down; try again shortly, or another tracker"),
    ErrorCode.INTERNAL: (_ui.EXIT_BUSY, "the tracker failed on its side; try again, or another tracker"),
    ErrorCode.UNSUPPORTED: (_ui.EXIT_NETWORK, "the node does not serve LOGS: is --tracker a tracker?"),
}


def refusal(code, text):
    try:
        kind = ErrorCode(code)
    except ValueError:
        kind = ErrorCode.UNSPECIFIED
    exit_code, what = REFUSALS.get(kind, (_ui.EXIT_NETWORK, "the tracker refused the request"))
    detail = _network._remote_text(text) or "no reason given"
    return CommandError(f"{what}: {detail} [{kind.name.lower()}]", exit_code, kind.name.lower())


@defer.inlineCallbacks
def ask(reactor, p, plan, since_us):
    """One LOGS, answered: LogLines, or CommandError."""
    from orb.net.adapter import RemoteError, RequestTimeout

    try:
        lines = yield p.request(signed_request(plan.key, plan.fid, since_us, reactor.seconds()),
                                timeout_s=REQUEST_TIMEOUT_S)
    except RemoteError as e:
        raise refusal(e.code, e.text) from None
    except RequestTimeout:
        raise CommandError(f"the tracker did not answer within {REQUEST_TIMEOUT_S:g} s", _ui.EXIT_NETWORK,
                           "timeout") from None
    except (error.ConnectionLost, error.ConnectionDone):
        raise CommandError("the tracker closed the session", _ui.EXIT_NETWORK, "network") from None
    return lines


@defer.inlineCallbacks
def logs_flow(reactor, plan):
    """Every entry the replicas hold after ``plan.since_us``: {"entries": [...], "more": bool}."""
    client = _network.SessionClient()
    p = yield _network.connect(reactor, plan.tracker, plan.network, client)
    entries, since_us, more = [], plan.since_us, False
    try:
        for _ in range(MAX_PAGES):
            lines = yield ask(reactor, p, plan, since_us)
            entries.extend(entry_json(e) for e in lines.entries)
            more = bool(lines.more) and bool(lines.entries)
            if not more:
                break
            since_us = lines.entries[-1].time_us
    finally:
        yield _network.close_session(reactor, p, client)
    return {"ok": True, "fid": _fid.to_text(plan.fid), "tracker": str(plan.tracker), "entries": entries,
            "more": more}


@defer.inlineCallbacks
def follow_flow(reactor, plan, box, out, err=None):
    """Print each new entry as it comes, asking every POLL_INTERVAL_S; ends only with an error or Ctrl-C."""
    client = _network.SessionClient()
    p = yield _network.connect(reactor, plan.tracker, plan.network, client)
    box["protocol"] = p
    err = err or sys.stderr
    since_us = plan.since_us
    quiet = False  # a "no replica answered" note is printed once, until one answers again
    while True:
        try:
            lines = yield ask(reactor, p, plan, since_us)
        except CommandError as e:
            if e.exit_code != _ui.EXIT_BUSY:
                raise
            if not quiet:
                err.write(f"orb logs: {e} (still trying)\n")
                err.flush()
                quiet = True
            yield task.deferLater(reactor, POLL_INTERVAL_S, lambda: None)
            continue
        quiet = False
        for e in lines.entries:
            doc = entry_json(e)
            out.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n" if plan.json else format_entry(doc))
        out.flush()
        if lines.entries:
            since_us = lines.entries[-1].time_us
        if not (lines.more and lines.entries):
            yield task.deferLater(reactor, POLL_INTERVAL_S, lambda: None)


def entry_json(entry):
    """A LogEntry as the JSON object ``orb logs --json`` prints."""
    try:
        status = ResultStatus(entry.status).name.lower()
    except ValueError:
        status = f"status {entry.status}"
    doc = {"time_us": entry.time_us, "time": _utc_us(entry.time_us), "replica": entry.node_id.hex(),
           "status": status, "exec_ms": round(entry.exec_us / 1000, 3), "trace_id": entry.trace_id.hex() or None}
    try:
        doc["log"] = entry.log.decode("utf-8")
    except UnicodeDecodeError:
        doc["log_base64"] = base64.b64encode(entry.log).decode("ascii")
    return doc


def format_entry(doc):
    """The text ``orb logs`` prints for one entry: a header line, then the stderr indented, printable."""
    trace = f"  trace {doc['trace_id']}" if doc["trace_id"] else ""
    head = f"{doc['time']}  {doc['replica'][:12]}  {doc['status']:<7} {doc['exec_ms']:9.3f} ms{trace}\n"
    text = doc["log"] if "log" in doc else f"(binary, base64) {doc['log_base64']}"
    lines = [_printable(line) for line in text.rstrip("\n").split("\n")] if text else []
    return head + "".join(f"    {line}\n" for line in lines)


def _printable(line):
    """A line of a function's stderr, safe for a terminal: control characters become escapes."""
    return "".join(ch if ch == "\t" or (ch.isprintable() and ch not in "\u202a\u202b\u202c\u202d\u202e")
                   else f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}" for ch in line)


def _utc_us(time_us):
    moment = datetime.datetime.fromtimestamp(time_us / 1_000_000, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
