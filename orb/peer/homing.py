# -*- test-case-name: tests.test_peer_core -*-
"""
Homing: a peer ANNOUNCEs itself to one tracker, its primary, every
ANNOUNCE_INTERVAL_S: a statement of its addresses, functions and load,
naming that tracker its home, signed by its node key (RFC 8.6.1). It
enters that tracker's registry with its first ANNOUNCE, and trackers judge
it alive from the age of its latest statement. When the primary's session
is lost the peer announces to another tracker session at once, which
becomes its home.
"""

from orb.net.logs import orb_logger
from orb.protocol import federation as fed
from orb.protocol import fid as fidmod
from orb.protocol import messages as m

log = orb_logger()

ANNOUNCE_INTERVAL_S = 30.0


class Homing:
    def __init__(self, table, clock):
        self.table = table
        self.clock = clock
        self.seq = 0  # the last statement's seq: it follows the clock in microseconds, so survives restarts
        self.primary = None  # the SessionRecord of the tracker we announce to
        self.functions = {}  # fid bytes -> version (filled by the hosting issue)
        self.load_permille = 0
        self.extra_tlvs = lambda: ()  # TLVs for each ANNOUNCE (a sealing node's SEALER proof, RFC 9.12)

    def session_ready(self, record):
        if record.is_tracker and not record.inbound and self.primary is None:
            self.set_primary(record)

    def session_lost(self, record):
        if record is not self.primary:
            return
        self.primary = None
        trackers = self.table.outbound(trackers=True)
        if trackers:
            self.set_primary(trackers[0])
        log.info("primary tracker lost; re-homing to {peer}",
                 peer=self.primary.name if self.primary else "nobody yet")

    def set_primary(self, record):
        self.primary = record
        self.announce()

    def announce(self):
        if self.primary is None or not self.primary.ready:
            return
        self.primary.send(self.statement(self.primary.node_id))

    def statement(self, home):
        """This peer's signed ANNOUNCE for the tracker ``home``."""
        local = self.table.local
        now = self.clock.seconds()
        self.seq = max(self.seq + 1, int(now * 1_000_000))
        listen = [local.advertise] if local.advertise else []
        functions = {fidmod.to_text(f): v for f, v in self.functions.items()}
        statement = fed.make_peer_statement(local.key, self.seq, int(now), home, listen,
                                            min(self.load_permille, m.MAX_LOAD_PERMILLE), functions, int(local.roles))
        return m.Announce(
            seq=statement.seq,
            time=statement.time,
            load_permille=statement.load_permille,
            roles=statement.roles,
            listen=tuple(m.Endpoint(host, port) for host, port in statement.addresses),
            functions=tuple(m.FunctionEntry(f, v) for f, v in sorted(self.functions.items())),
            signature=statement.sig,
            ext=tuple(self.extra_tlvs()),
        )
