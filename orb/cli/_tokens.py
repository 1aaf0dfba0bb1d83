# -*- test-case-name: tests.test_tokens_cli -*-
"""
Capability tokens (RFC 9.11): a private function needs one; on any function a token makes its
holder a caller the owner pays hosts for (RFC 10.10).

    orb grant FID-OR-NAME (--to KEY | --bearer) [--expires 1h|ISO|UNIX] [--delegable] [--key PATH]
    orb grant --from TOKEN (--to KEY | --bearer) [--expires ...] [--delegable] [--key PATH]
    orb revoke TOKEN-ID|TOKEN [--expires ...] [--key PATH] [--tracker ...]

``grant`` signs with the owner key (``$ORB_HOME/owner.key``, ``--key``) and
prints the token's text (``--json``: its id, scope, holder and expiry).
With ``--from`` it delegates: the new link is signed by the parent's
holder key, this node's key by default (``$ORB_HOME/private/node.key``,
the key ``orb invoke --wire`` calls with), or ``--key``; a link that would
widen its parent (a later expiry, another scope) is refused here, as every
checker would refuse it. KEY for ``--to`` is 64 hex digits, or a PEM key
file (its public key). FID-OR-NAME is a fid, or a name of the owner's
(``adder``, or ``adder.<owner label>``).

``revoke`` publishes a signed REVOKE to the tracker and reports its
STATEMENT_ACK. Given a whole token it revokes the token's last link until
the token's own expiry; given a token id (32 hex digits) until
``--expires`` (default: MAX_EXPIRES_S from now, the longest ``grant`` gives).
"""

import datetime
import json
import re
import time

import attrs
from twisted.internet import defer

from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import token as tokenmod
from orb.protocol.codes import ErrorCode

from . import _config, _keys, _network, _ui
from ._function import _guarded
from ._ui import CommandError

DEFAULT_EXPIRES_S = 24 * 3600
MAX_EXPIRES_S = 365 * 24 * 3600
REQUEST_TIMEOUT_S = 30.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def register(sub):
    def verb(name, help_text, func, description):
        p = sub.add_parser(name, help=help_text, description=description)
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        p.set_defaults(func=_guarded(func))
        return p

    p = verb("grant", "issue a capability token for a function (private ones need one; any holder is paid for)", grant,
             "Issue a capability token for FID-OR-NAME, signed by the owner key, bound to --to KEY (or --bearer: "
             "whoever holds it), valid until --expires (default 24h, at most 365d). With --from TOKEN, delegate "
             "under a delegable token you hold: narrower and no longer-lived.")
    p.add_argument("scope", metavar="FID-OR-NAME", nargs="?", help="a fid, or a name of the owner's")
    holder = p.add_mutually_exclusive_group(required=True)
    holder.add_argument("--to", metavar="KEY", help="bind the token to KEY: 64 hex digits or a PEM key file")
    holder.add_argument("--bearer", action="store_true", help="a bearer token: whoever presents it may call")
    p.add_argument("--expires", metavar="WHEN", help="1h, 30m, 7d, an ISO 8601 time, or Unix seconds "
                                                     "(default: 24h; with --from: the parent's expiry)")
    p.add_argument("--delegable", action="store_true", help="the holder may issue narrower tokens under this one")
    p.add_argument("--from", dest="parent", metavar="TOKEN|@FILE", help="delegate under this token")
    p.add_argument("--key", metavar="PATH", help="the signing key (default: $ORB_HOME/owner.key; with --from: "
                                                 "this node's key, $ORB_HOME/private/node.key)")

    p = verb("revoke", "revoke a capability token everywhere", revoke,
             "Publish a signed revocation of TOKEN (or of the token id TOKEN-ID) to the tracker; it federates to "
             "every tracker and reaches the hosts. Sign with the owner key, or the key that issued the link.")
    p.add_argument("token", metavar="TOKEN-ID|TOKEN|@FILE")
    p.add_argument("--expires", metavar="WHEN", help="for a bare token id: how long to keep the revocation "
                                                     "(default: 365d, the longest grant)")
    p.add_argument("--key", metavar="PATH", help="the signing key (default: $ORB_HOME/owner.key)")
    p.add_argument("--tracker", metavar="[NODEID@]HOST:PORT", help="the tracker (default: $ORB_TRACKER, config.toml)")
    p.add_argument("--network", metavar="NAME", help="the network's name (default: $ORB_NETWORK, config.toml, main)")


# --- arguments --------------------------------------------------------------------------------------


def parse_expires(text, now):
    """Unix seconds from ``1h``/``30m``/``7d``, an ISO 8601 time, or Unix seconds; CommandError otherwise."""
    text = text.strip()
    match = re.fullmatch(r"(\d{1,7})([smhdw])", text)
    if match:
        return int(now) + int(match.group(1)) * _UNITS[match.group(2)]
    if re.fullmatch(r"\d{9,12}", text):
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"--expires {text!r}: give 1h, 30m, 7d, an ISO 8601 time or Unix seconds",
                           _ui.EXIT_USAGE, "usage") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp())


def parse_key(text):
    """A 32-byte public key: 64 hex digits, or the public key of a PEM key file."""
    if re.fullmatch(r"[0-9a-fA-F]{64}", text.strip()):
        return bytes.fromhex(text.strip())
    try:
        with open(text, "rb") as f:
            raw = f.read(64 * 1024)
    except OSError as e:
        raise CommandError(f"--to {text}: not 64 hex digits, and not a readable key file ({e.strerror})",
                           _ui.EXIT_INPUT, "input") from None
    if re.fullmatch(rb"\s*[0-9a-fA-F]{64}\s*", raw):
        return bytes.fromhex(raw.decode().strip())
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError):
        try:
            key = serialization.load_pem_public_key(raw)
        except (ValueError, TypeError):
            raise CommandError(f"--to {text}: not a PEM Ed25519 key", _ui.EXIT_INPUT, "input") from None
    if hasattr(key, "public_key"):
        key = key.public_key()
    try:
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    except ValueError:
        raise CommandError(f"--to {text}: not an Ed25519 key", _ui.EXIT_INPUT, "input") from None


def read_token(text):
    """A Token from its text, or from @FILE holding it."""
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="ascii") as f:
                text = f.read(tokenmod.MAX_TOKEN_TEXT + 64)
        except (OSError, UnicodeDecodeError) as e:
            raise CommandError(f"cannot read the token file {text[1:]}: {getattr(e, 'strerror', e)}",
                               _ui.EXIT_INPUT, "input") from None
    try:
        return tokenmod.decode(tokenmod.from_text(text))
    except tokenmod.TokenError as e:
        raise CommandError(f"not a capability token: {e.text}", _ui.EXIT_INPUT, "input") from None


def proof_headers(key, method, target, body, now):
    """``Orb-Key``, ``Orb-Date`` and ``Orb-Signature``: proof to a gateway that the caller holds ``key`` (RFC 10.9)."""
    import base64

    from orb.tracker.gateway import proof_bytes

    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    return {b"Orb-Key": b64(key.public_bytes), b"Orb-Date": str(now).encode("ascii"),
            b"Orb-Signature": b64(key.sign(proof_bytes(now, body, method, target)))}


def node_key():
    from orb.identity import IdentityError, NodeKey

    try:
        return NodeKey.load_or_create(_config.orb_home())
    except (IdentityError, OSError) as e:
        raise CommandError(f"cannot use this node's key in {_config.orb_home()}: {e}", _ui.EXIT_INPUT,
                           "input") from None


def _scope(text, owner_key):
    text = text.strip()
    try:
        return tokenmod.SCOPE_FID, fidmod.from_text(text)
    except fidmod.FidError:
        pass
    try:
        if "." in text:
            return tokenmod.SCOPE_NAME, tokenmod.check_name_scope(text).encode("ascii")
        return tokenmod.SCOPE_NAME, tokenmod.name_scope(text, owner_key)
    except ValueError as e:
        raise CommandError(f"{text!r} is neither a fid nor a name: {e}", _ui.EXIT_USAGE, "usage") from None


# --- grant --------------------------------------------------------------------------------------------


def grant(args, now=None):
    now = int(time.time() if now is None else now)
    holder = None if args.bearer else parse_key(args.to)
    if args.parent:
        parent = read_token(args.parent)
        signer = _keys.load_owner_key(args.key) if args.key else node_key()
        if parent.last.holder != signer.public_bytes:
            raise CommandError("you cannot delegate this token: it is bound to "
                               f"{parent.last.holder.hex() if parent.last.holder else 'its bearer'}, and your key "
                               f"is {signer.public_bytes.hex()} (--key)", _ui.EXIT_REFUSED, "widened")
        if args.scope:
            kind, scope = _scope(args.scope, parent.root_issuer)
        else:
            kind, scope = parent.last.scope_kind, parent.last.scope
        not_after = parse_expires(args.expires, now) if args.expires else parent.last.not_after
        try:
            token = tokenmod.delegate(parent, signer, kind, scope, holder, not_after, args.delegable)
        except tokenmod.TokenError as e:
            raise CommandError(f"refused: this delegation would widen its parent: {e.text}", _ui.EXIT_REFUSED,
                               "widened") from None
    else:
        if not args.scope:
            raise CommandError("say what the token is for: orb grant FID-OR-NAME --to KEY", _ui.EXIT_USAGE, "usage")
        signer = _keys.load_owner_key(args.key or _config.default_key_path())
        kind, scope = _scope(args.scope, signer.public_bytes)
        not_after = parse_expires(args.expires, now) if args.expires else now + DEFAULT_EXPIRES_S
        if not_after > now + MAX_EXPIRES_S:
            raise CommandError("--expires: a token lives at most 365 days", _ui.EXIT_USAGE, "usage")
        token = tokenmod.issue(signer, signer.public_bytes, kind, scope, holder, not_after, args.delegable)
    if not_after <= now:
        raise CommandError("--expires is in the past", _ui.EXIT_USAGE, "usage")
    doc = {"ok": True, "token": token.text(), **tokenmod.describe(token)}
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(token.text())
    return _ui.EXIT_OK


# --- revoke -------------------------------------------------------------------------------------------


def revoke(args, now=None):
    now = int(time.time() if now is None else now)
    key = _keys.load_owner_key(args.key or _config.default_key_path())
    text = args.token.strip()
    if re.fullmatch(r"[0-9a-fA-F]{32}", text):
        token_id = bytes.fromhex(text)
        not_after = parse_expires(args.expires, now) if args.expires else now + MAX_EXPIRES_S
    else:
        token = read_token(text)
        token_id, not_after = token.id, min(link.not_after for link in token.links)
        if key.public_bytes not in (token.root_issuer, token.issuers()[-1]):
            raise CommandError(f"your key {key.public_bytes.hex()} neither owns the function nor issued this "
                               "token's last link: its revocation would apply to nothing (--key)",
                               _ui.EXIT_REFUSED, "denied")
    if not_after <= now:
        raise CommandError("the token has expired already: nothing to revoke", _ui.EXIT_USAGE, "usage")
    message = m.Revoke(issuer_key=key.public_bytes, token_id=token_id, not_after=not_after, signature=bytes(64))
    message = attrs.evolve(message, signature=key.sign(message.signed_bytes()))
    tracker = _config.resolve_tracker(args.tracker)
    network = _config.resolve_network(args.network)
    ack = _network.run_flow(lambda reactor: send_statement(reactor, tracker, network, message), {})
    if ack.status:
        try:
            kind = ErrorCode(ack.status).name.lower()
        except ValueError:
            kind = "unspecified"
        raise CommandError(f"the tracker refused the revocation [{kind}]: {_network._remote_text(ack.text)}",
                           _ui.EXIT_REFUSED, kind)
    doc = {"ok": True, "token_id": token_id.hex(), "issuer": key.public_bytes.hex(), "not_after": not_after,
           "tracker": str(tracker), "answer": ack.text}
    _ui.emit(args, doc, lambda c: c.print(f"revoked {token_id.hex()} (the tracker said: "
                                           f"{_network._remote_text(ack.text)})", markup=False))
    return _ui.EXIT_OK


@defer.inlineCallbacks
def send_statement(reactor, tracker, network, message):
    """Send an owner statement (REVOKE) to ``tracker``: its StatementAck."""
    from orb.net.adapter import RemoteError, RequestTimeout

    client = _network.SessionClient()
    p = yield _network.connect(reactor, tracker, network, client)
    try:
        ack = yield p.request(message, timeout_s=REQUEST_TIMEOUT_S)
    except RequestTimeout:
        raise CommandError(f"the tracker did not answer within {REQUEST_TIMEOUT_S:g} s", _ui.EXIT_NETWORK,
                           "timeout") from None
    except RemoteError as e:
        raise CommandError(f"the tracker refused the revocation: {_network._remote_text(e.text)}",
                           _ui.EXIT_REFUSED, "refused") from None
    finally:
        yield _network.close_session(reactor, p, client)
    return ack

