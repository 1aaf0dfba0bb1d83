# -*- test-case-name: tests.test_peer_core -*-
"""
Homing: a peer ANNOUNCEs its functions and load to one tracker, its
primary, every ANNOUNCE_INTERVAL_S. It enters that tracker's registry
with its first ANNOUNCE. When the primary's session is lost the peer
announces to another tracker session at once, which becomes its home.
"""

from orb.net.logs import orb_logger
from orb.protocol import messages as m

log = orb_logger()

ANNOUNCE_INTERVAL_S = 30.0


class Homing:
    def __init__(self, table):
        self.table = table
        self.primary = None  # the SessionRecord of the tracker we announce to
        self.functions = {}  # fid bytes -> version (filled by the hosting issue)
        self.load_permille = 0

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
        functions = [m.FunctionEntry(fid, version) for fid, version in sorted(self.functions.items())]
        self.primary.send(m.Announce(load_permille=self.load_permille, functions=functions))
