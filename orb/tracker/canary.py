# -*- test-case-name: tests.test_canary -*-
"""
Spot checks (RFC 10.10.x): canary calls with known answers to the hosts of
``pure`` functions, and a penalty for a wrong answer.

Known answers.  A function's manifest samples (input, expected output,
compared as at deploy: ``Sample.check``), and answers seen from replicas:
for each pure, public function a small table of the inputs of its recent
ok runs (inputs of at most MAX_KNOWN_INPUT_BYTES) and the digest each
replica answered. An input is *known* once replicas in two network groups
(IPv4 /16, IPv6 /32, as replicas are spread: two hosts in one network cannot
frame a third) gave the same answer, and more replicas gave it than any
other answer (a pure function has one answer; a lone dissenter does not
hide it); an input not known yet is sent to a replica that has not answered
it as a *probe*, whose answer is remembered but never judged.
Digests are over the JCS form of a JSON output (so key order does not
matter), else over the bytes.

Ticks.  Every ``interval_s`` × (1 ± JITTER) the checker looks at up to
MAX_FUNCTIONS_PER_TICK random functions and sends at most ``max_per_tick``
canaries, one at a time per host, each to a random verified replica that
is not suspect. A canary is an INVOKE like the router's (the manifest's
deadline, a random trace id, no token) sent on the router's channel, not
through ``Router.call``: it is never cached, shared or counted for payment.

Verdicts.  RESULT ok with another output than the known one: *wrong*. The
host is logged and made *suspect* for ``penalty_s``: the router offers it
no calls (``is_suspect``), Replication offers it no new functions, and
Payments counts none of its calls or epochs in that time
(``Payments.suspended``). A timeout, a lost session, an ERROR or a RESULT
other than ok is counted, never punished: the host may be busy.
"""

import collections
import hashlib
import json
import os
import random

import attrs
import rfc8785
from twisted.internet import defer
from twisted.python.failure import Failure

from orb.net.adapter import RequestTimeout
from orb.net.logs import orb_logger
from orb.protocol import fid as fidmod
from orb.protocol import manifest as mf
from orb.protocol import messages as m
from orb.protocol.codes import ResultStatus, TlvType
from orb.tracker.router import REQUEST_MARGIN_S

log = orb_logger()

DEFAULT_INTERVAL_S = 60.0  # --canary-interval
DEFAULT_PENALTY_S = 3600.0  # --canary-penalty
JITTER = 0.25  # a tick comes interval_s × (1 ± JITTER) after the last
MAX_CANARIES_PER_TICK = 4
MAX_FUNCTIONS_PER_TICK = 64  # functions looked at per tick
MAX_KNOWN_FIDS = 256  # functions with remembered answers; least recently seen dropped
MAX_KNOWN_PER_FID = 16  # inputs remembered per function; least recently seen dropped
MAX_KNOWN_INPUT_BYTES = 4096  # larger inputs are never remembered: at most 16 MiB of inputs in all
MAX_REPLICAS_PER_INPUT = 4  # replicas whose answer to one input is remembered
MAX_JSON_DIGEST_BYTES = 64 * 1024  # larger outputs are digested as bytes
MAX_SUSPECTS = 10_000
MAX_MANIFESTS = 256  # parsed manifests (samples) kept


def answer_digest(output):
    """SHA-256 of an output: of its JCS form when it is JSON (of at most MAX_JSON_DIGEST_BYTES), else of its bytes."""
    if len(output) <= MAX_JSON_DIGEST_BYTES:
        try:
            return hashlib.sha256(b"j" + rfc8785.dumps(json.loads(output))).digest()
        except (ValueError, TypeError, rfc8785.CanonicalizationError, RecursionError):
            pass
    return hashlib.sha256(b"b" + output).digest()


@attrs.frozen
class Suspect:
    node_id: bytes
    fid: str
    reason: str
    since_s: float
    until_s: float

    def to_json(self):
        return {"node_id": self.node_id.hex(), "fid": self.fid, "reason": self.reason,
                "since_s": round(self.since_s, 3), "until_s": round(self.until_s, 3)}


class _Seen:
    """One input of a pure function and the answer digest of each replica that answered it."""

    def __init__(self, data):
        self.input = data
        self.answers = {}  # node id -> digest
        self.groups = {}  # node id -> its network group (its node id when it has no address)

    def add(self, node_id, digest, group):
        if node_id in self.answers or len(self.answers) < MAX_REPLICAS_PER_INPUT:
            self.answers[node_id] = digest
            self.groups[node_id] = group

    def known(self):
        """The digest given by replicas in two network groups and by more replicas than any other; else None."""
        votes = collections.Counter(self.answers.values())
        ranked = votes.most_common(2)
        if not ranked or (len(ranked) == 2 and ranked[1][1] == ranked[0][1]):
            return None
        digest = ranked[0][0]
        groups = {self.groups[n] for n, d in self.answers.items() if d == digest}
        return digest if len(groups) >= 2 else None


class Canary:
    def __init__(self, clock, registry, replication, channel, *, local_id=b"", rng=None,
                 interval_s=DEFAULT_INTERVAL_S, penalty_s=DEFAULT_PENALTY_S, max_per_tick=MAX_CANARIES_PER_TICK,
                 payments=None):
        self.clock = clock
        self.registry = registry
        self.replication = replication
        self.channel = channel  # node id -> a channel with request(message, timeout_s), or None (the router's)
        self.local_id = local_id
        self.rng = rng or random.Random()
        self.interval_s = interval_s
        self.penalty_s = penalty_s
        self.max_per_tick = max_per_tick
        self.payments = payments  # orb.tracker.payments.Payments, or None
        self._seen = collections.OrderedDict()  # fid text -> OrderedDict(sha256(input) -> _Seen)
        self._manifests = collections.OrderedDict()  # manifest bytes -> Manifest (its samples)
        self._outstanding = set()  # node ids with a canary out
        self._suspects = collections.OrderedDict()  # node id -> Suspect
        self._timer = None
        self.counts = collections.Counter()

    # --- the loop ---------------------------------------------------------------------

    def start(self):
        if self.interval_s > 0 and self._timer is None:
            self._schedule()

    def stop(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _schedule(self):
        self._timer = self.clock.callLater(self.interval_s * self.rng.uniform(1 - JITTER, 1 + JITTER), self._tick)

    def _tick(self):
        try:
            self.tick()
        except Exception:  # one failure never stops the loop
            log.failure("canary calls")
        self._schedule()

    def tick(self):
        """Forgive the suspects whose time is up, then send up to ``max_per_tick`` canaries."""
        now = self.clock.seconds()
        for node_id, suspect in list(self._suspects.items()):
            if suspect.until_s <= now:
                del self._suspects[node_id]
                log.info("{peer} is no longer suspect: its penalty for a wrong canary answer is over",
                         peer=node_id.hex()[:16])
        functions = self.registry.functions()
        sent = 0
        for function in self.rng.sample(functions, min(len(functions), MAX_FUNCTIONS_PER_TICK)):
            if sent >= self.max_per_tick:
                break
            try:
                sent += self._check_one(function)
            except Exception:
                log.failure("a canary call of {fid}", fid=function.fid[:16])

    def _check_one(self, function):
        manifest = function.manifest_json()
        if not manifest.get("pure") or manifest.get("visibility", "public") != "public":
            return 0
        hosts = [p.node_id for p in self.replication.replicas(function.fid)
                 if p.node_id != self.local_id and p.node_id not in self._outstanding
                 and not self.is_suspect(p.node_id)]
        if not hosts:
            return 0
        node_id = self.rng.choice(hosts)
        choices = [(s.input, s.check, "sample") for s in self._samples(function)]
        for entry in self._seen.get(function.fid, {}).values():
            digest = entry.known()
            if digest is not None:
                choices.append((entry.input, _digest_check(digest), "earlier answers"))
            elif node_id not in entry.answers and len(entry.answers) < MAX_REPLICAS_PER_INPUT:
                choices.append((entry.input, None, "probe"))
        if not choices:
            return 0
        channel = self.channel(node_id)
        if channel is None:
            return 0
        data, check, source = self.rng.choice(choices)
        self.send(function.fid, node_id, channel, data, check, source, manifest["timeout_ms"])
        return 1

    def _samples(self, function):
        parsed = self._manifests.pop(function.manifest, None)
        if parsed is None:
            try:
                parsed = mf.from_json(function.manifest_json())
            except mf.ManifestError:
                return ()
            if len(self._manifests) >= MAX_MANIFESTS:
                self._manifests.popitem(last=False)
        self._manifests[function.manifest] = parsed
        return parsed.samples

    # --- one canary -------------------------------------------------------------------

    def send(self, fid, node_id, channel, data, check, source, timeout_ms):
        """An INVOKE as the router sends it: the manifest's deadline, a fresh trace id, no token."""
        trace = (m.Tlv(int(TlvType.TRACE_ID), os.urandom(16)),)
        invoke = m.Invoke(fid=fidmod.from_text(fid), deadline_ms=timeout_ms, token=b"", input=data, ext=trace)
        self._outstanding.add(node_id)
        self.counts["sent"] += 1
        try:
            d = channel.request(invoke, timeout_ms / 1000 + REQUEST_MARGIN_S)
        except Exception:
            d = defer.fail()
        d.addBoth(self._answered, fid, node_id, data, check, source)

    def _answered(self, outcome, fid, node_id, data, check, source):
        self._outstanding.discard(node_id)
        peer = node_id.hex()[:16]
        if isinstance(outcome, Failure):
            self.counts["timeouts" if outcome.check(RequestTimeout) else "failed"] += 1
            log.info("canary call of {fid} to {peer} got no answer ({why}); not held against it", fid=fid[:16],
                     peer=peer, why=outcome.getErrorMessage()[:120])
            return None
        if outcome.status_kind is not ResultStatus.OK:
            self.counts["not_ok"] += 1
            return None
        if check is None:  # a probe: remembered, not judged
            self.counts["probes"] += 1
            self._remember(fid, data, node_id, answer_digest(outcome.output))
            return None
        problem = check(outcome.output)
        if problem is None:
            self.counts["passed"] += 1
            if source != "sample":
                self._remember(fid, data, node_id, answer_digest(outcome.output))
            return None
        self.punish(node_id, fid, f"wrong answer to a canary call ({source}): {problem}"[:300])
        return None

    def punish(self, node_id, fid, reason):
        """``node_id`` answered wrong: suspect for ``penalty_s`` (no calls, no new functions, no pay)."""
        now = self.clock.seconds()
        until = now + self.penalty_s
        self.counts["wrong"] += 1
        self._suspects.pop(node_id, None)
        if len(self._suspects) >= MAX_SUSPECTS:
            self._suspects.popitem(last=False)
        self._suspects[node_id] = Suspect(node_id, fid, reason, now, until)
        log.warn("{peer} answered a canary call of {fid} wrong; suspect for {penalty_s:g} s (no calls, no "
                 "vouchers): {reason}", peer=node_id.hex()[:16], fid=fid[:16], penalty_s=self.penalty_s,
                 reason=reason)
        penalise = getattr(self.replication, "penalise", None)
        if penalise is not None:
            penalise(node_id, self.penalty_s)
        if self.payments is not None:
            self.payments.suspended(node_id, until)

    def is_suspect(self, node_id):
        suspect = self._suspects.get(node_id)
        return suspect is not None and suspect.until_s > self.clock.seconds()

    # --- answers seen -----------------------------------------------------------------

    def run_seen(self, fid_raw, data, answer):
        """A routed run ended (Router.answer_listeners): remember an ok answer of a pure, public function."""
        if self.interval_s <= 0:
            return  # spot checks off: nothing to remember
        if (answer.cached or answer.replica is None or answer.replica == self.local_id or answer.refusal
                or answer.result.status_kind is not ResultStatus.OK or len(data) > MAX_KNOWN_INPUT_BYTES):
            return
        try:
            fid = fidmod.to_text(fid_raw)
        except fidmod.FidError:
            return
        function = self.registry.function(fid)
        if function is None:
            return
        manifest = function.manifest_json()
        if not manifest.get("pure") or manifest.get("visibility", "public") != "public":
            return
        self._remember(fid, data, answer.replica, answer_digest(answer.result.output))

    def _remember(self, fid, data, node_id, digest):
        table = self._seen.pop(fid, None)
        if table is None:
            table = collections.OrderedDict()
            if len(self._seen) >= MAX_KNOWN_FIDS:
                self._seen.popitem(last=False)
        self._seen[fid] = table
        key = hashlib.sha256(data).digest()
        entry = table.pop(key, None)
        if entry is None:
            entry = _Seen(data)
            if len(table) >= MAX_KNOWN_PER_FID:
                table.popitem(last=False)
        table[key] = entry
        entry.add(node_id, digest, self._group(node_id))

    def _group(self, node_id):
        peer = self.registry.peer(node_id)
        group_of = getattr(self.replication, "group_of", None)
        if peer is None or not peer.addresses or group_of is None:
            return node_id
        try:
            return group_of(peer.addresses[0][0])
        except ValueError:
            return node_id

    def known_inputs(self, fid):
        return len(self._seen.get(fid, ()))

    # --- reports ----------------------------------------------------------------------

    def figures(self):
        return {**{k: self.counts[k] for k in ("sent", "passed", "wrong", "probes", "timeouts", "failed", "not_ok")},
                "outstanding": len(self._outstanding), "suspects": sum(map(self.is_suspect, self._suspects)),
                "known_functions": len(self._seen)}

    def report(self):
        """What /api/v1/stats shows: the figures and the hosts suspect now, with why and until when."""
        return {**self.figures(), "suspect_hosts": [s.to_json() for s in self._suspects.values()
                                                   if s.until_s > self.clock.seconds()][:100]}


def _digest_check(digest):
    def check(output):
        if answer_digest(output) == digest:
            return None
        return "the output differs from what two other replicas answered"

    return check
