# -*- test-case-name: tests.test_secrets_tracker -*-
"""
Function secrets at a tracker (RFC 5.31, 9.12): store, federate, forward.

An owner sends SECRET (its function's secrets sealed to one host, signed).
The tracker checks the signature against the owner of the function's
registry record, keeps the record (kind ``secret``, replicated to the
other trackers like any record) and forwards it, as a SECRET request, to
the host it is sealed to: at once when the host has a session here and
its own statement lists the fid, and again whenever that becomes true
(the host comes back, or is placed and announces the fid). A tracker never
holds a key that opens one.

An owner's own copy (sealed to its owner key, RFC 9.12) is kept the same
way and shown to anyone as sealed bytes; only the owner key opens it.

A peer whose ANNOUNCE carries a SEALER TLV (an owner key's signature of
its node id) is that owner's *sealing node*: for each host waiting for the
secrets of one of the owner's functions that has an owner copy, the
tracker sends it SEAL, and it answers with SECRET (at most one SEAL per
(fid, host) a minute).

``status(fid)`` says, for a function with secrets, which hosts hold a
sealed copy and which are *waiting* for one: hosts placed for it, or
announcing it, that the owner has not sealed to yet (the owner runs
``orb secret sync``).
"""

from orb.net.logs import orb_logger
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import secrets as secretsmod
from orb.protocol.codes import ErrorCode, TlvType
from orb.protocol.federation import RegistryChangeError, SecretRecord
from orb.protocol.messages import MessageType
from orb.tracker.registry import RegistryFull

log = orb_logger()

PUSH_TIMEOUT_S = 30.0
MAX_SECRETS_PER_FUNCTION = 66  # a placement's 64 hosts, the owner copy, and one being replaced
MAX_DELIVERED = 8192
MAX_SEALERS = 1024  # owners with a sealing node connected here
SEAL_TICK_S = 2.0
SEAL_RETRY_S = 60.0  # one SEAL per (fid, host) a minute at most
MAX_SEALS_PER_TICK = 16  # (record id -> seq) the hosts connected here acknowledged; more than MAX_SECRET_RECORDS


class Secrets:
    """The SECRET handler and the forwarding of sealed secrets to their hosts."""

    def __init__(self, clock, table, registry):
        self.clock = clock
        self.table = table
        self.registry = registry
        self._delivered = {}  # record ident -> seq the host acknowledged over its session here
        self._pushing = set()  # record idents with a SECRET in flight
        self._sealers = {}  # owner key -> node id of a peer here whose ANNOUNCE proves it seals for that owner
        self._asked = {}  # (fid, host) -> when a SEAL for it was last sent
        registry.watch(self._changed)

    def handlers(self):
        return {MessageType.SECRET: self.on_secret}

    # --- from the owner -----------------------------------------------------------------

    def on_secret(self, record, message, request_id):
        def ack(status, seq, text):
            record.send(m.StatementAck(status=int(status), seq=seq, text=text[:200]), response_to=request_id)

        try:
            fid = fidmod.to_text(message.fid)
        except fidmod.FidError:
            ack(ErrorCode.INVALID, 0, "not a fid")
            return
        function = self.registry.function(fid)
        if function is None:
            ack(ErrorCode.NOT_FOUND, 0, f"no function {fid[:20]}... is deployed")
            return
        held = self.registry.stored("secret", f"{fid}.{message.host.hex()}")
        held_seq = held.seq if held is not None else 0
        if message.owner_key != function.owner:
            ack(ErrorCode.DENIED, held_seq, "only the function's owner may attach secrets to it")
            return
        if not secretsmod.verify(message.owner_key, message.signature, message.fid, message.host, message.seq,
                                 message.sealed):
            ack(ErrorCode.DENIED, held_seq, "not the owner's signature of these sealed secrets (RFC 9.12)")
            return
        if held is None:
            problem = self._room_for(function, message.host)
            if problem is not None:
                ack(*problem)
                return
        new = SecretRecord(fid, message.host, message.owner_key, message.seq, message.sealed, message.signature)
        if held is not None and held.seq >= new.seq:
            if held == new:
                ack(0, held_seq, "held already")
            else:
                ack(ErrorCode.STALE, held_seq, f"seq {new.seq} is not above the {held_seq} held")
            return
        try:
            self.registry.accept(new)
        except RegistryFull:
            ack(ErrorCode.BUSY, held_seq, "this tracker holds all the sealed secrets it can")
            return
        except RegistryChangeError as e:
            ack(ErrorCode.INVALID, held_seq, f"not recorded: {e}")
            return
        log.info("sealed secrets for {fid} on {host} (seq {seq}) recorded", fid=fid[:16],
                 host=message.host.hex()[:16], seq=new.seq)
        ack(0, new.seq, "recorded")

    def _room_for(self, function, host):
        """None if a first secret of ``function`` for ``host`` may be recorded, else (code, seq, text): the host
        must be placed for it, host it or be the owner's own copy, and a function has at most
        MAX_SECRETS_PER_FUNCTION, so that no owner fills the table with secrets for hosts that never run it."""
        fid = function.fid
        placement = self.registry.placement(fid)
        placed = {n for n, _ in placement.hosts} if placement is not None else set()
        peer = self.registry.peer(host)
        if (host != secretsmod.owner_copy_host(function.owner) and host not in placed
                and (peer is None or fid not in peer.function_map)):
            return ErrorCode.NOT_FOUND, 0, "that node neither hosts nor is placed for this function"
        if sum(1 for r in self.registry.records("secret") if r.fid == fid) >= MAX_SECRETS_PER_FUNCTION:
            return ErrorCode.TOO_LARGE, 0, f"a function has sealed secrets for at most {MAX_SECRETS_PER_FUNCTION} hosts"
        return None

    # --- to the hosts -------------------------------------------------------------------

    def _changed(self, change):
        if change.kind == "secret":
            self.push(change.record)
        elif change.kind == "peer":
            node = change.record.node_id
            for fid in list(change.record.function_map)[:1024]:
                held = self.registry.stored("secret", f"{fid}.{node.hex()}")
                if held is not None:
                    self.push(held)

    def session_ready(self, record):
        """A host (re)joined: forward what it was sealed, for the fids it lists."""
        peer = self.registry.peer(record.node_id)
        if peer is None:
            return
        for fid in list(peer.function_map)[:1024]:
            held = self.registry.stored("secret", f"{fid}.{record.node_id.hex()}")
            if held is not None:
                self.push(held)

    def session_lost(self, record):
        for owner in [o for o, n in self._sealers.items() if n == record.node_id]:
            del self._sealers[owner]
        prefix_end = "." + record.node_id.hex()
        for ident in [i for i in self._delivered if i.endswith(prefix_end)]:
            del self._delivered[ident]

    def push(self, secret):
        """Forward ``secret`` to its host if it has a session here and lists the fid; once per seq."""
        ident = secret.ident
        if ident in self._pushing or self._delivered.get(ident, 0) >= secret.seq:
            return
        function = self.registry.function(secret.fid)
        if function is None or function.owner != secret.owner:
            return  # a record a federated tracker took from someone else: never forwarded
        session = self.table.get(secret.host)
        peer = self.registry.peer(secret.host)
        if session is None or not session.ready or peer is None or secret.fid not in peer.function_map:
            return
        self._pushing.add(ident)
        d = session.request(m.Secret(owner_key=secret.owner, fid=fidmod.from_text(secret.fid), host=secret.host,
                                     seq=secret.seq, sealed=secret.sealed, signature=secret.sig),
                            timeout_s=PUSH_TIMEOUT_S)

        def answered(ack):
            self._pushing.discard(ident)
            if ack.status == 0 or (ack.status == ErrorCode.STALE and ack.seq >= secret.seq):
                self._delivered.pop(ident, None)
                while len(self._delivered) >= MAX_DELIVERED:
                    self._delivered.pop(next(iter(self._delivered)))
                self._delivered[ident] = secret.seq
            else:
                log.info("{host} refused the sealed secrets of {fid}: {text}", host=secret.host.hex()[:16],
                         fid=secret.fid[:16], text=ack.text[:200])

        def failed(failure):
            self._pushing.discard(ident)
            log.info("sealed secrets of {fid} not delivered to {host}: {why}", fid=secret.fid[:16],
                     host=secret.host.hex()[:16], why=failure.getErrorMessage()[:200])

        d.addCallbacks(answered, failed)

    # --- sealing nodes (SEAL) -------------------------------------------------------------

    def announce_seen(self, record, message):
        """An ANNOUNCE arrived: a valid SEALER TLV makes its sender a sealer for that owner here."""
        for tlv in message.ext:
            if tlv.type == TlvType.SEALER:
                owner = secretsmod.check_sealer_proof(tlv.value, record.node_id)
                if owner is None:
                    log.info("{peer} sent a SEALER proof that does not verify", peer=record.name)
                    return
                if self._sealers.get(owner) != record.node_id:
                    self._sealers.pop(owner, None)
                    while len(self._sealers) >= MAX_SEALERS:
                        self._sealers.pop(next(iter(self._sealers)))
                    self._sealers[owner] = record.node_id
                    log.info("{peer} seals for owner {owner}", peer=record.name, owner=owner.hex()[:16])
                return

    def ask_sealers(self):
        """Every SEAL_TICK_S: ask each sealer here to seal to the hosts waiting for its owner's secrets."""
        now = self.clock.seconds()
        for key in [k for k, at in self._asked.items() if now - at > SEAL_RETRY_S]:
            del self._asked[key]
        if not self._sealers:
            return
        # One pass over the secrets: the functions whose owner copy is held and whose owner has a sealer here.
        copies = {r.fid for r in self.registry.records("secret")
                  if r.owner in self._sealers and r.host == secretsmod.owner_copy_host(r.owner)}
        budget = MAX_SEALS_PER_TICK
        for fid in sorted(copies):
            function = self.registry.function(fid)
            session = self.table.get(self._sealers.get(function.owner, b"")) if function is not None else None
            if session is None or not session.ready or budget <= 0:
                continue
            status = secret_status(self.registry, fid)
            own = status["owner_copy"]
            if own is None:
                continue
            for host in status["hosts"]:
                key = (fid, host["node_id"])
                if not host["waiting"] or not host["key"] or key in self._asked or budget <= 0:
                    continue
                self._asked[key] = now
                budget -= 1
                self._seal(session, function, host, bytes.fromhex(own["sealed"]))

    def _seal(self, session, function, host, owner_copy):
        d = session.request(m.Seal(fid=fidmod.from_text(function.fid), host=bytes.fromhex(host["node_id"]),
                                   host_key=bytes.fromhex(host["key"]), owner_copy=owner_copy),
                            timeout_s=PUSH_TIMEOUT_S)

        def answered(ack):
            log.info("{peer} sealed {fid} to {host}: status {status}", peer=session.name, fid=function.fid[:16],
                     host=host["node_id"][:16], status=ack.status)

        def failed(failure):
            log.info("{peer} did not seal {fid} to {host}: {why}", peer=session.name, fid=function.fid[:16],
                     host=host["node_id"][:16], why=failure.getErrorMessage()[:200])

        d.addCallbacks(answered, failed)

    # --- what the owner sees ------------------------------------------------------------

    def status(self, fid):
        return secret_status(self.registry, fid)


def secret_status(registry, fid):
    """For ``fid``: every host that is placed for it, announces it or was sealed to, with its Ed25519 key
    (what ``orb secret`` seals to), whether it holds a sealed copy (``sealed``, ``seq``), and ``waiting``:
    the function has secrets and this host has none. Never a secret: only which hosts have sealed bytes."""
    from orb.protocol.secrets import owner_copy_host

    function = registry.function(fid)
    sealed = {r.host: r for r in registry.records("secret") if r.fid == fid and function is not None
              and r.owner == function.owner}
    own = sealed.pop(owner_copy_host(function.owner), None) if function is not None else None
    placement = registry.placement(fid)
    hosts = dict.fromkeys(n for n, _ in (placement.hosts if placement is not None else ()))
    hosts.update(dict.fromkeys(p.node_id for p in registry.peers() if fid in p.function_map))
    hosts.update(dict.fromkeys(sealed))
    out = []
    for node in hosts:
        peer = registry.peer(node)
        is_tracker = peer is None and registry.tracker(node) is not None
        record = sealed.get(node)
        out.append({
            "node_id": node.hex(),
            "key": peer.statement.key.hex() if peer is not None else None,
            "is_tracker": is_tracker,
            "hosting": peer is not None and fid in peer.function_map,
            "sealed": record is not None,
            "seq": str(record.seq) if record is not None else None,
            # A tracker hosting a function itself never gets its secrets: it is not waiting for them.
            "waiting": (bool(sealed) or own is not None) and record is None and not is_tracker,
        })
    return {"fid": fid, "owner": function.owner.hex() if function is not None else None,
            "has_secrets": bool(sealed) or own is not None, "hosts": out,
            # The owner's own copy (sealed to the owner key): only the owner can open it, to reseal.
            "owner_copy": None if own is None else {"seq": str(own.seq), "sealed": own.sealed.hex()},
            "waiting": [h["node_id"] for h in out if h["waiting"]]}


def secret_summary(registry, fid):
    """What ``orb info`` shows of a function's secrets: counts and the waiting hosts, never a secret."""
    status = secret_status(registry, fid)
    return {"has_secrets": status["has_secrets"], "sealed_hosts": sum(h["sealed"] for h in status["hosts"]),
            "waiting": status["waiting"], "owner_copy": status["owner_copy"] is not None}
