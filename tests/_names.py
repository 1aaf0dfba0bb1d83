"""
A stand-in for the tracker's names core (``orb.tracker.names``) with the
interface the DNS authority, the gateway and the HTTP API read:
``fid_status``, ``resolve`` and ``serving_fid``. Tests set names and
deprecations directly; time comes from the given clock, so a sunset passes
when the test advances it.
"""

import attrs

from orb.protocol.names import owner_label


@attrs.frozen
class FidStatus:
    deprecated: bool
    successor: str | None
    sunset: int
    gone: bool
    seq: int
    time: int = 0


@attrs.frozen
class NameView:
    owner_key: bytes
    name: str
    fid: str
    seq: int
    deprecated: bool
    successor: str | None
    sunset: int
    history: tuple


class FakeNames:
    """Names and deprecations set by the test."""

    def __init__(self, clock):
        self.clock = clock
        self.names = {}  # (owner label, name) -> (owner key, [(seq, fid)] newest first)
        self.deprecations = {}  # fid -> (successor, sunset, seq, time)

    def set_name(self, owner_key, name, fid, seq=None):
        key = (owner_label(owner_key), name)
        _, history = self.names.get(key, (owner_key, []))
        seq = seq if seq is not None else (history[0][0] + 1 if history else 1)
        self.names[key] = (owner_key, [(seq, fid), *history][:64])

    def deprecate(self, fid, successor=None, sunset=0, seq=1):
        self.deprecations[fid] = (successor, int(sunset), seq, int(self.clock.seconds()))

    def undeprecate(self, fid):
        self.deprecations.pop(fid, None)

    def fid_status(self, fid):
        if fid not in self.deprecations:
            return None
        successor, sunset, seq, at = self.deprecations[fid]
        return FidStatus(True, successor, sunset, bool(sunset) and self.clock.seconds() >= sunset, seq, at)

    def resolve(self, label, name):
        entry = self.names.get((label, name))
        if entry is None:
            return None
        owner_key, history = entry
        seq, fid = history[0]
        status = self.fid_status(fid)
        return NameView(owner_key, name, fid, seq, status is not None, status.successor if status else None,
                        status.sunset if status else 0,
                        tuple((s, f, self.fid_status(f) is not None) for s, f in history))

    def serving_fid(self, label, name):
        view = self.resolve(label, name)
        if view is None:
            return None
        live = [f for _, f, _ in view.history if not (self.fid_status(f) and self.fid_status(f).gone)]
        fresh = [f for f in live if self.fid_status(f) is None]
        return (fresh or live or [None])[0]
