# -*- test-case-name: tests.test_cli_names -*-
"""
The names verbs of the ``orb`` command (RFC 9.10):

    orb name NAME FID                                  point NAME at FID (a NAME record, next seq)
    orb update DIR [--name NAME]                       deploy DIR, then point NAME at the new fid
    orb deprecate NAME-OR-FID [--successor FID] [--sunset TIME]
    orb undeprecate NAME-OR-FID                        withdraw a deprecation, before its sunset
    orb info NAME                                      a name's history (``orb info FID``: orb.cli._network)

NAME is ``name`` (a name of the local owner key), ``name.<owner>`` or
``name.<owner>.orb`` where ``<owner>`` is an owner label (RFC 9.3). TIME is
Unix seconds, an ISO 8601 time (UTC unless it says otherwise), or relative
to now: ``+90s``, ``+10m``, ``+2h``, ``+7d``.

The statements are signed with the owner key and sent over the ORB wire
to the tracker (``--tracker``), which answers each with STATEMENT_ACK
(RFC 5.28). The next ``seq`` is the held one plus one: read from the
tracker's API when ``--api`` is known, else learnt from the tracker's
``stale`` answer (its ``seq`` is what it holds), and the statement sent
again. A refusal exits with the status of ``STATEMENT_REFUSALS``.
"""

import calendar
import datetime
import re

import attrs
from twisted.internet import defer, error

from orb.protocol import fid as _fid
from orb.protocol.codes import ErrorCode

from . import _config, _function, _keys, _network, _ui
from ._ui import CommandError

STATEMENT_TIMEOUT_S = 15.0
SEQ_ATTEMPTS = 3  # a stale answer teaches the held seq; a race with another publisher may need one more
MAX_SUNSET_AHEAD_S = 10 * 365 * 86400
_RELATIVE_RE = re.compile(r"\+(\d{1,9})([smhd])\Z")
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# Each refusal of a statement (STATEMENT_ACK status, or ERROR code): (exit status, what to tell the owner).
STATEMENT_REFUSALS = {
    ErrorCode.DENIED: (_ui.EXIT_REFUSED, "the tracker refused the signature: the key is not the owner's"),
    ErrorCode.STALE: (_ui.EXIT_REFUSED, "the tracker holds a newer statement (a higher seq) for this"),
    ErrorCode.NOT_FOUND: (_ui.EXIT_NOT_FOUND, "the tracker knows no such function"),
    ErrorCode.GONE: (_ui.EXIT_GONE, "the function is past its sunset: it is gone, and nothing can bring it back"),
    ErrorCode.INVALID: (_ui.EXIT_REFUSED, "the tracker refused the statement as invalid"),
    ErrorCode.BUSY: (_ui.EXIT_BUSY, "the tracker is busy; try again shortly, or another tracker"),
    ErrorCode.RATE_LIMITED: (_ui.EXIT_BUSY, "the tracker is rate-limiting this session; try again shortly"),
    ErrorCode.SHUTDOWN: (_ui.EXIT_BUSY, "the tracker is shutting down; try again shortly, or another tracker"),
    ErrorCode.INTERNAL: (_ui.EXIT_BUSY, "the tracker failed on its side; try again, or another tracker"),
    ErrorCode.UNSUPPORTED: (_ui.EXIT_NETWORK, "the node does not take owner statements: is --tracker a tracker?"),
}


def register(sub) -> None:
    def verb(name, help_text, func, description):
        p = sub.add_parser(name, help=help_text, description=description)
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        p.set_defaults(func=_function._guarded(func))
        return p

    def wire_options(p, deploying=False):
        p.add_argument("--tracker", metavar="[NODEID@]HOST:PORT",
                       help="the tracker (default: $ORB_TRACKER, else tracker = \"...\" in config.toml)")
        p.add_argument("--network", metavar="NAME", help="the network's name (default: $ORB_NETWORK, else "
                                                         "network = \"...\" in config.toml, else main)")
        p.add_argument("--key", metavar="PATH", help="the owner key (default: $ORB_HOME/owner.key)")
        p.add_argument("--api", metavar="URL", help="the tracker's HTTP API, to read the name's current seq and "
                                                    "fid (default: $ORB_API, else api = \"...\" in config.toml)")

    p = verb("name", "point a name of yours at a function", name_cmd,
             "Publish a NAME record, signed with the owner key, that makes NAME (<name>.<owner>.orb, "
             "/n/<owner>/<name>) serve FID, with a seq one higher than the tracker holds.")
    p.add_argument("name", metavar="NAME", help="name, or name.<owner>[.orb] (it must be yours)")
    p.add_argument("fid", metavar="FID")
    wire_options(p)

    p = verb("update", "deploy a new version and move its name to it", update,
             "Deploy DIR as `orb deploy` does, then publish a NAME with a higher seq pointing NAME (default: the "
             "manifest's name) at the new fid. The old fid keeps serving at /f/<fid> until it is deprecated "
             "(`orb deprecate OLD-FID --successor NEW-FID`).")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--name", metavar="NAME", help="the name to move (default: the manifest's name)")
    p.add_argument("--no-source", action="store_true", help="deploy the --no-source (bytecode only) package")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the new version's replicas before "
                                                          "moving the name")
    p.add_argument("--timeout", metavar="S", type=_network._seconds, default=_network.DEFAULT_WAIT_S,
                   help=f"how long to wait for the replicas (default {_network.DEFAULT_WAIT_S:g})")
    p.add_argument("--allow-unconfined", action="store_true",
                   help="DANGEROUS: run the samples locally even if jail layers are missing")
    wire_options(p)

    p = verb("deprecate", "deprecate a function, optionally with a successor and a sunset", deprecate,
             "Publish a signed deprecation of FID, or of the version NAME serves now. Gateways then answer its "
             "calls with Deprecation, Sunset and Link: rel=successor-version headers, DNS TXT says deprecated=1, "
             "and names move to their newest version not deprecated. After the sunset every host drops it, "
             "calls answer 410 and DNS NXDOMAIN.")
    p.add_argument("target", metavar="NAME-OR-FID")
    p.add_argument("--successor", metavar="FID", help="the fid that replaces it")
    p.add_argument("--sunset", metavar="TIME", type=_sunset_argument,
                   help="when it stops for good: Unix seconds, ISO 8601 (2026-12-01T12:00:00Z), or +10m, +2h, +7d")
    wire_options(p)

    p = verb("undeprecate", "withdraw a deprecation before its sunset", undeprecate,
             "Publish a signed statement that FID (or the newest deprecated version of NAME) is no longer "
             "deprecated. Refused once the sunset has passed: a function past its sunset is gone.")
    p.add_argument("target", metavar="NAME-OR-FID")
    wire_options(p)


# --- arguments -----------------------------------------------------------------------------------


def parse_time(text, now):
    """TIME as Unix seconds: digits, ISO 8601 (UTC when no offset is given), or +N[smhd] from ``now``."""
    text = text.strip()
    match = _RELATIVE_RE.match(text)
    if match:
        return int(now) + int(match.group(1)) * _UNITS_S[match.group(2)]
    if text.isdigit() and len(text) <= 12:
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give Unix seconds, ISO 8601 (2026-12-01T12:00:00Z) or "
                         "+N followed by s, m, h or d (+10m, +2h, +7d)") from None
    if when.tzinfo is None:
        return calendar.timegm(when.timetuple())
    return int(when.timestamp())


def _sunset_argument(text):
    import argparse
    import time

    try:
        value = parse_time(text, time.time())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


@attrs.frozen
class Target:
    """What a NAME-OR-FID argument names: a fid (``fid``), or a name (``owner_label``, ``name``)."""

    fid: str | None = None
    owner_label: str | None = None
    name: str | None = None

    @property
    def text(self):
        return self.fid if self.fid is not None else f"{self.name}.{self.owner_label}"


def parse_target(text, own_label=None, fid_ok=True):
    """A NAME-OR-FID argument. ``own_label``: the owner label of the local key (a bare ``name`` is the
    caller's own), or a callable giving it, or None when the caller has no key."""
    from orb.dns import names as dnsnames
    from orb.protocol.names import check_name

    raw = text.strip().lower().rstrip(".")
    if fid_ok and "." not in raw:
        try:
            _fid.check(_fid.from_text(raw))
            return Target(fid=raw)
        except _fid.FidError:
            pass
    labels = raw.split(".")
    if labels[-1] == dnsnames.ZONE and len(labels) == 3:
        labels = labels[:-1]
    if len(labels) == 2 and dnsnames.is_owner_label(labels[1]):
        name, owner = labels
    elif len(labels) == 1:
        name, owner = labels[0], own_label() if callable(own_label) else own_label
        if owner is None:
            raise CommandError(f"{text!r} has no owner: write name.<owner> (the owner label `orb info` prints)",
                               _ui.EXIT_USAGE, "usage")
    else:
        what = "NAME-OR-FID" if fid_ok else "NAME"
        raise CommandError(f"{what} {text!r} is neither a fid nor a name: write name, name.<owner> or "
                           "name.<owner>.orb, <owner> being 32 base32 characters", _ui.EXIT_USAGE, "usage")
    try:
        check_name(name)
    except ValueError as e:
        raise CommandError(f"{name!r} is not a name: {e}", _ui.EXIT_USAGE, "usage") from None
    return Target(owner_label=owner, name=name)


def _key(args):
    return _keys.load_owner_key(args.key or _config.default_key_path())


def _label_of(key):
    from orb.protocol.names import owner_label

    return owner_label(key.public_bytes)


# --- the wire ------------------------------------------------------------------------------------


def refusal(code, text, what, details=None):
    try:
        kind = ErrorCode(code)
    except ValueError:
        kind = ErrorCode.UNSPECIFIED
    exit_code, why = STATEMENT_REFUSALS.get(kind, (_ui.EXIT_NETWORK, f"the tracker refused the {what}"))
    detail = _network._remote_text(text) or "no reason given"
    return CommandError(f"{why}: {detail} [{kind.name.lower()}]", exit_code, kind.name.lower(), details)


@defer.inlineCallbacks
def send_statement(p, build, seq, what, details):
    """Send ``build(seq)`` until the tracker takes it: a ``stale`` answer carries the seq it holds, and the
    statement goes again with one more (SEQ_ATTEMPTS at most). Fires with (StatementAck, seq sent)."""
    from orb.net.adapter import RemoteError, RequestTimeout

    for _ in range(SEQ_ATTEMPTS):
        try:
            ack = yield p.request(build(seq), timeout_s=STATEMENT_TIMEOUT_S)
        except RemoteError as e:
            raise refusal(e.code, e.text, what, details) from None
        except RequestTimeout:
            raise CommandError(f"the tracker did not answer the {what} within {STATEMENT_TIMEOUT_S:g} s",
                               _ui.EXIT_NETWORK, "timeout", details) from None
        except (error.ConnectionLost, error.ConnectionDone):
            raise CommandError(f"the tracker closed the session before answering the {what}", _ui.EXIT_NETWORK,
                               "network", details) from None
        if ack.status == 0:
            return ack, seq
        if ack.status == ErrorCode.STALE and ack.seq >= seq:
            seq = ack.seq + 1
            continue
        raise refusal(ack.status, ack.text, what, {**(details or {}), "held_seq": ack.seq})
    raise refusal(ErrorCode.STALE, f"another statement kept overtaking ours (held seq {ack.seq})", what, details)


@defer.inlineCallbacks
def with_session(reactor, tracker, network, work, box):
    """Open a session to the tracker, run ``work(p)``, close: Deferred[its result]."""
    client = _network.SessionClient()
    p = yield _network.connect(reactor, tracker, network, client)
    box["protocol"] = p
    try:
        result = yield work(p)
    finally:
        yield _network.close_session(reactor, p, client)
    return result


def name_message(key, name, seq, fid_text):
    """A NAME record (RFC 5.24) pointing ``name`` at ``fid_text``, signed with the owner key."""
    from orb.protocol.names import make_name

    return make_name(key, name, seq, fid_text)


def deprecate_message(key, fid_text, seq, deprecated, successor, sunset):
    """A DEPRECATE (RFC 5.29) of ``fid_text``, signed with the owner key (``deprecated=False``: undeprecate)."""
    from orb.protocol.names import make_deprecate

    return make_deprecate(key, fid_text, seq, deprecated, successor or b"", sunset)


# --- the API -------------------------------------------------------------------------------------


@defer.inlineCallbacks
def name_doc(reactor, api, target):
    """The tracker's /api/v1/names document for ``target``, or None when it knows no such name."""
    path = f"/api/v1/names/{target.owner_label}/{target.name}"
    status, doc = yield _network.get_json(reactor, api, path)
    if status == 404 and isinstance(doc, dict) and doc.get("code") in ("name-not-found", "not-found"):
        return None
    if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("history"), list):
        raise _network._api_error(status, doc, api + path)
    return doc


@defer.inlineCallbacks
def function_doc(reactor, api, fid):
    """(HTTP status, /api/v1/functions/<fid> document): 200, 404 or 410 (past its sunset)."""
    path = f"/api/v1/functions/{fid}"
    status, doc = yield _network.get_json(reactor, api, path)
    if status not in (200, 404, 410) or not isinstance(doc, dict):
        raise _network._api_error(status, doc, api + path)
    return status, doc


def _need_api(args, why):
    try:
        return _config.resolve_api(args.api)
    except _config.ConfigError as e:
        raise CommandError(f"{why}, which needs the tracker's API: {e}", _ui.EXIT_USAGE, "usage") from None


# --- orb name ------------------------------------------------------------------------------------


@defer.inlineCallbacks
def publish_name(reactor, tracker, network, api, key, target, fid_text, box):
    """Point ``target`` at ``fid_text``: Deferred[doc with the old fid, the new one and the seq]."""
    old, held = None, 0
    if api is not None:
        doc = yield name_doc(reactor, api, target)
        if doc is not None:
            old, held = doc.get("fid"), int(doc.get("seq") or 0)
    details = {"name": target.name, "owner_label": target.owner_label, "fid": fid_text}

    def work(p):
        return send_statement(p, lambda seq: name_message(key, target.name, seq, fid_text), held + 1, "NAME",
                              details)

    ack, seq = yield with_session(reactor, tracker, network, work, box)
    return {"ok": True, "name": target.name, "owner_label": target.owner_label,
            "dns_name": f"{target.name}.{target.owner_label}.orb", "call": f"/n/{target.owner_label}/{target.name}",
            "gateway_url": f"{api}/n/{target.owner_label}/{target.name}" if api else None,
            "seq": seq, "held_seq": ack.seq, "old_fid": old, "fid": fid_text}


def name_cmd(args):
    key = _key(args)
    label = _label_of(key)
    target = parse_target(args.name, label, fid_ok=False)
    if target.owner_label != label:
        raise CommandError(f"{target.text} belongs to owner {target.owner_label}, and your key's owner label is "
                           f"{label}: only an owner can name its functions", _ui.EXIT_USAGE, "usage")
    _ui.fid_argument(args.fid)
    tracker = _config.resolve_tracker(args.tracker)
    network = _config.resolve_network(args.network)
    api = _config.resolve_api(args.api, required=False)
    box = {}
    doc = _network.run_flow(lambda reactor: publish_name(reactor, tracker, network, api, key, target, args.fid,
                                                         box), box)

    def human(c):
        moved = f"{doc['old_fid']} -> " if doc["old_fid"] and doc["old_fid"] != doc["fid"] else ""
        c.print(f"named     {doc['dns_name']} (seq {doc['seq']})", markup=False)
        c.print(f"fid       {moved}{doc['fid']}", markup=False)
        c.print(f"call      {doc['gateway_url'] or 'POST ' + doc['call']}", markup=False)

    _ui.emit(args, doc, human)
    return _ui.EXIT_OK


# --- orb update ----------------------------------------------------------------------------------


def update(args):
    key = _key(args)
    label = _label_of(key)
    plan = _network.prepare_deploy(args)
    try:
        target = parse_target(args.name or plan.built.manifest.name, label, fid_ok=False)
    except CommandError as e:
        hint = "" if args.name else " (the manifest's name is not a DNS label: pass --name NAME)"
        raise CommandError(f"{e}{hint}", e.exit_code, e.kind) from None
    if target.owner_label != label:
        raise CommandError(f"{target.text} is not a name of your key (owner label {label})", _ui.EXIT_USAGE, "usage")
    box = {}

    @defer.inlineCallbacks
    def flow(reactor):
        old = None
        if plan.api is not None:
            doc = yield name_doc(reactor, plan.api, target)
            old = doc.get("fid") if doc is not None else None
        deployed = yield _network.deploy_flow(reactor, plan, box)
        named = yield publish_name(reactor, plan.tracker, plan.network, plan.api, key, target, deployed["fid"], box)
        named["old_fid"] = old if old is not None else named["old_fid"]
        return {**deployed, "ok": True, "named": named, "old_fid": named["old_fid"], "seq": named["seq"]}

    doc = _network.run_flow(flow, box)

    def human(c):
        c.print(f"[green]updated[/] {doc['named']['dns_name']} to {doc['name']} {doc['version']}", markup=True)
        c.print(f"fid       {doc['old_fid'] or '(no version before)'} -> {doc['fid']}", markup=False)
        c.print(f"seq       {doc['seq']}", markup=False)
        c.print(f"replicas  {doc['replicas']} of {doc['wanted_replicas']}", markup=False)
        if doc["old_fid"] and doc["old_fid"] != doc["fid"]:
            c.print(f"the old version keeps serving at /f/{doc['old_fid']} until you deprecate it: "
                    f"orb deprecate {doc['old_fid']} --successor {doc['fid']} --sunset +7d", markup=False)

    _ui.emit(args, doc, human)
    return _ui.EXIT_OK


# --- orb deprecate / undeprecate -----------------------------------------------------------------


@defer.inlineCallbacks
def resolve_fid(reactor, api, target, pick):
    """The fid a target stands for: itself, or ``pick(name doc)`` of a name (from the API)."""
    if target.fid is not None:
        return target.fid, None
    if api is None:
        raise CommandError(f"{target.text} is a name: finding the version it serves needs the tracker's API "
                           "(--api, $ORB_API), or give the FID", _ui.EXIT_USAGE, "usage")
    doc = yield name_doc(reactor, api, target)
    if doc is None:
        raise CommandError(f"the tracker at {api} knows no name {target.text}", _ui.EXIT_NOT_FOUND, "not_found",
                           {"name": target.name, "owner_label": target.owner_label})
    fid = pick(doc)
    if fid is None:
        raise CommandError(f"{target.text} has no version to do that to (its history: "
                           f"{', '.join(h['fid'][:12] + ' ' + h['status'] for h in doc['history'])})",
                           _ui.EXIT_NOT_FOUND, "not_found", {"name": target.name})
    return fid, doc


@defer.inlineCallbacks
def publish_deprecation(reactor, tracker, network, api, key, fid, deprecated, successor, sunset, box):
    held, status = 0, None
    if api is not None:
        code, doc = yield function_doc(reactor, api, fid)
        status = doc.get("deprecation")
        if isinstance(status, dict):
            held = int(status.get("seq") or 0)
        if code == 410 or (isinstance(status, dict) and status.get("gone")):
            raise CommandError(f"{fid} is past its sunset ({_network._utc((status or {}).get('sunset'))}): it is gone, "
                               "and a deprecation can no longer be changed", _ui.EXIT_GONE, "gone", {"fid": fid})
        if code == 404:
            raise CommandError(f"the tracker at {api} knows no function {fid}", _ui.EXIT_NOT_FOUND, "not_found",
                               {"fid": fid})
    details = {"fid": fid}

    def work(p):
        return send_statement(p, lambda seq: deprecate_message(key, fid, seq, deprecated, successor, sunset),
                              held + 1, "deprecation", details)

    ack, seq = yield with_session(reactor, tracker, network, work, box)
    return {"ok": True, "fid": fid, "deprecated": deprecated, "successor": successor, "sunset": sunset or None,
            "seq": seq}


def _statement_plan(args):
    key = _key(args)
    label = _label_of(key)
    target = parse_target(args.target, label)
    return key, target, _config.resolve_tracker(args.tracker), _config.resolve_network(args.network), \
        _config.resolve_api(args.api, required=False)


def deprecate(args):
    key, target, tracker, network, api = _statement_plan(args)
    if args.successor:
        _ui.fid_argument(args.successor)
    import time

    if args.sunset is not None and args.sunset <= time.time():
        raise CommandError(f"--sunset {_network._utc(args.sunset) or args.sunset} is not in the future: trackers refuse "
                           "a sunset already past (give +10m, +2h, +7d, or a later time)", _ui.EXIT_USAGE, "usage")
    if args.sunset is not None and args.sunset > time.time() + MAX_SUNSET_AHEAD_S:
        raise CommandError(f"--sunset {args.sunset} is more than ten years ahead: is it in milliseconds? give Unix "
                           "seconds", _ui.EXIT_USAGE, "usage")
    box = {}

    @defer.inlineCallbacks
    def flow(reactor):
        fid, named = yield resolve_fid(reactor, api, target, lambda doc: doc.get("serving"))
        if args.successor == fid:
            raise CommandError("a function cannot be its own successor", _ui.EXIT_USAGE, "usage")
        doc = yield publish_deprecation(reactor, tracker, network, api, key, fid, True, args.successor,
                                        args.sunset or 0, box)
        if named is not None:
            doc["name"] = target.text
        return doc

    doc = _network.run_flow(flow, box)

    def human(c):
        c.print(f"[yellow]deprecated[/] {doc['fid']}" + (f" (served by {doc['name']})" if doc.get("name") else ""),
                markup=True)
        c.print(f"successor {doc['successor'] or '-'}", markup=False)
        c.print(f"sunset    {_network._utc(doc['sunset']) or 'none: it keeps serving, with the headers'}", markup=False)
        c.print(f"seq       {doc['seq']}", markup=False)

    _ui.emit(args, doc, human)
    return _ui.EXIT_OK


def _newest_deprecated(doc):
    for entry in doc["history"]:
        if entry.get("status") == "deprecated":
            return entry["fid"]
    return None


def undeprecate(args):
    key, target, tracker, network, api = _statement_plan(args)
    box = {}

    @defer.inlineCallbacks
    def flow(reactor):
        fid, _ = yield resolve_fid(reactor, api, target, _newest_deprecated)
        return (yield publish_deprecation(reactor, tracker, network, api, key, fid, False, None, 0, box))

    doc = _network.run_flow(flow, box)

    def human(c):
        c.print(f"[green]undeprecated[/] {doc['fid']} (seq {doc['seq']}): it serves as before", markup=True)

    _ui.emit(args, doc, human)
    return _ui.EXIT_OK


# --- orb info NAME -------------------------------------------------------------------------------


def is_name(text):
    """Whether an ``orb info`` argument is a name rather than a fid."""
    raw = text.strip().lower().rstrip(".")
    if "." in raw:
        return True
    try:
        _fid.check(_fid.from_text(raw))
        return False
    except _fid.FidError:
        return len(raw) < 53  # a short label is a name; a long one a mistyped fid


def info_name(args):
    api = _config.resolve_api(args.api)

    def own_label():
        try:
            return _label_of(_keys.load_owner_key(_config.default_key_path()))
        except _keys.OwnerKeyError:
            return None

    target = parse_target(args.fid, own_label, fid_ok=False)

    @defer.inlineCallbacks
    def flow(reactor):
        doc = yield name_doc(reactor, api, target)
        if doc is None:
            raise CommandError(f"the tracker at {api} knows no name {target.text}", _ui.EXIT_NOT_FOUND, "not_found",
                               {"name": target.name, "owner_label": target.owner_label})
        return {**doc, "ok": True, "api": api, "gateway_url": f"{api}/n/{target.owner_label}/{target.name}"}

    doc = _network.run_flow(flow, {})

    def human(c):
        for label, value in (("name", doc["dns_name"]), ("owner", doc["owner"]), ("gateway", doc["gateway_url"]),
                             ("serves", doc["serving"] or "nothing: every version is gone"), ("status", doc["status"]),
                             ("seq", doc["seq"])):
            c.print(f"{label:<12}{_network._remote_text(str(value), 300)}", markup=False)
        rows = []
        for h in doc["history"]:
            rows.append((str(h.get("seq")), h.get("fid"), h.get("status"), h.get("successor") or "-",
                         _network._utc(h.get("sunset")) or "-"))
        _network.columns(c, ("SEQ", "FID", "STATUS", "SUCCESSOR", "SUNSET"), rows)

    _ui.emit(args, doc, human)
    return _ui.EXIT_OK


def deprecation_rows(doc):
    """The lines ``orb info FID`` adds for a deprecated function (its ``deprecation`` member)."""
    dep = doc.get("deprecation")
    if not isinstance(dep, dict) or not dep.get("deprecated"):
        return []
    state = "gone (past its sunset)" if dep.get("gone") else "deprecated"
    rows = [("status", state)]
    if dep.get("successor"):
        rows.append(("successor", dep["successor"]))
    if dep.get("sunset"):
        rows.append(("sunset", _network._utc(dep["sunset"])))
    return rows

