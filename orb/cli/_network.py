# -*- test-case-name: tests.test_cli_network -*-
"""
The network verbs of the ``orb`` command:

    orb deploy DIR [--no-source] [--no-wait] [--timeout S]   run the samples, upload, wait for the replicas
    orb ls [--owner HEX]                                     an owner's functions, as the tracker knows them
    orb info FID                                             one function: manifest, replicas, checks

``orb deploy`` speaks the ORB wire to a tracker (RFC 9.4): it runs every
sample in the local jail, signs the deploy statement (RFC 9.8) with the
owner key, opens a TLS session to the tracker (``--tracker``, pinned when
given as NODEID@HOST:PORT; ``--network``), sends DEPLOY and, while it
waits for DEPLOY_ACK, answers the tracker's FETCH for its package from the
bytes it built. Then it polls LOOKUP until the manifest's ``replicas``
peers are verified replicas (or ``--no-wait``, or ``--timeout``).

``orb ls`` and ``orb info`` read the tracker's REST API (``--api``;
``orb.tracker.http``).

Each verb has a synchronous ``prepare_*`` (settings, files, keys: errors
that need no reactor) and a ``*_flow(reactor, plan)`` that returns a
Deferred; :func:`run_flow` runs a flow under the real reactor. Every
failure is a :class:`CommandError` with an exit status of
:mod:`orb.cli._ui`.
"""

import datetime
import json
import re
import shutil

import attrs
from twisted.internet import defer, error, task

from orb.protocol import fid as _fid
from orb.protocol.codes import ErrorCode, Role
from orb.protocol.messages import Deploy, Error, Fetch, Lookup, MessageType, Package

from . import _config, _function, _keys, _project, _ui
from ._ui import CommandError

CONNECT_TIMEOUT_S = 10.0
LOOKUP_TIMEOUT_S = 15.0
LOOKUP_INTERVAL_S = 0.1
DEFAULT_WAIT_S = 120.0
HTTP_TIMEOUT_S = 15.0
MAX_HTTP_BODY_BYTES = 16 * 1024 * 1024
CLOSE_TIMEOUT_S = 5.0
# FETCH bounds (RFC 5.15): 0 <= offset < size, 1 <= length <= MAX_FETCH_BYTES.
MAX_FETCH_BYTES = 1024 * 1024
# The ERROR code for a FETCH out of those bounds. TODO at merge: the pkgnet branch names it OUT_OF_RANGE.
FETCH_OUT_OF_RANGE = ErrorCode.OUT_OF_RANGE


def register(sub) -> None:
    def verb(name, help_text, func, description):
        p = sub.add_parser(name, help=help_text, description=description)
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        p.set_defaults(func=_function._guarded(func))
        return p

    def api_option(p):
        p.add_argument("--api", metavar="URL", help="the tracker's HTTP API, e.g. http://127.0.0.1:7480 "
                                                    "(default: $ORB_API, else api = \"...\" in config.toml)")

    p = verb("deploy", "run the samples, upload a function to a tracker and wait for its replicas", deploy,
             "Run every [[sample]] of DIR in the local jail (stopping on a failure), sign the deploy with the "
             "owner key, upload the package to the tracker (which fetches it, verifies it against the fid and "
             "runs the samples itself), then wait until the manifest's `replicas` peers host verified copies. "
             "Prints the fid, its DNS name <fid>.orb, the gateway URL (when the API is known) and the replica "
             "count.")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--no-source", action="store_true", help="deploy the --no-source (bytecode only) package")
    p.add_argument("--no-wait", action="store_true", help="return once the tracker has accepted the function, "
                                                          "without waiting for the replicas")
    p.add_argument("--timeout", metavar="S", type=_seconds, default=DEFAULT_WAIT_S,
                   help=f"how long to wait for the replicas after the tracker accepts (default {DEFAULT_WAIT_S:g}); "
                        "exit status 9 if they are not all up by then")
    p.add_argument("--tracker", metavar="[NODEID@]HOST:PORT",
                   help="the tracker (default: $ORB_TRACKER, else tracker = \"...\" in config.toml); NODEID (64 hex "
                        "digits) pins its node key")
    p.add_argument("--network", metavar="NAME", help="the network's name (default: $ORB_NETWORK, else "
                                                     "network = \"...\" in config.toml, else main)")
    p.add_argument("--key", metavar="PATH", help="the owner key (default: $ORB_HOME/owner.key)")
    api_option(p)
    p.add_argument("--allow-unconfined", action="store_true",
                   help="DANGEROUS: run the samples locally even if jail layers are missing")
    g = p.add_argument_group("funding (issue 14)", "With --fund, once the tracker has accepted the function, fund it "
                             "on the escrow from the wallet, accepting the tracker's voucher signer (its eth_signer "
                             "in GET /api/v1/stats, so --api is needed) and any --signer. Exit statuses 12 to 16 "
                             "as for `orb fund`.")
    g.add_argument("--fund", action="store_true", help="fund the function on the escrow as part of the deploy")
    g.add_argument("--eth", metavar="ETH", help="with --fund: ether to deposit, e.g. 0.1")
    g.add_argument("--price-wei", type=int, metavar="N", help="with --fund: wei per request served")
    g.add_argument("--epoch-price-wei", type=int, default=0, metavar="N", help="wei per uptime epoch [default: 0]")
    g.add_argument("--mib-price-wei", type=int, default=0, metavar="N", help="wei per MiB transferred [default: 0]")
    g.add_argument("--signer", action="append", default=[], metavar="ADDR",
                   help="another voucher signer to accept (repeatable); the tracker's is added")
    g.add_argument("--every-tracker", action="store_true",
                   help="also accept the voucher signer of every tracker the API lists (the eth_signer each "
                        "signs into its tracker record, GET /api/v1/trackers), so that calls through any of "
                        "them are paid")
    g.add_argument("--eth-rpc", metavar="URL", help="Ethereum JSON-RPC URL (default: $ORB_ETH_RPC, else "
                                                    "http://127.0.0.1:8545)")
    g.add_argument("--escrow", metavar="ADDRESS", help="OrbEscrow's address (default: $ORB_ESCROW, else asked "
                                                       "of the embedded chain)")
    g.add_argument("--wallet", metavar="PATH", help="the paying wallet (default: $ORB_WALLET, else "
                                                    "$ORB_HOME/wallet.json)")
    g.add_argument("--passphrase-file", metavar="FILE", help="the passphrase of an encrypted wallet")

    p = verb("ls", "list an owner's functions known to the tracker", ls,
             "List the functions of an owner (default: the local owner key's) that the tracker knows, with "
             "their verified replicas, from the tracker's REST API.")
    p.add_argument("--owner", metavar="HEX", help="the owner's public key, 64 hex digits (default: that of "
                                                  "--key or $ORB_HOME/owner.key)")
    p.add_argument("--key", metavar="PATH", help="the owner key whose functions to list")
    api_option(p)

    from . import _invoke

    _invoke.register(sub, verb)

    p = verb("info", "show one function (manifest, replicas, deprecation) or a name's history", info,
             "Show a function as the tracker knows it: manifest, size, owner, deploy time, deprecation, and each "
             "replica with its node, address, network group, RTT and last passed integrity check. Given a NAME "
             "(name, name.<owner> or name.<owner>.orb), show every version it pointed at: seq, fid and status.")
    p.add_argument("fid", metavar="NAME-OR-FID")
    api_option(p)
    from . import _wallet

    p.epilog = _wallet.PAID_JSON_HELP
    p.add_argument("--eth-rpc", metavar="URL", help="also show the function's funding on this chain's escrow, "
                                                    "and what it has paid its hosts (default: $ORB_ETH_RPC; none "
                                                    "when neither is set)")
    p.add_argument("--escrow", metavar="ADDRESS", help="OrbEscrow's address (default: $ORB_ESCROW, else asked of "
                                                       "the embedded chain)")


def _seconds(text):
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError("give 0 < S <= 86400 seconds")
    return value


def _remote_text(text, limit=300):
    """Text from the network, printable and bounded."""
    from orb.net.logs import escape

    return escape(text, limit)


def _utc(unix_s):
    if not unix_s:
        return None
    return datetime.datetime.fromtimestamp(unix_s, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- running a flow ------------------------------------------------------------------------------


def run_flow(flow, box):
    """
    Run ``flow(reactor)`` (a Deferred) under the real reactor and return its
    result, or raise its error. Ctrl-C (or SIGTERM) stops the executor and
    the session named in ``box`` and raises CommandError(130).
    """
    from twisted.internet import reactor

    _function.quiet_logging()
    out = {}

    def on_shutdown():
        if "result" in out:
            return None
        box["interrupted"] = True
        waits = []
        if box.get("executor") is not None:
            waits.append(box["executor"].stop())
        if box.get("protocol") is not None:
            box["protocol"].close("interrupted", ErrorCode.SHUTDOWN)
        return defer.DeferredList(waits) if waits else None

    def go():
        d = defer.maybeDeferred(flow, reactor)

        def finished(result):
            out["result"] = result
            if reactor.running:
                reactor.stop()

        d.addBoth(finished)

    reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    reactor.callWhenRunning(go)
    reactor.run(installSignalHandlers=True)
    if box.get("interrupted") or "result" not in out:
        # What the flow said after the signal (a session closed under it) is not news.
        raise CommandError("interrupted", _ui.EXIT_INTERRUPTED, "interrupted")
    result = out["result"]
    if isinstance(result, Exception) or hasattr(result, "raiseException"):
        result.raiseException()
    return result


# --- deploy --------------------------------------------------------------------------------------


@attrs.frozen
class DeployPlan:
    built: _project.Built
    key: object  # the owner's NodeKey
    tracker: _config.TrackerAddress
    network: str
    api: str | None
    wait: bool
    timeout_s: float
    allow_unconfined: bool = False
    json: bool = False


def prepare_deploy(args):
    """Everything deploy needs that a reactor does not: settings, the key, the built package."""
    tracker = _config.resolve_tracker(args.tracker)
    network = _config.resolve_network(args.network)
    api = _config.resolve_api(args.api, required=False)
    key = _keys.load_owner_key(args.key or _config.default_key_path())
    built = _project.build(args.dir, no_source=args.no_source)
    return DeployPlan(built=built, key=key, tracker=tracker, network=network, api=api, wait=not args.no_wait,
                      timeout_s=args.timeout, allow_unconfined=args.allow_unconfined, json=args.json)


def deploy(args):
    plan = prepare_deploy(args)
    fund_args = prepare_fund(args, plan)
    box = {}

    @defer.inlineCallbacks
    def flow(reactor):
        if fund_args is not None:  # before the deploy: a tracker that signs no vouchers gets nothing deployed
            box["signer"] = yield tracker_signer(reactor, plan.api)
            if args.every_tracker:
                fund_args.signer += (yield every_tracker_signer(reactor, plan.api))
        elif plan.api:
            box["requires_funding"] = yield tracker_requires_funding(reactor, plan.api)
        return (yield deploy_flow(reactor, plan, box))

    try:
        doc = run_flow(flow, box)
    except CommandError as e:
        if fund_args is None or e.kind != "replicas":
            raise
        # Accepted, but short of replicas by --timeout: the function is the owner's all the same, so fund it.
        funding = fund_deployed(fund_args, e.details, box["signer"])
        raise CommandError(f"{e} It is funded: {funding['deposit_eth']} ETH on escrow {funding['escrow']}.",
                           e.exit_code, e.kind, {**e.details, "funding": funding}) from None
    if fund_args is not None:
        doc["funding"] = fund_deployed(fund_args, doc, box["signer"])
    elif box.get("requires_funding"):
        doc["warning"] = (f"the tracker requires funding (--require-funding): calls of {doc['fid']} are answered 402 "
                          f"payment_required until it is funded: orb fund {doc['fid']} --eth AMOUNT --price-wei N "
                          f"--signer {box['requires_funding']} (or deploy with --fund)")
    return print_deployed(args, doc)


@defer.inlineCallbacks
def tracker_requires_funding(reactor, api):
    """The tracker's voucher signer when it runs with --require-funding, else None (and None when its stats
    cannot be read: a warning is not worth failing a deploy for)."""
    try:
        status, stats = yield get_json(reactor, api, "/api/v1/stats")
    except CommandError:  # unreachable, or not JSON
        return None
    payments = stats.get("payments") if status == 200 and isinstance(stats, dict) else None
    if isinstance(payments, dict) and payments.get("require_funding") is True:
        return str(payments.get("eth_signer"))[:42]
    return None


def prepare_fund(args, plan):
    """`deploy --fund`'s options, checked before anything is deployed: a Namespace for `orb fund`, or None."""
    import argparse

    from orb.pay import client as _client

    from . import _wallet

    given = [f"--{n}" for n in ("eth", "price-wei") if getattr(args, n.replace("-", "_")) is not None]
    if not args.fund:
        extra = given + (["--signer"] if args.signer else []) + (["--every-tracker"] if args.every_tracker else [])
        if extra:
            raise CommandError(f"{', '.join(extra)} only make sense with --fund", _ui.EXIT_USAGE, "usage")
        return None
    missing = [n for n in ("--eth", "--price-wei") if n not in given]
    if missing:
        raise CommandError(f"--fund needs {' and '.join(missing)} (e.g. --eth 0.01 --price-wei 1000000000000)",
                           _ui.EXIT_USAGE, "usage")
    if not plan.api:
        raise CommandError("--fund needs the tracker's API (--api or $ORB_API) to learn its voucher signer",
                           _ui.EXIT_USAGE, "usage")
    fund_args = argparse.Namespace(
        fid=None, eth=args.eth, price_wei=args.price_wei, epoch_price_wei=args.epoch_price_wei,
        mib_price_wei=args.mib_price_wei, signer=list(args.signer), eth_rpc=args.eth_rpc, escrow=args.escrow,
        wallet=args.wallet, passphrase_file=args.passphrase_file, timeout=_client.DEFAULT_TIMEOUT_S,
        json=args.json)
    _wallet.check_fund_options(fund_args)  # usage errors before the deploy, not after
    return fund_args


@defer.inlineCallbacks
def tracker_signer(reactor, api):
    """The address that signs the tracker's vouchers (``eth_signer`` of GET /api/v1/stats)."""
    status, stats = yield get_json(reactor, api, "/api/v1/stats")
    signer = stats.get("eth_signer") if status == 200 and isinstance(stats, dict) else None
    if not isinstance(signer, str) or not signer.startswith("0x"):
        raise CommandError(f"the tracker at {api} signs no vouchers (it runs without --eth-rpc), so funding the "
                           "function would pay no host: nothing was deployed", _ui.EXIT_USAGE, "unpaid_tracker")
    return signer


@defer.inlineCallbacks
def every_tracker_signer(reactor, api):
    """The voucher signers the trackers listed at ``api`` sign into their records (GET /api/v1/trackers)."""
    from eth_utils import is_address

    status, doc = yield get_json(reactor, api, "/api/v1/trackers")
    trackers = doc.get("trackers") if status == 200 and isinstance(doc, dict) else None
    if not isinstance(trackers, list):
        raise CommandError(f"the tracker at {api} did not list its trackers (HTTP {status})", _ui.EXIT_NETWORK,
                           "network")
    signers = [t.get("eth_signer") for t in trackers if isinstance(t, dict)]
    return sorted({s for s in signers if isinstance(s, str) and is_address(s)})[:MAX_TRACKER_SIGNERS]


MAX_TRACKER_SIGNERS = 16  # signers --every-tracker adds at most (each costs gas in fund)


def fund_deployed(fund_args, doc, signer):
    """Fund the fid just deployed (`orb fund`'s logic), with the tracker's signer accepted: the funding document."""
    import argparse

    from . import _wallet

    args = argparse.Namespace(**{**vars(fund_args), "fid": doc["fid"], "signer": [signer, *fund_args.signer]})
    try:
        return _wallet._guarded(_wallet.fund_fid)(args)
    except CommandError as e:
        raise CommandError(f"{doc['fid']} is deployed, but funding it failed: {e} (retry with `orb fund "
                           f"{doc['fid']} --eth ... --price-wei ... --signer {signer}`)", e.exit_code, e.kind,
                           {**e.details, "fid": doc["fid"], "deployed": doc, "tracker_signer": signer}) from None


def jail_samples(reactor, plan, box):
    """Run every sample in the local jail, as `orb run --samples` does: Deferred[sample rows]."""
    built = plan.built
    root = _function._unpacked(built)
    d = _function.run_calls(reactor, built, root, list(built.manifest.samples), None, plan.allow_unconfined, box)

    def done(_):
        shutil.rmtree(root, ignore_errors=True)
        if box.get("interrupted"):
            raise CommandError("interrupted while running the samples", _ui.EXIT_INTERRUPTED, "interrupted")
        if "error" in box:
            raise CommandError(f"the local jail could not run the samples: {box['error']}", _ui.EXIT_JAIL, "jail")
        missing = [r for r in box["results"] if r.status.name in ("REFUSED", "INTERNAL")]
        if missing:
            raise CommandError(f"the local jail cannot run functions here: {missing[0].message} "
                               "(see `orb sandbox-check`; --allow-unconfined runs the samples anyway)",
                               _ui.EXIT_JAIL, "jail")
        return _function.sample_rows(built.manifest, box["results"])

    d.addCallback(done)
    return d


@defer.inlineCallbacks
def deploy_flow(reactor, plan, box, progress_console=None):
    """Samples, DEPLOY while serving FETCH, then LOOKUP until the replicas are up: Deferred[result doc]."""
    built = plan.built
    fid_text = _fid.to_text(built.fid)
    rows = yield jail_samples(reactor, plan, box)
    failed = [r for r in rows if not r["passed"]]
    if failed:
        first = failed[0]
        raise CommandError(f"{len(failed)} of {len(rows)} samples failed locally, so nothing was deployed: "
                           f"{first['name']}: {first.get('why', '')} (see `orb run DIR --samples`)",
                           _ui.EXIT_FAILED, "samples", {"fid": fid_text, "samples": rows})
    signed = _project.sign_built(built, plan.key, int(reactor.seconds()))
    progress = _ui.TransferProgress(len(built.data), "uploading", console=progress_console, enabled=not plan.json)
    client = DeployClient(built, progress)
    p = yield connect(reactor, plan.tracker, plan.network, client)
    box["protocol"] = p
    try:
        ack = yield send_deploy(p, plan, signed)
        progress.close()
        doc = {"ok": True, "fid": fid_text, "dns_name": f"{fid_text}.orb",
               "gateway_url": f"{plan.api}/f/{fid_text}" if plan.api else None, "tracker": str(plan.tracker),
               "network": plan.network, "package_bytes": len(built.data), "served_bytes": client.served_bytes,
               "name": built.manifest.name, "version": built.manifest.version,
               "wanted_replicas": built.manifest.replicas, "replicas": ack.replicas, "tracker_hosts": False,
               "waited": plan.wait, "samples_passed": len(rows), "hosts": []}
        if plan.wait:
            _say(plan, f"the tracker accepted {fid_text}; waiting up to {plan.timeout_s:g} s for "
                       f"{built.manifest.replicas} verified replicas")
            yield wait_for_replicas(reactor, p, plan, doc)
        return doc
    finally:
        progress.close()
        yield close_session(reactor, p, client)


def _say(plan, text):
    """A progress line on stderr, for a person at a terminal only."""
    import sys

    if not plan.json and sys.stderr.isatty():
        print(text, file=sys.stderr)


class SessionClient:
    """A CLI's side of one session (an orb.net.adapter handler): ``ready`` fires with the protocol,
    ``lost`` when it ends, ``problem`` says why it failed when it says. It serves nothing."""

    def __init__(self):
        self.ready = defer.Deferred()
        self.lost = defer.Deferred()
        self.problem = None  # why the session failed (a ProtocolError), when it says

    def session_ready(self, p):
        if not self.ready.called:
            self.ready.callback(p)

    def session_lost(self, p, reason):
        if not self.ready.called:
            self.ready.errback(ConnectionError(str(self.problem or "closed during the handshake")))
        if not self.lost.called:
            self.lost.callback(None)

    def misbehaved(self, p, problem):
        self.problem = problem

    def rtt_measured(self, p, rtt_ms):
        pass

    def message_received(self, p, message, request_id):
        pass


class DeployClient(SessionClient):
    """The deployer's side of the session: serves FETCH for its own package."""

    def __init__(self, built, progress):
        super().__init__()
        self.built = built
        self.progress = progress
        self.served_bytes = 0
        self._served = set()  # offsets served, so a refetch does not move the bar twice

    def message_received(self, p, message, request_id):
        if isinstance(message, Fetch):
            self.on_fetch(p, message, request_id)
        # ADDR (a tracker's greeting) is of no use to a deployer.

    def on_fetch(self, p, message, request_id):
        data = self.built.data
        if message.fid != self.built.fid:
            return self._refuse(p, request_id, ErrorCode.NOT_FOUND,
                                f"package {_fid_name(message.fid)} is not held here")
        if message.offset >= len(data) or not 1 <= message.length <= MAX_FETCH_BYTES:
            return self._refuse(p, request_id, FETCH_OUT_OF_RANGE,
                                f"offset {message.offset}, length {message.length}: FETCH wants 0 <= offset < "
                                f"{len(data)} and 1 <= length <= {MAX_FETCH_BYTES}")
        chunk = data[message.offset:message.offset + message.length]
        p.send(Package(fid=self.built.fid, offset=message.offset, total_size=len(data), data=chunk),
               response_to=request_id)
        self.served_bytes += len(chunk)
        if message.offset not in self._served:
            self._served.add(message.offset)
            self.progress.advance(len(chunk))

    def _refuse(self, p, request_id, code, text):
        if request_id:
            p.send(Error(code=int(code), ref_request_id=request_id, text=text[:200]), response_to=request_id)


def _fid_name(raw):
    try:
        return _fid.to_text(raw)
    except _fid.FidError:
        return f"(invalid fid {raw[:40].hex()})"


@defer.inlineCallbacks
def connect(reactor, tracker, network, handler, timeout_s=CONNECT_TIMEOUT_S, key=None):
    """A TLS session with the ORB handshake to ``tracker`` (pinned to its node id when given): the protocol.
    ``key``: the node key to present (default: a throwaway one)."""
    from twisted.internet import endpoints

    from orb.identity import NodeKey
    from orb.net.adapter import OrbFactory
    from orb.net.tls import NodeTLS
    from orb.protocol.errors import IdentityMismatch
    from orb.protocol.session import LocalIdentity, SessionConfig

    if key is None:
        key = NodeKey.generate()  # a throwaway node identity: the owner key signs deploys, never sessions
    identity = LocalIdentity(key.public_bytes, 0)  # no roles: a client that hosts and routes nothing
    config = SessionConfig(network=network, served_types={MessageType.FETCH, MessageType.ADDR})
    factory = OrbFactory(identity, handler, reactor, initiator=True, config=config,
                         expected_node_id=tracker.node_id)
    endpoint = endpoints.HostnameEndpoint(reactor, tracker.host, tracker.port, timeout=timeout_s)
    where = f"the tracker at {tracker} (from {tracker.source})"
    try:
        yield endpoint.connect(NodeTLS(key).wrap(factory, is_client=True))
    except (error.DNSLookupError, error.ConnectError, OSError) as e:
        raise CommandError(f"cannot reach {where}: {_why(e)}", _ui.EXIT_NETWORK, "network") from None
    try:
        p = yield handler.ready
    except ConnectionError as e:
        if isinstance(handler.problem, IdentityMismatch):
            hint = f" (the node id pinned by {tracker.source} does not match: check it, or drop NODEID@ to trust any)"
        else:
            hint = f"; is it a tracker of network {network!r} (--network, $ORB_NETWORK)?"
        raise CommandError(f"{where} closed the session during the handshake: {e}{hint}", _ui.EXIT_NETWORK,
                           "network") from None
    return p


def _why(e):
    text = str(e).strip() or type(e).__name__
    return re.sub(r"\s+", " ", text)[:200]


# Each refusal of a DEPLOY: (exit status, what to tell the owner).
REFUSALS = {
    ErrorCode.TOO_LARGE: (_ui.EXIT_REFUSED, "the package is too large for this tracker"),
    ErrorCode.DENIED: (_ui.EXIT_REFUSED, "the tracker refused the owner's signature"),
    ErrorCode.INVALID: (_ui.EXIT_REFUSED, "the tracker refused the function"),
    ErrorCode.BUSY: (_ui.EXIT_BUSY, "the tracker is busy; try again shortly, or another tracker"),
    ErrorCode.RATE_LIMITED: (_ui.EXIT_BUSY, "the tracker is rate-limiting this session; try again shortly"),
    ErrorCode.SHUTDOWN: (_ui.EXIT_BUSY, "the tracker is shutting down; try again shortly, or another tracker"),
    ErrorCode.INTERNAL: (_ui.EXIT_BUSY, "the tracker failed on its side; try again, or another tracker"),
    ErrorCode.UNSUPPORTED: (_ui.EXIT_NETWORK, "the node does not serve DEPLOY: is --tracker a tracker?"),
}


def refusal(code, text, fid_text):
    try:
        kind = ErrorCode(code)
    except ValueError:
        kind = ErrorCode.UNSPECIFIED
    exit_code, what = REFUSALS.get(kind, (_ui.EXIT_NETWORK, "the tracker refused the deploy"))
    detail = _remote_text(text) or "no reason given"
    return CommandError(f"{what}: {detail} [{kind.name.lower()}]", exit_code, kind.name.lower(), {"fid": fid_text})


@defer.inlineCallbacks
def send_deploy(p, plan, signed):
    """DEPLOY, answered by DEPLOY_ACK after the tracker has fetched, verified and test-run the package."""
    from orb.net.adapter import RemoteError, RequestTimeout
    from orb.tracker.deploy import DEPLOY_TIMEOUT_S

    fid_text = _fid.to_text(signed.fid)
    message = Deploy(fid=signed.fid, owner_key=signed.owner_key, manifest=signed.manifest,
                     package_size=signed.package_size, issued_at=signed.issued_at, signature=signed.signature)
    try:
        ack = yield p.request(message, timeout_s=DEPLOY_TIMEOUT_S)
    except RemoteError as e:
        raise refusal(e.code, e.text, fid_text) from None
    except RequestTimeout:
        raise CommandError(f"the tracker did not answer the deploy within {DEPLOY_TIMEOUT_S:g} s",
                           _ui.EXIT_NETWORK, "timeout", {"fid": fid_text}) from None
    except (error.ConnectionLost, error.ConnectionDone):
        raise CommandError("the tracker closed the session before answering the deploy", _ui.EXIT_NETWORK,
                           "network", {"fid": fid_text}) from None
    if ack.status != 0:
        raise refusal(ack.status, ack.text, fid_text)
    return ack


@defer.inlineCallbacks
def lookup(p, fid_raw, max_replicas):
    """The tracker's PEERS for ``fid_raw``: (peer replicas, whether the tracker hosts it)."""
    from orb.net.adapter import RemoteError, RequestTimeout

    try:
        peers = yield p.request(Lookup(fid=fid_raw, max_replicas=max_replicas), timeout_s=LOOKUP_TIMEOUT_S)
    except RemoteError as e:
        if e.code == ErrorCode.NOT_FOUND:
            return [], False
        raise CommandError(f"the tracker refused LOOKUP: {_remote_text(e.text)}", _ui.EXIT_NETWORK, "network") from None
    except RequestTimeout:
        raise CommandError(f"the tracker did not answer LOOKUP within {LOOKUP_TIMEOUT_S:g} s", _ui.EXIT_NETWORK,
                           "timeout") from None
    except (error.ConnectionLost, error.ConnectionDone):
        raise CommandError("the tracker closed the session while we waited for the replicas", _ui.EXIT_NETWORK,
                           "network") from None
    hosts = [r for r in peers.replicas if not r.roles & Role.TRACKER]
    return hosts, len(hosts) < len(peers.replicas)


@defer.inlineCallbacks
def wait_for_replicas(reactor, p, plan, doc):
    """Poll LOOKUP until the manifest's ``replicas`` peers are verified replicas, or --timeout."""
    wanted = plan.built.manifest.replicas
    started = reactor.seconds()
    while True:
        hosts, tracker_hosts = yield lookup(p, plan.built.fid, min(255, wanted + 1))
        doc["replicas"], doc["tracker_hosts"] = len(hosts), tracker_hosts
        doc["hosts"] = [{"node_id": r.node_id.hex(), "address": {"ip": r.host, "port": r.port}, "rtt_ms": r.rtt_ms}
                        for r in hosts]
        if len(hosts) >= wanted:
            doc["waited_s"] = round(reactor.seconds() - started, 3)
            return doc
        if reactor.seconds() - started >= plan.timeout_s:
            meanwhile = " (the tracker hosts it itself meanwhile)" if tracker_hosts else ""
            raise CommandError(
                f"deployed {doc['fid']}, but only {len(hosts)} of {wanted} replicas are verified after "
                f"{plan.timeout_s:g} s{meanwhile}: the network may have too few peers that accept it; "
                f"`orb info {doc['fid']}` shows them as they come", _ui.EXIT_REPLICAS, "replicas",
                {k: doc[k] for k in ("fid", "dns_name", "gateway_url", "replicas", "wanted_replicas",
                                     "tracker_hosts")})
        yield task.deferLater(reactor, LOOKUP_INTERVAL_S, lambda: None)


@defer.inlineCallbacks
def close_session(reactor, p, client):
    """Say goodbye and wait (a bounded time) for the connection to be gone."""
    if not client.lost.called:
        # The adapter registers itself as the TLS transport's producer, and TLS
        # holds a close back while a producer is registered (until the adapter
        # aborts after CLOSE_GRACE_S): unregister it, so goodbye is prompt.
        if p.transport is not None and hasattr(p.transport, "unregisterProducer"):
            p.transport.unregisterProducer()
        p.close("done", ErrorCode.SHUTDOWN)
        timer = reactor.callLater(CLOSE_TIMEOUT_S, lambda: client.lost.called or client.lost.callback(None))
        yield client.lost
        if timer.active():
            timer.cancel()


def print_deployed(args, doc):
    def human(c):
        c.print(f"[green]deployed[/] {doc['name']} {doc['version']}", markup=True)
        c.print(f"fid       {doc['fid']}")
        c.print(f"dns name  {doc['dns_name']}")
        c.print(f"gateway   {doc['gateway_url'] or '(unknown: pass --api or set ORB_API to see it)'}")
        c.print(f"samples   {doc['samples_passed']} passed locally, and at the tracker")
        if doc["waited"]:
            extra = " (and the tracker itself)" if doc["tracker_hosts"] else ""
            c.print(f"replicas  {doc['replicas']} of {doc['wanted_replicas']} verified{extra}")
            for h in doc["hosts"]:
                c.print(f"          {h['node_id'][:16]}  {h['address']['ip']}:{h['address']['port']}"
                        f"  {h['rtt_ms']} ms", markup=False)
        else:
            c.print(f"replicas  {doc['replicas']} of {doc['wanted_replicas']} so far (--no-wait: the tracker "
                    f"places the rest; `orb info {doc['fid']}` shows them)")
        funding = doc.get("funding")
        if funding:
            c.print(f"funded    {funding['deposit_eth']} ETH on escrow {funding['escrow']}, "
                    f"{funding['price_per_request_wei']} wei a request"
                    + (f", {funding['price_per_epoch_wei']} wei an epoch" if funding['price_per_epoch_wei'] != "0"
                       else "")
                    + (f", {funding['price_per_mib_wei']} wei a MiB" if funding['price_per_mib_wei'] != "0" else ""),
                    markup=False)
            c.print(f"          tx {funding['tx']} (gas {funding['gas_used']}); "
                    f"signers {', '.join(funding['signers'])}",
                    markup=False)
        if doc.get("warning"):
            c.print(f"warning   {doc['warning']}", markup=False)

    _ui.emit(args, doc, human)
    return _ui.EXIT_OK


# --- ls and info: the REST API -------------------------------------------------------------------


@defer.inlineCallbacks
def get_json(reactor, api, path, extra_headers=None):
    """GET ``api + path``: (status, parsed JSON). CommandError(6) when the API cannot be reached or is not JSON."""
    from twisted.web.client import Agent, HTTPConnectionPool
    from twisted.web.http_headers import Headers

    url = api + path
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False), connectTimeout=HTTP_TIMEOUT_S)
    headers = Headers({b"Accept": [b"application/json"], b"User-Agent": [b"orb-cli"]})
    for name, value in (extra_headers or {}).items():
        headers.setRawHeaders(name, [value])
    try:
        d = agent.request(b"GET", url.encode("ascii"), headers)
        d.addTimeout(HTTP_TIMEOUT_S, reactor)
        response = yield d
        body = defer.Deferred()
        response.deliverBody(_BoundedBody(body, MAX_HTTP_BODY_BYTES))
        body.addTimeout(HTTP_TIMEOUT_S, reactor)
        body = yield body
    except _TooLong:
        raise CommandError(f"{url} answered more than {MAX_HTTP_BODY_BYTES} bytes: not an API answer",
                           _ui.EXIT_NETWORK, "network") from None
    except defer.TimeoutError:
        raise CommandError(f"the tracker API at {api} did not answer within {HTTP_TIMEOUT_S:g} s", _ui.EXIT_NETWORK,
                           "network") from None
    except Exception as e:  # refused, unreachable, reset, TLS: all "cannot reach"
        reason = getattr(e, "reasons", None)
        why = _why(reason[0].value) if reason else _why(e)
        raise CommandError(f"cannot reach the tracker API at {api}: {why} (--api, $ORB_API)", _ui.EXIT_NETWORK,
                           "network") from None
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CommandError(f"{url} answered HTTP {response.code} with something that is not JSON: is {api} the "
                           "tracker's --http address?", _ui.EXIT_NETWORK, "network") from None
    return response.code, doc


class _TooLong(Exception):
    pass


class _BoundedBody:
    """A response body, read whole unless it passes ``limit`` bytes (then the connection is dropped)."""

    def __init__(self, done, limit):
        self.done, self.limit = done, limit
        self.parts, self.size = [], 0
        self.transport = None

    def makeConnection(self, transport):
        self.transport = transport

    def dataReceived(self, data):
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.done.errback(_TooLong())
            self.transport.stopProducing()
            return
        self.parts.append(data)

    def connectionLost(self, reason):
        if self.done.called:
            return
        from twisted.web.client import PotentialDataLoss, ResponseDone

        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def _api_error(status, doc, url):
    message = doc.get("message") if isinstance(doc, dict) else None
    return CommandError(f"{url} answered HTTP {status}: {_remote_text(message or doc)}", _ui.EXIT_NETWORK, "network")


@attrs.frozen
class LsPlan:
    api: str
    owner: bytes


def prepare_ls(args):
    api = _config.resolve_api(args.api)
    if args.owner:
        try:
            owner = bytes.fromhex(args.owner)
        except ValueError:
            owner = b""
        if len(owner) != 32:
            raise CommandError(f"--owner {args.owner!r} is not an owner's public key: give 64 hex digits "
                               "(`orb keygen` prints yours)", _ui.EXIT_USAGE, "usage")
    else:
        owner = _keys.load_owner_key(args.key or _config.default_key_path()).public_bytes
    return LsPlan(api, owner)


def ls(args):
    plan = prepare_ls(args)
    doc = run_flow(lambda reactor: ls_flow(reactor, plan), {})
    return print_ls(args, doc)


@defer.inlineCallbacks
def ls_flow(reactor, plan):
    path = f"/api/v1/functions?owner={plan.owner.hex()}"
    status, doc = yield get_json(reactor, plan.api, path)
    if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("functions"), list):
        raise _api_error(status, doc, plan.api + path)
    return {"ok": True, "api": plan.api, "owner": plan.owner.hex(), "total": len(doc["functions"]),
            "functions": doc["functions"]}


def columns(c, header, rows):
    """Print rows as aligned columns, never truncated or wrapped (a table a script can cut)."""
    rows = [tuple(_remote_text(v, 200) for v in row) for row in [header, *rows]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        c.print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip(), markup=False, overflow="ignore",
                crop=False)


def print_ls(args, doc):
    def human(c):
        if not doc["functions"]:
            c.print(f"no functions of owner {doc['owner'][:16]}... are known to {doc['api']}", markup=False)
            return
        columns(c, ("NAME", "VERSION", "FID", "REPLICAS", "SIZE", "DEPLOYED"), [
            (f.get("name"), f.get("version"), f.get("fid"), f"{f.get('verified_replicas', 0)}/{f.get('replicas')}",
             f"{f.get('package_size')} B", _utc(f.get("deployed_at")) or "?")
            for f in doc["functions"]])
        c.print(f"{doc['total']} function(s)")

    _ui.emit(args, doc, human)
    return _ui.EXIT_OK


@attrs.frozen
class InfoPlan:
    api: str
    fid: str


def prepare_info(args):
    _ui.fid_argument(args.fid)
    return InfoPlan(_config.resolve_api(args.api), args.fid)


def info(args):
    from . import _names

    if _names.is_name(args.fid):
        return _names.info_name(args)
    plan = prepare_info(args)
    doc = run_flow(lambda reactor: info_flow(reactor, plan), {})
    add_funding(args, doc)
    return print_info(args, doc)


def add_funding(args, doc):
    """With --eth-rpc or $ORB_ETH_RPC: the fid's funding on the escrow into ``doc``; a failed read is a warning."""
    import os

    if not (args.eth_rpc or os.environ.get("ORB_ETH_RPC")):
        return
    import argparse

    from . import _wallet

    chain_args = argparse.Namespace(eth_rpc=args.eth_rpc, escrow=args.escrow, timeout=5.0)
    try:
        raw_fid = _fid.from_text(args.fid)
        doc["funding"] = _wallet._guarded(lambda a: _wallet.funding_of(a, raw_fid))(chain_args) or {"funded": False}
    except Exception as e:  # the chain's trouble never fails `info`
        doc["funding_warning"] = f"the funding could not be read from the chain: {_remote_text(str(e), 200)}"


@defer.inlineCallbacks
def info_flow(reactor, plan):
    path = f"/api/v1/functions/{plan.fid}"
    status, doc = yield get_json(reactor, plan.api, path)
    if status == 410 and isinstance(doc, dict):
        sunset = (doc.get("deprecation") or {}).get("sunset")
        raise CommandError(f"{plan.fid} is gone: its owner deprecated it and its sunset ({_utc(sunset)}) has passed",
                           _ui.EXIT_GONE, "gone", {"fid": plan.fid, "deprecation": doc.get("deprecation")})
    if status == 404:
        raise CommandError(f"the tracker at {plan.api} knows no function {plan.fid}", _ui.EXIT_NOT_FOUND,
                           "not_found", {"fid": plan.fid})
    private = status == 200 and isinstance(doc, dict) and doc.get("visibility") == "private"
    if private and "manifest" not in doc:  # the owner sees it all when it proves its key (RFC 10.9)
        from . import _keys
        from ._tokens import proof_headers

        try:
            key = _keys.load_owner_key(_config.default_key_path())
        except _keys.OwnerKeyError:
            key = None
        if key is not None and doc.get("owner") in (None, key.public_bytes.hex()):
            status, full = yield get_json(reactor, plan.api, path,
                                          proof_headers(key, b"GET", path.encode("ascii"), b"", int(reactor.seconds())))
            if status == 200 and isinstance(full, dict) and "manifest" in full:
                doc, private = full, False
    if not private and (status != 200 or not isinstance(doc, dict) or "manifest" not in doc):
        raise _api_error(status, doc, plan.api + path)
    return {**doc, "ok": True, "api": plan.api, "dns_name": f"{plan.fid}.orb",
            "gateway_url": f"{plan.api}/f/{plan.fid}"}


def print_info(args, doc):
    from . import _names

    def human(c):
        if "manifest" not in doc:  # a private function: the tracker shows only its fid (RFC 10.9)
            for label, value in (("fid", doc.get("fid")), ("dns name", doc.get("dns_name")),
                                 ("gateway", doc.get("gateway_url")), ("visibility", "private: only the owner "
                                                                       "sees its manifest"),
                                 *funding_rows(doc)):
                c.print(f"{label:<12}{_remote_text(value, 1100)}", markup=False)
            return
        m = doc.get("manifest") or {}
        rows = [
            ("fid", doc.get("fid")),
            ("dns name", doc.get("dns_name")),
            ("gateway", doc.get("gateway_url")),
            ("name", f"{m.get('name')} {m.get('version')} ({m.get('runtime')}, entry {m.get('entry')})"),
            ("description", m.get("description") or "-"),
            ("owner", doc.get("owner")),
            ("size", f"{doc.get('package_size')} bytes"),
            ("deployed", _utc(doc.get("deployed_at")) or "?"),
            ("limits", f"timeout {m.get('timeout_ms')} ms, memory {m.get('memory_mb')} MiB, {m.get('isolation')}"),
            ("samples", str(len(m.get("samples") or []))),
            ("manager", doc.get("manager") or "-"),
            ("replicas", f"{doc.get('verified_replicas')} of {m.get('replicas')} verified"
                         + (" (and the managing tracker)" if doc.get("tracker_hosts") else "")),
            *_names.deprecation_rows(doc),
        ]
        secrets = doc.get("secrets") or {}
        if secrets.get("has_secrets"):
            waiting = secrets.get("waiting") or []
            rows.append(("secrets", f"sealed to {secrets.get('sealed_hosts')} host(s)"
                         + (f"; {len(waiting)} waiting for a sealed copy (orb secret sync)" if waiting else "")))
        rows += funding_rows(doc)
        for label, value in rows:
            c.print(f"{label:<12}{_remote_text(value, 1100)}", markup=False)
        hosts = doc.get("hosts") or []
        if hosts:
            table = []
            for h in hosts:
                a = h.get("address") or {}
                address = f"[{a['ip']}]:{a['port']}" if ":" in str(a.get("ip", "")) else (
                    f"{a['ip']}:{a['port']}" if a else "-")
                state = ("tracker " if h.get("is_tracker") else "") + (
                    "verified" if h.get("verified") else "live, not yet verified" if h.get("live") else "gone")
                if not h.get("in_placement"):
                    state += ", not placed yet"
                rtt = f"{h['rtt_ms']} ms" if h.get("rtt_ms") is not None else "-"
                table.append((str(h.get("node_id", ""))[:16], address, h.get("network_group") or "-", rtt,
                              _utc(h.get("verified_at")) or "not yet", state))
            columns(c, ("NODE", "ADDRESS", "GROUP", "RTT", "LAST CHECK", "STATE"), table)

    _ui.emit(args, doc, human)
    return _ui.EXIT_OK


def funding_rows(doc):
    """`orb info`'s lines for the escrow: balance, prices, owner (or not funded, or the warning)."""
    funding = doc.get("funding")
    if doc.get("funding_warning"):
        return [("funding", "warning: " + doc["funding_warning"])]
    if not funding:
        return []
    if not funding.get("funded", True):
        return [("funding", "not funded on the escrow (`orb fund FID ...`)")]
    prices = f"{funding['price_per_request_wei']} wei a request"
    if funding["price_per_epoch_wei"] != "0":
        prices += f", {funding['price_per_epoch_wei']} wei an epoch"
    if funding["price_per_mib_wei"] != "0":
        prices += f", {funding['price_per_mib_wei']} wei a MiB"
    rows = [("balance", f"{funding['balance_eth']} ETH on escrow {funding['escrow']} (chain {funding['chain_id']})"),
            ("prices", prices), ("funder", funding["owner"])]
    if funding.get("withdrawable_at"):
        rows.append(("withdrawal", f"requested; possible from {_utc(funding['withdrawable_at'])}"))
    return rows + paid_rows(funding)


#: The most hosts `orb info` lists one a line under "paid"; the rest are counted.
MAX_PAID_HOSTS_SHOWN = 10


def paid_rows(funding):
    """`orb info`'s lines for what the fid has paid: the totals, then one line a host (most paid first)."""
    if funding.get("paid_warning"):
        return [("paid", "warning: " + funding["paid_warning"])]
    paid = funding.get("paid")
    if not paid:
        return []
    if not paid["claims"]:
        return [("paid", f"nothing yet (no claim up to block {paid['to_block']})")]
    hosts = paid["hosts"]
    rows = [("paid", f"{paid['total_eth']} ETH to {len(hosts)} host{'s' if len(hosts) != 1 else ''} for "
                     f"{paid['requests']} request{'s' if paid['requests'] != 1 else ''} "
                     f"({paid['claims']} claim{'s' if paid['claims'] != 1 else ''})"
                     + (f"; only the claims up to block {paid['to_block']} are counted (too many to read)"
                        if paid["truncated"] else ""))]
    for h in hosts[:MAX_PAID_HOSTS_SHOWN]:
        rows.append(("", f"{h['host']}  {h['amount_eth']} ETH for {h['requests']} requests, {h['claims']} "
                         f"claim{'s' if h['claims'] != 1 else ''}, last in block {h['last_claim_block']}"))
    if len(hosts) > MAX_PAID_HOSTS_SHOWN:
        rows.append(("", f"and {len(hosts) - MAX_PAID_HOSTS_SHOWN} more hosts (--json lists them all)"))
    if paid.get("underpaid_claims"):
        rows.append(("underpaid", f"{paid['underpaid_wei']} wei owed beyond the deposit in {paid['underpaid_claims']} "
                                  "claim(s): the deposit ran out before the work was paid"))
    return rows
