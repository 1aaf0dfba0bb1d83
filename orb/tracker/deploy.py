# -*- test-case-name: tests.test_deploy -*-
"""
DEPLOY at a tracker (RFC 9.4): the proposal's steps 2-4.

1. The request is checked: the fid, the size against this tracker's cap,
   the manifest (Section 9.7) and the owner's signature of the deploy
   statement (Section 9.8).
2. The package is fetched from the deploying node on the same session
   (FETCH; the deployer serves its own package while it waits) and
   verified against the fid; its ``orb-manifest.json`` must be the
   manifest signed.
3. Every sample of the manifest is run in this tracker's own jail.
4. The package is stored, the owner's signed statement enters the registry
   (replicated), this tracker writes the first placement (so it manages
   the function, orb.tracker.replication), and DEPLOY_ACK answers.

DEPLOY is a request with a long deadline: the deployer waits up to
DEPLOY_TIMEOUT_S for DEPLOY_ACK, which comes only once all of the above is
done or has failed.  Every failure is an ERROR with a specific code and a
message naming what failed; nothing is stored and nothing is recorded.
At most MAX_DEPLOYS_IN_FLIGHT deploys run at once, one per session.
"""

import json
import os
import shutil
import tempfile

from twisted.internet import defer

from orb.net.logs import escape, orb_logger
from orb.protocol import fid as fidmod
from orb.protocol import manifest as manifestmod
from orb.protocol import package as packagemod
from orb.protocol.codes import ErrorCode, ResultStatus
from orb.protocol.deploy import verify_deploy
from orb.protocol.federation import FunctionRecord, RegistryChangeError
from orb.protocol.messages import DeployAck, MessageType
from orb.tracker.registry import RegistryFull

log = orb_logger()

DEPLOY_TIMEOUT_S = 300.0  # what a deployer waits for DEPLOY_ACK (RFC 9.4)
MAX_DEPLOYS_IN_FLIGHT = 4
MAX_CLOCK_AHEAD_S = 120


class DeployFailed(Exception):
    def __init__(self, code, text):
        super().__init__(text)
        self.code = code
        self.text = text


class SampleRunner:
    """Runs a package's samples in this node's jail (orb.exec), one at a time."""

    def __init__(self, reactor, allow_unconfined=False):
        self.reactor = reactor
        self.allow_unconfined = allow_unconfined
        self._executor = None
        self._starting = None

    @defer.inlineCallbacks
    def _ready(self):
        from orb.exec import ExecConfig, Executor

        if self._executor is None:
            self._executor = Executor(self.reactor, ExecConfig(allow_unconfined=self.allow_unconfined,
                                                               max_concurrent=1, max_timeout_s=300.0))
            self._starting = self._executor.start()
        yield self._starting
        return self._executor

    @defer.inlineCallbacks
    def run_samples(self, fid_text, data, manifest):
        """None if every sample passes, else a sentence naming the first that fails."""
        from orb.exec import RuntimeSpec

        executor = yield self._ready()
        root = tempfile.mkdtemp(prefix="orb-deploy-")
        try:
            os.chmod(root, 0o755)
            files, _ = packagemod.unpack(data)
            for f in files:
                path = os.path.join(root, *f.path.split("/"))
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                with open(path, "wb") as out:
                    out.write(f.data)
                os.chmod(path, 0o755 if f.executable else 0o644)
            timeout_s = manifest.timeout_ms / 1000
            spec = RuntimeSpec(runtime=manifest.runtime, entry=manifest.entry, memory_mb=manifest.memory_mb,
                               timeout_s=timeout_s, reuse="per-call")
            for i, sample in enumerate(manifest.samples):
                result = yield executor.invoke(fid_text, root, spec, sample.input, deadline_s=timeout_s,
                                               request_id=f"deploy-sample-{i}")
                name = sample.name or f"#{i + 1}"
                if result.status is not ResultStatus.OK:
                    if result.status is ResultStatus.REFUSED:
                        raise DeployFailed(ErrorCode.INTERNAL, f"this tracker cannot test-run functions: "
                                                               f"{result.message}")
                    detail = result.message or result.log.decode("utf-8", "replace")[-300:]
                    return f"sample {name} ended {result.status.name}: {detail}"
                problem = sample.check(result.output)
                if problem is not None:
                    return f"sample {name}: {problem}"
            return None
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def stop(self):
        return self._executor.stop() if self._executor is not None else defer.succeed(None)


def _read_all(path):
    with open(path, "rb") as f:
        return f.read()


class Deployments:
    """The DEPLOY handler.  ``fetcher`` (orb.net.fetch) fetches a package
    from the deploying session into ``packages`` (orb.net.packages), which
    verifies it against the fid; ``runner`` test-runs the samples."""

    def __init__(self, clock, local, table, registry, packages, fetcher, runner, max_package_bytes):
        self.clock = clock
        self.local = local
        self.table = table
        self.registry = registry
        self.packages = packages
        self.fetcher = fetcher
        self.runner = runner
        self.max_package_bytes = max_package_bytes
        self._in_flight = {}  # node id of the deployer -> fid

    def handlers(self):
        return {MessageType.DEPLOY: self.on_deploy}

    def on_deploy(self, record, message, request_id):
        try:
            fid_text, manifest = self.check(record, message)
        except DeployFailed as e:
            record.refuse(request_id, e.code, e.text)
            return
        if record.node_id in self._in_flight or len(self._in_flight) >= MAX_DEPLOYS_IN_FLIGHT:
            record.refuse(request_id, ErrorCode.BUSY, "this tracker is busy with other deploys; try again shortly")
            return
        self._in_flight[record.node_id] = fid_text
        d = self.deploy(record, message, fid_text, manifest)

        def done(result):
            self._in_flight.pop(record.node_id, None)
            if isinstance(result, DeployFailed):
                log.info("deploy of {fid} from {peer} refused: {why}", fid=fid_text[:16], peer=record.name,
                         why=escape(result.text, 200))
                record.refuse(request_id, result.code, result.text)
                return
            record.send(DeployAck(fid=message.fid, status=0, replicas=result, text="deployed"),
                        response_to=request_id)

        def crashed(failure):
            self._in_flight.pop(record.node_id, None)
            if failure.check(DeployFailed):
                return done(failure.value)
            log.failure("deploy of {fid}", failure, fid=fid_text[:16])
            record.refuse(request_id, ErrorCode.INTERNAL, "the tracker failed while deploying; try again")

        d.addCallbacks(done, crashed)

    def check(self, record, message):
        """The checks that need no package: (fid text, Manifest), or DeployFailed."""
        try:
            fid_text = fidmod.to_text(message.fid)
        except fidmod.FidError as e:
            raise DeployFailed(ErrorCode.INVALID, f"fid: {e}") from None
        if message.package_size > self.max_package_bytes:
            raise DeployFailed(ErrorCode.TOO_LARGE,
                               f"package of {message.package_size} bytes exceeds this tracker's cap of "
                               f"{self.max_package_bytes} bytes (--max-package-bytes)")
        if message.package_size < 1024:
            raise DeployFailed(ErrorCode.INVALID, f"package_size {message.package_size} is smaller than any package")
        try:
            doc = json.loads(message.manifest.decode("utf-8"))
            manifest = manifestmod.from_json(doc)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            if isinstance(e, manifestmod.ManifestError):
                raise DeployFailed(ErrorCode.INVALID, f"manifest: {e}"[:1000]) from None
            raise DeployFailed(ErrorCode.INVALID, "manifest: not UTF-8 JSON") from None
        if manifestmod.canonical_bytes(manifest) != message.manifest:
            raise DeployFailed(ErrorCode.INVALID, "manifest: not in canonical form (write every member, JCS)")
        if not verify_deploy(message.owner_key, message.signature, message.fid, message.manifest,
                             message.package_size, message.issued_at):
            raise DeployFailed(ErrorCode.DENIED, "signature: not the owner key's signature of this deploy "
                                                 "statement (RFC 9.8)")
        if message.issued_at > self.clock.seconds() + MAX_CLOCK_AHEAD_S:
            raise DeployFailed(ErrorCode.INVALID, "issued_at is in the future: check the deployer's clock")
        return fid_text, manifest

    @defer.inlineCallbacks
    def check_package(self, fid_text, raw, message, manifest, entry):
        """A stored package is the one signed, and its samples pass here."""
        if entry.size != message.package_size:
            raise DeployFailed(ErrorCode.INVALID, f"the package is {entry.size} bytes, not the {message.package_size} "
                                                  "signed")
        data = yield self.packages.io.run(_read_all, self.packages.path(raw))
        try:
            _, inner = packagemod.unpack(data)
            inner_bytes = manifestmod.canonical_bytes(manifestmod.from_json(inner))
        except (packagemod.PackageError, manifestmod.ManifestError) as e:
            raise DeployFailed(ErrorCode.INVALID, f"package: {e}"[:1000]) from None
        if inner_bytes != message.manifest:
            raise DeployFailed(ErrorCode.INVALID, "the package's orb-manifest.json is not the manifest signed")
        failure = yield self.runner.run_samples(fid_text, data, manifest)
        if failure is not None:
            raise DeployFailed(ErrorCode.INVALID, f"the function fails its own samples here: {failure}"[:1000])

    @defer.inlineCallbacks
    def deploy(self, record, message, fid_text, manifest):
        raw = message.fid
        if self.packages.get(raw) is None:
            from orb.net.fetch import FetchFailed

            try:
                entry = yield self.fetcher.fetch(raw, message.package_size, [record], discourage=False)
            except FetchFailed as e:
                raise DeployFailed(ErrorCode.INVALID, f"the package could not be fetched from you: {e}"[:1000]) \
                    from None
            try:
                yield self.check_package(fid_text, raw, message, manifest, entry)
            except Exception:
                yield self.packages.remove(raw, "refused at deploy")
                raise
        statement = FunctionRecord(fid_text, message.owner_key, message.manifest, message.package_size,
                                   message.issued_at, message.signature)
        try:
            self.registry.upsert_function(statement)
        except RegistryChangeError as e:
            raise DeployFailed(ErrorCode.INVALID, f"not recorded: {e}") from None
        except RegistryFull:
            raise DeployFailed(ErrorCode.BUSY, "this tracker's registry holds all the functions it can") from None
        placement = self.registry.placement(fid_text)
        if placement is None:
            self.registry.publish_placement(fid_text, [(self.local.node_id, int(self.clock.seconds()))])
            placement = self.registry.placement(fid_text)
        return len([h for h in placement.verified if h != self.local.node_id])
