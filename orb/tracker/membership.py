# -*- test-case-name: tests.test_tracker_core -*-
"""
The tracker's peers: who is registered here, whether they are alive, and
whether they can be reached.

- A peer enters the registry with its first ANNOUNCE: its own statement,
  signed by its node key and naming this tracker its home (RFC 8.6.1). The
  tracker adds its signed observation beside it (reachability, RTT,
  session up); later ANNOUNCEs replace the statement.
- Liveness: every PING_INTERVAL_S each session is PINGed; the PONG's RTT
  goes into the observation of peers homed here. A peer whose latest
  statement is older than the registry's TTL is stale; a home peer whose
  session drops is observed disconnected after DEPARTED_GRACE_S unless it
  is back.
- Reachability: on each new peer session the tracker dials back the
  address the peer advertises (a DIALBACK session that is never served).
  If it answers, the peer is ``reachable``; otherwise ``relayed``.
  Dial-backs are rate-limited per source IP (loopback, where every test
  node lives, only by the global limit) and globally; a session over the
  rate is not dialled back and its reachability stays ``unknown``.
"""

from orb.net.limits import TokenBuckets
from orb.net.logs import orb_logger
from orb.net.sessions import Purpose, Reachability, is_loopback, violation
from orb.protocol import fid
from orb.protocol.codes import ErrorCode, Role
from orb.protocol.messages import MessageType
from orb.tracker import registry as reg

log = orb_logger()

PING_INTERVAL_S = 10.0
EXPIRE_INTERVAL_S = 5.0
DEPARTED_GRACE_S = 1.0  # a home peer whose session dropped is observed disconnected after this, unless it is back
MAX_REACHABILITY_CACHE = 10_000
# Every HELLO that lists a listen address asks for a dial-back: bound how
# often one source address, and everyone together, can make us dial out.
DIALBACKS_PER_IP_PER_S = 0.1
DIALBACKS_PER_IP_BURST = 3
DIALBACKS_PER_S = 20.0
DIALBACKS_BURST = 50


class Membership:
    def __init__(self, clock, local, table, registry, stats, is_tracker):
        self.is_tracker = is_tracker  # (record) -> bool: an admitted tracker; anyone else is served as a peer
        self.clock = clock
        self.local = local
        self.table = table
        self.registry = registry
        self.stats = stats
        self.reachability = {}  # peer id -> Reachability, from our own dial-back
        self._dialbacks_per_ip = TokenBuckets(clock, DIALBACKS_PER_IP_PER_S, DIALBACKS_PER_IP_BURST)
        self._dialbacks = TokenBuckets(clock, DIALBACKS_PER_S, DIALBACKS_BURST, max_keys=1)

    def handlers(self):
        return {MessageType.ANNOUNCE: self.on_announce}

    # --- sessions ---------------------------------------------------------------------

    def session_ready(self, record):
        if self.is_tracker(record):
            return
        self.registry.touch(record.node_id)
        record.protocol.ping()  # a first RTT for the registry
        if record.remote.roles & int(Role.PEER):
            self.dial_back(record)  # a client (orb deploy: no roles) hosts nothing and is not dialled back

    def session_lost(self, record):
        if not self.is_tracker(record) and not self.table.stopping:
            # Do not wait for the TTL: a departed peer would be routed to for 90 s.
            self.clock.callLater(DEPARTED_GRACE_S, self._check_departed, record.node_id)

    def _check_departed(self, node_id):
        if self.table.stopping or node_id in self.table:
            return
        self.registry.observe_peer(node_id, connected=False)

    # --- ANNOUNCE ---------------------------------------------------------------------

    def on_announce(self, record, message, request_id):
        if self.is_tracker(record):
            return  # trackers host nothing; their record comes from federation
        try:
            functions = {fid.to_text(e.fid): e.version for e in message.functions}
        except fid.FidError:
            self.table.misbehaved(record.protocol, violation("ANNOUNCE with an invalid fid"))
            return
        try:
            statement = reg.PeerStatement(
                node_id=record.node_id,
                key=record.remote.public_key,
                seq=message.seq,
                time=message.time,
                home=self.local.node_id,
                addresses=reg.canonical_addresses([(e.host, e.port) for e in message.listen], "listen"),
                load_permille=message.load_permille,
                functions=functions,
                roles=message.roles,
                sig=message.signature,
            )
            self.registry.announce_peer(
                statement,
                reachability=self.reachability.get(record.node_id, Reachability.UNKNOWN).value,
                rtt_ms=record.rtt_ms,
            )
        except reg.BadSignature as e:
            record.refuse(request_id, ErrorCode.DENIED, f"not registered: {e}")
            self.table.misbehaved(record.protocol, violation(f"ANNOUNCE not validly signed: {e}", ErrorCode.DENIED,
                                                             fatal=False))
        except reg.RegistryChangeError as e:
            record.refuse(request_id, ErrorCode.MALFORMED, f"not registered: {e}")
            self.table.misbehaved(record.protocol, violation(f"ANNOUNCE not registrable: {e}", fatal=False))
        except reg.RegistryFull:
            record.refuse(request_id, ErrorCode.BUSY, "the registry is full")

    # --- liveness ---------------------------------------------------------------------

    def ping_all(self):
        for record in self.table.records():
            try:
                if not self.is_tracker(record):
                    self.registry.touch(record.node_id)
                record.protocol.ping()
            except Exception:  # one stuck session never stops the loop for the others
                log.failure("pinging {peer}", peer=record.name)

    def rtt_measured(self, record, rtt_ms):
        if self.is_tracker(record):
            return
        self.stats.observe_rtt_ms(rtt_ms)
        self.registry.touch(record.node_id)
        peer = self.registry.peer(record.node_id)
        if peer is not None and peer.home == self.local.node_id:
            self.registry.record_rtt(record.node_id, rtt_ms)

    def expire(self):
        for key in self.registry.expire():
            log.info("{key} is stale: its latest signed statement is too old", key=key[:24])

    # --- reachability -----------------------------------------------------------------

    def dial_back(self, record):
        """Find out whether the peer accepts connections at the address it advertises."""
        node_id = record.node_id
        if not record.remote.listen:
            self._set_reachability(node_id, Reachability.RELAYED)
            return
        target = record.remote.listen[0]
        per_ip_ok = is_loopback(record.ip or "") or self._dialbacks_per_ip.allow(record.ip)  # loopback: one host
        if not per_ip_ok or not self._dialbacks.allow("all"):
            if self.table.log_limit.allow(record.ip):
                log.info("not dialling {peer} back now: dial-back rate exceeded", peer=record.name)
            return
        d = self.table.dial(target.host, target.port, expected_node_id=node_id, purpose=Purpose.DIALBACK)

        def reached(dialback):
            dialback.close("dial-back done")
            self._set_reachability(node_id, Reachability.REACHABLE)

        def unreachable(failure):
            log.info("peer {peer} is not reachable at {host}:{port}; it will be relayed",
                     peer=node_id.hex()[:16], host=target.host, port=target.port)
            self._set_reachability(node_id, Reachability.RELAYED)

        d.addCallbacks(reached, unreachable)

    def _set_reachability(self, node_id, state):
        self.reachability.pop(node_id, None)
        if len(self.reachability) >= MAX_REACHABILITY_CACHE:
            self.reachability.pop(next(iter(self.reachability)))
        self.reachability[node_id] = state
        self.registry.observe_peer(node_id, reachability=state.value)
