# -*- test-case-name: tests.test_hosting -*-
"""
The peer's hosting: which offers it takes (the policy), and what it does
with one it takes (RFC 5.14, 9.5).

The policy is set by ``twistd orb-peer`` options and decided by
``decide()``, a pure function: a manifest, a package size and what the
peer holds already in, a ``Decline`` (or None) out. A peer declines an
OFFER by answering DEPLOY_ACK with status ``declined`` (0x11), replicas 0,
and a text that begins with the name of the policy that refused
("runtime: ...", "memory: ..."); see DECLINE_* below.

``Hosting`` is the component. On OFFER from a tracker session it
validates the manifest, applies the policy, answers DEPLOY_ACK at once
(accepted: replicas 1), then fetches from the OFFER's sources (the
offering tracker if it lists none), checks that the package's
``orb-manifest.json`` is the offered manifest byte for byte, and adds the
fid to the functions it ANNOUNCEs. A failed fetch or a manifest mismatch
leaves the fid out of ANNOUNCE (and out of the store). The OFFER's
``owner_key`` TLV, when present on a session this peer opened to the
tracker, is kept with the package (for LOGS, RFC 10.7); a later such OFFER
of a held fid that names another key replaces it. On start the peer
announces what its re-verified store holds; a copy dropped later (found
corrupt while proving it to a CHALLENGE) leaves the ANNOUNCE at once.
"""

import json
import sys

import attrs
from twisted.internet import defer

from orb.net import fetch as fe
from orb.net import packages as pk
from orb.net.logs import escape, orb_logger
from orb.protocol import fid as fidmod
from orb.protocol import manifest as mf
from orb.protocol import messages as m
from orb.protocol import package as pkg
from orb.protocol.codes import ErrorCode, TlvType
from orb.protocol.messages import MessageType

log = orb_logger()

DEFAULT_MAX_FUNCTIONS = 100
DEFAULT_MAX_DISK_BYTES = 1024 * 1024 * 1024  # 1 GiB
DEFAULT_MAX_MEMORY_MB = 1024
DEFAULT_RUNTIMES = ("python", "exec")
HOSTED_VERSION = 1  # FunctionEntry.version: versions arrive with the naming issue

# The first word of a decline's text: which policy refused.
DECLINE_MANIFEST = "manifest"
DECLINE_RUNTIME = "runtime"
DECLINE_MEMORY = "memory"
DECLINE_BYTECODE = "bytecode"
DECLINE_FUNCTIONS = "functions"
DECLINE_DISK = "disk"
DECLINE_SIZE = "size"


@attrs.frozen
class HostingPolicy:
    """What a peer agrees to host (``twistd orb-peer`` options)."""

    max_functions: int = DEFAULT_MAX_FUNCTIONS
    max_disk_bytes: int = DEFAULT_MAX_DISK_BYTES
    runtimes: frozenset = frozenset(DEFAULT_RUNTIMES)
    max_memory_mb: int = DEFAULT_MAX_MEMORY_MB
    cache_tag: str = sys.implementation.cache_tag  # the Python whose bytecode packages this peer runs
    max_package_bytes: int = pkg.MAX_PACKAGE_BYTES


@attrs.frozen
class Decline:
    policy: str
    detail: str

    @property
    def text(self):
        return f"{self.policy}: {self.detail}"


def parse_manifest(raw):
    """The Manifest of an OFFER's manifest bytes, which must be its canonical JSON; raises ManifestError."""
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise mf.ManifestError([mf.Problem("(document)", "(not JSON)", f"send canonical JSON ({e})")]) from None
    manifest = mf.from_json(doc)
    if mf.canonical_bytes(manifest) != raw:
        raise mf.ManifestError([mf.Problem("(document)", "(not canonical)", "send the canonical JSON (RFC 2.7)")])
    return manifest


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate member")
    return dict(pairs)


def decide(policy, manifest, package_size, *, hosted, used_bytes):
    """None if the peer will host this function, else the Decline saying which policy refuses."""
    if manifest.runtime not in policy.runtimes:
        allowed = ", ".join(sorted(policy.runtimes)) or "none"
        return Decline(DECLINE_RUNTIME, f"runtime {manifest.runtime!r} is not allowed here (allowed: {allowed})")
    if manifest.memory_mb > policy.max_memory_mb:
        return Decline(DECLINE_MEMORY, f"memory_mb {manifest.memory_mb} is over this peer's "
                                       f"{policy.max_memory_mb} MiB per function")
    if not manifest.runs_on(policy.cache_tag):
        return Decline(DECLINE_BYTECODE, f"bytecode for {manifest.bytecode}; this peer runs {policy.cache_tag}")
    if not 0 < package_size <= policy.max_package_bytes:
        return Decline(DECLINE_SIZE, f"{package_size} bytes is not 1..{policy.max_package_bytes}, this peer's "
                                     "package limit")
    if hosted >= policy.max_functions:
        return Decline(DECLINE_FUNCTIONS, f"this peer hosts its maximum of {policy.max_functions} functions")
    if used_bytes + package_size > policy.max_disk_bytes:
        return Decline(DECLINE_DISK, f"{package_size} more bytes would pass this peer's {policy.max_disk_bytes} "
                                     "bytes of disk")
    return None


def owner_key_of(offer):
    """The owner key an OFFER names in its ``owner_key`` TLV (RFC 11.5), or None."""
    for tlv in offer.ext:
        if tlv.type == TlvType.OWNER_KEY and len(tlv.value) == 32:
            return tlv.value
    return None


class Hosting:
    """OFFER handling and the functions the peer announces."""

    def __init__(self, clock, table, store, fetcher, homing, policy=HostingPolicy()):
        self.clock = clock
        self.table = table
        self.store = store
        self.fetcher = fetcher
        self.homing = homing
        self.policy = policy
        self.failed = {}  # fid -> why the last fetch failed (bounded by the store's partial limit use)
        self._downloads = {}  # fid -> Deferreds of INVOKEs waiting for its fetch (bounded by Invocations)
        self.is_gone = lambda fid: False  # past its owner's sunset (RFC 9.10): set by the wiring (Deprecations)
        store.removed_listeners.append(self.package_removed)

    def handlers(self):
        return {MessageType.OFFER: self.on_offer}

    def start(self):
        """Announce what the (re-verified) store holds."""
        for entry in self.store.entries():
            if not self.is_gone(entry.fid):  # dropped at once by Deprecations
                self.homing.functions[entry.fid] = entry.version
        for fid, reason in self.store.dropped:
            log.info("not announcing {fid}: {reason}", fid=fidmod.to_text(fid), reason=reason)
        self.homing.announce()

    # --- OFFER --------------------------------------------------------------------------

    def on_offer(self, record, message, request_id):
        fid = message.fid
        if not record.is_tracker:
            record.refuse(request_id, ErrorCode.DENIED, "only a tracker may OFFER")
            return
        try:
            fidmod.check(fid)
        except fidmod.FidError as e:
            record.refuse(request_id, ErrorCode.NOT_FOUND, f"not a fid: {e}")
            return

        def ack(status, text):
            record.send(m.DeployAck(fid=fid, status=int(status), replicas=1 if status == 0 else 0, text=text[:200]),
                        response_to=request_id)

        if self.is_gone(fid):
            ack(ErrorCode.DECLINED, "gone: the function is past the sunset its owner set")
            return

        try:
            manifest = parse_manifest(message.manifest)
        except mf.ManifestError as e:
            ack(ErrorCode.DECLINED, f"{DECLINE_MANIFEST}: {e}")
            return
        # The TRACKER role is only claimed in HELLO: the owner key that lets a node read this function's
        # logs is taken only from a tracker this peer chose to dial (RFC 10.7).
        owner_key = owner_key_of(message) if not record.inbound else None
        if fid in self.store:
            self._hosted(fid, self.store.get(fid).version)
            if owner_key is not None:
                self.store.set_owner(fid, owner_key).addErrback(self._owner_not_kept, fid)
            ack(0, "already hosted")
            return
        if self.fetcher.fetching(fid):
            ack(0, "accepted; fetching")
            return
        decline = decide(self.policy, manifest, message.package_size,
                         hosted=len(self.store) + len(self.fetcher), used_bytes=self.store.used_bytes)
        if decline is None:
            why = self.store.room_for(message.package_size)
            if why is not None:
                decline = Decline(DECLINE_DISK, why)
        if decline is not None:
            log.info("declining {fid} offered by {peer}: {why}", fid=fidmod.to_text(fid), peer=record.name,
                     why=decline.text)
            ack(ErrorCode.DECLINED, decline.text)
            return
        ack(0, "accepted; fetching")
        sources = list(message.sources) or [record]
        self.fetch(fid, message.package_size, sources, message.manifest, owner_key)

    def fetch(self, fid, size, sources, manifest_bytes, owner_key=None):
        """Fetch, verify (fid and manifest) and announce; fires with True if hosted."""
        d = self.fetcher.fetch(fid, size, sources, version=HOSTED_VERSION)
        if owner_key is not None:  # kept before the fid is announced, so LOGS can be checked from the first call
            d.addCallback(lambda entry: self.store.set_owner(fid, owner_key).addCallback(lambda _: entry))
        d.addCallback(lambda entry: self.store.manifest(fid).addCallback(self._check_manifest, entry,
                                                                          manifest_bytes))

        def failed(failure):
            failure.trap(fe.FetchFailed, pk.StoreError)
            self._remember_failure(fid, failure.getErrorMessage())
            log.warn("not hosting {fid}: {why}", fid=fidmod.to_text(fid), why=escape(failure.getErrorMessage(), 300))
            return False

        d.addErrback(failed)
        if not d.called:
            self._downloads.setdefault(fid, [])
            d.addBoth(self._download_ended, fid)
        return d

    def wait_for(self, fid):
        """A Deferred firing True once the fetch of an accepted ``fid`` ends
        with it hosted, False if it failed; None if no fetch of it is under way."""
        waiters = self._downloads.get(fid)
        if waiters is None:
            return None
        d = defer.Deferred()
        waiters.append(d)
        return d

    def _download_ended(self, outcome, fid):
        for d in self._downloads.pop(fid, []):
            if not d.called:  # (a waiter whose call was cancelled)
                d.callback(outcome is True)
        return outcome

    def _check_manifest(self, stored, entry, offered):
        if stored != offered:
            # The package is fine (it hashes to its fid) but it is not the function offered.
            d = self.store.remove(entry.fid, "its orb-manifest.json differs from the offered manifest")
            return d.addCallback(lambda _: self._fail_manifest(entry.fid))
        self.failed.pop(entry.fid, None)
        self._hosted(entry.fid, entry.version)
        log.info("hosting {fid} ({size} bytes)", fid=fidmod.to_text(entry.fid), size=entry.size)
        return True

    def _owner_not_kept(self, failure, fid):
        log.failure("keeping the owner key of {fid}", failure, fid=fidmod.to_text(fid))

    def _fail_manifest(self, fid):
        raise pk.StoreError("the package's orb-manifest.json differs from the offered manifest")

    def _remember_failure(self, fid, why):
        self.failed.pop(fid, None)
        self.failed[fid] = why
        while len(self.failed) > 256:
            self.failed.pop(next(iter(self.failed)))

    def _hosted(self, fid, version):
        if self.homing.functions.get(fid) != version:
            self.homing.functions[fid] = version
            self.homing.announce()

    def package_removed(self, fid, reason):
        if self.homing.functions.pop(fid, None) is not None:
            log.info("no longer hosting {fid}: {reason}", fid=fidmod.to_text(fid), reason=reason)
            self.homing.announce()
