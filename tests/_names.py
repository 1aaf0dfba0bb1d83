"""
A stand-in for the tracker's names core (``orb.tracker.names``) with the
interface the DNS authority, the gateway and the HTTP API read:
``fid_status``, ``resolve`` and ``serving_fid``. Tests set names and
deprecations directly; time comes from the given clock, so a sunset passes
when the test advances it.
"""

from orb.protocol.names import owner_label  # noqa: F401 (the tests import it from here)
from orb.tracker.names import FidStatus, NameView, VersionView


class FakeNames:
    """Names and deprecations set by the test."""

    def __init__(self, clock):
        self.clock = clock
        self.names = {}  # (owner label, name) -> (owner key, [(seq, fid)] newest first)
        self.deprecations = {}  # fid -> (successor, sunset, seq)

    def set_name(self, owner_key, name, fid, seq=None):
        key = (owner_label(owner_key), name)
        _, history = self.names.get(key, (owner_key, []))
        seq = seq if seq is not None else (history[0][0] + 1 if history else 1)
        self.names[key] = (owner_key, [(seq, fid), *history][:64])

    def deprecate(self, fid, successor=None, sunset=0, seq=1):
        self.deprecations[fid] = (successor, int(sunset), seq)

    def undeprecate(self, fid):
        self.deprecations.pop(fid, None)

    def fid_status(self, fid):
        if fid not in self.deprecations:
            return None
        successor, sunset, seq = self.deprecations[fid]
        return FidStatus(fid, b"\0" * 32, True, successor, sunset, bool(sunset) and self.clock.seconds() >= sunset,
                         seq)

    def _version(self, seq, fid):
        status = self.fid_status(fid)
        if status is None:
            return VersionView(seq, fid, False, None, 0, False, 0.0)
        return VersionView(seq, fid, True, status.successor, status.sunset, status.gone, 0.0)

    def resolve(self, label, name):
        entry = self.names.get((label, name))
        if entry is None:
            return None
        owner_key, history = entry
        versions = tuple(self._version(s, f) for s, f in history)
        live = [v for v in versions if not v.gone]
        serving = ([v for v in live if not v.deprecated] or live or [None])[0]
        top = versions[0]
        return NameView(owner_key, label, name, top.fid, top.seq, top.deprecated, top.successor, top.sunset, top.gone,
                        tuple((v.seq, v.fid, v.deprecated) for v in versions), serving.fid if serving else None,
                        versions)

    def serving_fid(self, label, name):
        view = self.resolve(label, name)
        return None if view is None else view.serving
