# -*- test-case-name: tests.test_secrets_cli -*-
"""
``orb secret set|sync|status|rm FID``: a function's secrets, sealed to the
hosts the owner chooses (RFC 9.12).

    orb secret set FID KEY=VALUE ... (--host NODEID ... | --all-hosts) [--from-file F]
    orb secret sync FID [--from-file F]       seal to every host waiting for a sealed copy
    orb secret status FID                     which hosts hold a sealed copy, which wait
    orb secret rm FID (--host NODEID ... | --all-hosts)

``set`` replaces the function's secrets on the hosts named (``--all-hosts``:
every peer that hosts it or is placed for it now). Each host gets its own
sealed box, to the X25519 key of its node key (taken from the tracker's
API, checked against the host's node id), signed with the owner key
(``--key``) and sent to the tracker (``--tracker``) as SECRET, which stores
it and forwards it. ``set`` also seals the map to the owner key itself (the
*owner copy*, RFC 9.12), which only that key opens: ``sync`` reseals from
it to the hosts placed since, or from a file (``--from-file``: ``KEY=VALUE``
lines, ``#`` comments, mode 0600). Nothing is kept on this machine.
``rm`` seals an empty map (and, with ``--all-hosts``, empties the owner copy).
Values are never printed, not even with ``--json``: only their names.

Exit status: 0; 2 bad arguments; 3 a bad file or key; 6 the tracker or its
API could not be reached; 7 the tracker or every host refused (not the
owner, a bad signature); 10 no such function, or no such host of it.
"""

import hashlib
import os
import stat

import attrs
from twisted.internet import defer, error

from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import secrets as secretsmod
from orb.protocol.codes import ErrorCode

from . import _config, _function, _keys, _network, _ui
from ._ui import CommandError

REQUEST_TIMEOUT_S = 15.0
MAX_FILE_BYTES = 64 * 1024


def register(sub):
    p = sub.add_parser("secret", help="attach secrets to a function, sealed to the hosts you choose",
                       description="Seal a function's secrets to chosen hosts: only those hosts can read them, "
                                   "never a tracker. The function reads them from context.secrets.")
    verbs = p.add_subparsers(dest="secret_verb", metavar="VERB", parser_class=type(p))

    def verb(name, help_text, func):
        v = verbs.add_parser(name, help=help_text, description=help_text)
        v.add_argument("fid", metavar="FID")
        v.add_argument("--json", action="store_true", help="print one JSON document on stdout (never a value)")
        v.add_argument("--api", metavar="URL", help="the tracker's HTTP API (default: $ORB_API, config.toml)")
        v.set_defaults(func=_function._guarded(func))
        return v

    def wire(v):
        v.add_argument("--tracker", metavar="[NODEID@]HOST:PORT", help="the tracker (default: $ORB_TRACKER, "
                                                                       "config.toml)")
        v.add_argument("--network", metavar="NAME", help="the network's name (default: $ORB_NETWORK, main)")
        v.add_argument("--key", metavar="PATH", help="the owner key (default: $ORB_HOME/owner.key)")

    def hosts(v):
        v.add_argument("--host", metavar="NODEID", action="append", default=[],
                       help="a host to seal to, its 64-hex-digit node id (repeatable)")
        v.add_argument("--all-hosts", action="store_true", help="every peer that hosts or is placed for FID now")

    v = verb("set", "replace FID's secrets on the hosts named", set_)
    v.add_argument("pairs", metavar="KEY=VALUE", nargs="*", help="a secret (names: letters, digits, _)")
    v.add_argument("--from-file", metavar="F", help="KEY=VALUE lines from a file only you can read (mode 0600)")
    hosts(v)
    wire(v)
    v = verb("sync", "seal FID's secrets to every host waiting for a sealed copy", sync)
    v.add_argument("--from-file", metavar="F", help="KEY=VALUE lines (mode 0600); default: the values last set, "
                                                    "from the owner copy that only your key opens")
    wire(v)
    verb("status", "show which hosts of FID hold its sealed secrets and which wait for them", status)
    v = verb("rm", "remove FID's secrets from the hosts named (seals an empty set)", rm)
    hosts(v)
    wire(v)
    p.set_defaults(func=lambda args: _usage("give a verb: set, sync, status or rm"))


def _usage(text):
    raise CommandError(text, _ui.EXIT_USAGE, "usage")


# --- values ----------------------------------------------------------------------------------------


def parse_pairs(pairs, where="argument"):
    """KEY=VALUE texts as a dict; CommandError naming the bad one (never its value)."""
    values = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not secretsmod.KEY_RE.match(name):
            raise CommandError(f"{where} {name[:64]!r}... is not KEY=VALUE with a name of letters, digits and _",
                               _ui.EXIT_USAGE, "usage")
        values[name] = value
    return values


def read_file(path):
    """The KEY=VALUE lines of ``path``, which only its owner may read."""
    try:
        info = os.stat(path)
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror}", _ui.EXIT_INPUT, "input") from None
    if info.st_mode & 0o077:
        raise CommandError(f"{path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 {path}",
                           _ui.EXIT_INPUT, "input")
    if len(raw) > MAX_FILE_BYTES:
        raise CommandError(f"{path} is over {MAX_FILE_BYTES} bytes", _ui.EXIT_INPUT, "input")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(f"{path} is not UTF-8 text", _ui.EXIT_INPUT, "input") from None
    lines = [line.strip() for line in text.splitlines()]
    return parse_pairs([line for line in lines if line and not line.startswith("#")], f"{path}: line")


def checked(values):
    try:
        secretsmod.check_values(values)
    except secretsmod.SecretError as e:
        raise CommandError(str(e), _ui.EXIT_USAGE, "usage") from None
    return values


# --- plans -----------------------------------------------------------------------------------------


@attrs.frozen
class SecretPlan:
    fid: str
    api: str
    tracker: object = None
    network: str = ""
    key: object = None  # the owner's NodeKey
    values: dict = attrs.field(factory=dict, repr=False)
    hosts: tuple = ()  # node ids (bytes) named with --host
    all_hosts: bool = False
    waiting_only: bool = False
    owner_copy: bool = True  # also seal to the owner key itself (RFC 9.12), so that sync can reseal later
    from_owner_copy: bool = False  # sync: the values are the owner copy's


def _host_ids(args):
    out = []
    for text in args.host:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            _usage(f"--host {text[:70]!r} is not a node id: give 64 hex digits")
        out.append(raw)
    if out and args.all_hosts:
        _usage("give --host or --all-hosts, not both")
    if not out and not args.all_hosts:
        _usage("name the hosts to seal to: --host NODEID (repeatable) or --all-hosts")
    return tuple(out)


def _wire_plan(args, values, **kw):
    return SecretPlan(fid=args.fid, api=_config.resolve_api(args.api), tracker=_config.resolve_tracker(args.tracker),
                      network=_config.resolve_network(args.network),
                      key=_keys.load_owner_key(args.key or _config.default_key_path()), values=values, **kw)


def set_(args):
    _ui.fid_argument(args.fid)
    values = parse_pairs(args.pairs)
    if args.from_file:
        values = {**read_file(args.from_file), **values}
    if not values:
        _usage("give at least one KEY=VALUE (or --from-file F); `orb secret rm` removes them")
    hosts = _host_ids(args)
    plan = _wire_plan(args, checked(values), hosts=hosts, all_hosts=args.all_hosts)
    return _seal_and_print(args, plan, "set")


def sync(args):
    _ui.fid_argument(args.fid)
    if args.from_file:
        plan = _wire_plan(args, checked(read_file(args.from_file)), waiting_only=True, owner_copy=False)
    else:
        plan = _wire_plan(args, {}, waiting_only=True, owner_copy=False, from_owner_copy=True)
    return _seal_and_print(args, plan, "sync")


def rm(args):
    _ui.fid_argument(args.fid)
    hosts = _host_ids(args)
    plan = _wire_plan(args, {}, hosts=hosts, all_hosts=args.all_hosts, owner_copy=args.all_hosts)
    return _seal_and_print(args, plan, "rm")


def open_owner_copy(plan, doc):
    """The values of the owner copy the tracker listed, opened with the owner key; CommandError without one."""
    from cryptography.hazmat.primitives import serialization

    own = doc.get("owner_copy")
    if not isinstance(own, dict):
        raise CommandError(f"{plan.fid[:16]}... has no owner copy to reseal from: give --from-file F",
                           _ui.EXIT_NOT_FOUND, "not_found")
    seed = plan.key.private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                              serialization.NoEncryption())
    try:
        return secretsmod.open_for(secretsmod.x25519_private(seed), bytes.fromhex(own["sealed"]),
                                   fidmod.from_text(plan.fid), secretsmod.owner_copy_host(plan.key.public_bytes))
    except (secretsmod.SecretError, ValueError, TypeError, KeyError) as e:
        raise CommandError(f"the owner copy does not open with this key: {e}", _ui.EXIT_REFUSED, "denied") from None


def status(args):
    _ui.fid_argument(args.fid)
    plan = SecretPlan(fid=args.fid, api=_config.resolve_api(args.api))
    doc = _network.run_flow(lambda reactor: fetch_status(reactor, plan), {})

    def human(c):
        c.print(f"fid       {doc['fid']}", markup=False)
        c.print("secrets   " + ("yes" if doc["has_secrets"] else "none sealed yet"), markup=False)
        for h in doc["hosts"]:
            state = ("sealed (seq " + str(h["seq"]) + ")" if h["sealed"] else
                     "tracker: never gets secrets" if h["is_tracker"] else
                     "WAITING for a sealed copy: run orb secret sync" if h["waiting"] else "no secrets")
            c.print(f"  {h['node_id'][:16]}  {'hosting' if h['hosting'] else 'placed ':<8} {state}", markup=False)
        if doc["waiting"]:
            c.print(f"{len(doc['waiting'])} host(s) wait for a sealed copy", markup=False)

    _ui.emit(args, {**doc, "ok": True}, human)
    return _ui.EXIT_OK


# --- flows -----------------------------------------------------------------------------------------


@defer.inlineCallbacks
def fetch_status(reactor, plan):
    path = f"/api/v1/functions/{plan.fid}/secrets"
    code, doc = yield _network.get_json(reactor, plan.api, path)
    if code == 404:
        raise CommandError(f"the tracker at {plan.api} knows no function {plan.fid}", _ui.EXIT_NOT_FOUND,
                           "not_found", {"fid": plan.fid})
    if code != 200 or not isinstance(doc, dict) or not isinstance(doc.get("hosts"), list):
        raise _network._api_error(code, doc, plan.api + path)
    return doc


def targets(plan, doc):
    """The hosts to seal to: [(node id, Ed25519 key)], each key checked against its node id."""
    by_id = {}
    for h in doc["hosts"]:
        try:
            node, key = bytes.fromhex(h["node_id"]), bytes.fromhex(h["key"] or "")
        except (TypeError, ValueError, KeyError):
            continue
        if len(key) == 32 and hashlib.sha256(key).digest() == node and not h.get("is_tracker"):
            by_id[node] = (key, h)
    if plan.waiting_only:
        return [(n, k) for n, (k, h) in by_id.items() if h.get("waiting")]
    if plan.all_hosts:
        return [(n, k) for n, (k, _) in by_id.items()]
    missing = [n.hex() for n in plan.hosts if n not in by_id]
    if missing:
        raise CommandError(f"{missing[0][:16]}... neither hosts nor is placed for {plan.fid[:16]}... (see orb secret "
                           "status); a host must be a live peer the tracker knows", _ui.EXIT_NOT_FOUND, "not_found")
    return [(n, by_id[n][0]) for n in plan.hosts]


def sealed_message(plan, host, host_key, seq, now_s):
    raw = fidmod.from_text(plan.fid)
    sealed = secretsmod.seal(host_key, raw, host, int(now_s), plan.values)
    return m.Secret(owner_key=plan.key.public_bytes, fid=raw, host=host, seq=seq, sealed=sealed,
                    signature=secretsmod.sign(plan.key, raw, host, seq, sealed))


_ACK_WORDS = {ErrorCode.DENIED: "denied: this key is not the function's owner key",
              ErrorCode.NOT_FOUND: "no such function at the tracker", ErrorCode.STALE: "stale: a newer one is held",
              ErrorCode.BUSY: "the tracker holds all the sealed secrets it can"}


@defer.inlineCallbacks
def seal_flow(reactor, plan, box):
    """Seal to each target host and send SECRET; the document ``orb secret`` prints (names, never values)."""
    from orb.net.adapter import RemoteError, RequestTimeout

    doc = yield fetch_status(reactor, plan)
    if doc.get("owner") not in (None, plan.key.public_bytes.hex()):
        raise CommandError(f"this key is not the owner of {plan.fid[:16]}... (owner {doc['owner'][:16]}...): --key",
                           _ui.EXIT_REFUSED, "denied")
    if plan.from_owner_copy:
        plan = attrs.evolve(plan, values=open_owner_copy(plan, doc))
    chosen = targets(plan, doc)
    if plan.owner_copy:
        chosen.append((secretsmod.owner_copy_host(plan.key.public_bytes), plan.key.public_bytes))
    results = []
    if chosen:
        client = _network.SessionClient()
        p = yield _network.connect(reactor, plan.tracker, plan.network, client)
        box["protocol"] = p
        try:
            seq = int(reactor.seconds() * 1_000_000)
            for host, key in chosen:
                message = sealed_message(plan, host, key, seq, reactor.seconds())
                try:
                    ack = yield p.request(message, timeout_s=REQUEST_TIMEOUT_S)
                except RemoteError as e:
                    results.append({"node_id": host.hex(), "ok": False, "error": _network._remote_text(e.text)})
                    continue
                except RequestTimeout:
                    raise CommandError(f"the tracker did not answer within {REQUEST_TIMEOUT_S:g} s",
                                       _ui.EXIT_NETWORK, "timeout") from None
                except (error.ConnectionLost, error.ConnectionDone):
                    raise CommandError("the tracker closed the session", _ui.EXIT_NETWORK, "network") from None
                entry = {"node_id": host.hex(), "ok": ack.status == 0, "seq": str(ack.seq)}
                if ack.status:
                    try:
                        kind = ErrorCode(ack.status)
                    except ValueError:
                        kind = ErrorCode.UNSPECIFIED
                    entry["error"] = _ACK_WORDS.get(kind, kind.name.lower()) + ": " + _network._remote_text(ack.text)
                results.append(entry)
        finally:
            yield _network.close_session(reactor, p, client)
    own = secretsmod.owner_copy_host(plan.key.public_bytes).hex()
    owner_copy = next((r for r in results if r["node_id"] == own), None)
    hosts = [r for r in results if r["node_id"] != own]
    return {"ok": all(r["ok"] for r in results), "fid": plan.fid, "names": sorted(plan.values), "hosts": hosts,
            "owner_copy": None if owner_copy is None else owner_copy["ok"]}


def _seal_and_print(args, plan, verb):
    doc = _network.run_flow(lambda reactor: seal_flow(reactor, plan, {}), {})
    if doc["owner_copy"] is False and not doc["hosts"]:
        raise CommandError("the tracker refused the owner copy", _ui.EXIT_REFUSED, "refused", {"fid": plan.fid})
    if doc["hosts"] and not any(r["ok"] for r in doc["hosts"]):
        first = doc["hosts"][0].get("error", "refused")
        raise CommandError(f"every host's sealed copy was refused: {first}", _ui.EXIT_REFUSED, "refused",
                           {"fid": plan.fid, "hosts": doc["hosts"]})

    def human(c):
        if doc["owner_copy"]:
            c.print("owner copy updated (only your key opens it; `orb secret sync` reseals from it)", markup=False)
        if not doc["hosts"]:
            c.print("no host to seal to" + (" (none is waiting)" if verb == "sync" else ""), markup=False)
            return
        what = "removed" if verb == "rm" else f"{len(doc['names'])} secret(s) ({', '.join(doc['names'])}) sealed"
        for r in doc["hosts"]:
            c.print(f"  {r['node_id'][:16]}  " + ("ok" if r["ok"] else r.get("error", "refused")), markup=False)
        c.print(f"{what} for {sum(r['ok'] for r in doc['hosts'])} of {len(doc['hosts'])} host(s) of "
                f"{plan.fid[:16]}...", markup=False)

    _ui.emit(args, doc, human)
    return _ui.EXIT_OK
