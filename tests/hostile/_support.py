"""
Shared fixtures for tests that run real jailed children: one real Executor
per test on the real reactor, a skip (with the reason) when this kernel
lacks a jail layer, and a fake peer data dir with a key file.
"""

import hashlib
import os
import stat
import sys

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, TestCase

from orb.exec import ExecConfig, Executor, RuntimeSpec
from orb.protocol.codes import ResultStatus

_probe_cache = {}


def missing_layers_reason() -> str | None:
    """Why real-jail tests cannot run here, or None when they can."""
    if "reason" not in _probe_cache:
        reason = None
        if not sys.platform.startswith("linux"):
            reason = "the jail needs Linux"
        else:
            try:
                from orb.cli._sandbox import probe_layers

                report = probe_layers()
                if report["missing"]:
                    reason = "kernel lacks jail layers: " + ", ".join(report["missing"])
            except Exception as e:  # pragma: no cover - depends on the host
                reason = f"could not probe jail layers: {e}"
        if reason:
            print(f"\nSKIP real-jail tests: {reason}", file=sys.stderr)
        _probe_cache["reason"] = reason
    return _probe_cache["reason"]


def _meta(path: str) -> bytes:
    """Mode, owner, times, and every xattr (ACLs are xattrs) of one path."""
    st = os.lstat(path)
    out = f"{oct(st.st_mode)} {st.st_uid}:{st.st_gid} {st.st_mtime_ns}".encode()
    try:
        for name in sorted(os.listxattr(path, follow_symlinks=False)):
            out += b" " + name.encode() + b"=" + os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        pass
    return out


def tree_checksum(root: str) -> str:
    """sha256 over every path, mode, owner, time, xattr/ACL and content under ``root``."""
    h = hashlib.sha256()
    h.update(_meta(root))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            h.update(os.path.relpath(path, root).encode() + b"\0" + _meta(path))
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def make_fake_data_dir(base: str) -> tuple[str, str]:
    """A peer data dir like the real one: private/node.key (0600), a db, a store."""
    data = os.path.join(base, "peer-data")
    os.makedirs(os.path.join(data, "private"), mode=0o700)
    os.makedirs(os.path.join(data, "store"), mode=0o755)
    key = os.path.join(data, "private", "node.key")
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"FAKE-ED25519-SECRET-KEY-" + os.urandom(32).hex().encode())
    os.close(fd)
    with open(os.path.join(data, "orb.sqlite"), "wb") as f:
        f.write(b"SQLite format 3\0" + b"\0" * 100)
    with open(os.path.join(data, "store", "index"), "w") as f:
        f.write("fid1\nfid2\n")
    os.makedirs(os.path.join(data, "bin"))
    tool = os.path.join(data, "bin", "tool")
    with open(tool, "w") as f:
        f.write("#!/bin/sh\necho host tool\n")
    os.chmod(tool, 0o755)
    try:
        os.setxattr(key, "user.orb-test", b"keep me")
    except OSError:
        pass  # the filesystem has no user xattrs: modes and owners still count
    return data, key


class JailTestCase(TestCase):
    """Starts a real Executor (real zygote, real jail) for each test."""

    config = {}
    timeout = 60

    def setUp(self):
        reason = missing_layers_reason()
        if reason:
            raise SkipTest(reason)
        cfg = dict(max_concurrent=2, max_queue=8, default_timeout_s=5.0,
                   scratch_root=os.path.abspath(self.mktemp()))
        cfg.update(self.config)
        self.executor = Executor(reactor, ExecConfig(**cfg))
        self.addCleanup(self.executor.stop)
        d = self.executor.start()
        d.addCallback(lambda hello: setattr(self, "hello", hello))
        return d

    def assert_memory_verdict(self, result, memory_mb: int) -> None:
        """Past its memory limit a call ends MEMORY, the kernel's word through
        the call's memory cgroup.  Without one (a non-root peer) the failed
        allocation is the function's own error: ERROR, its log says so."""
        if self.executor.layers.get("cgroup_memory"):
            self.assertEqual(result.status, ResultStatus.MEMORY, result)
            self.assertIn(f"memory limit of {memory_mb} MB", result.message)
            self.assertIn("out-of-memory killer", result.message)
        else:
            self.assertEqual(result.status, ResultStatus.ERROR, result)
            self.assertTrue(b"MemoryError" in result.log or b"Cannot allocate memory" in result.log,
                            result.log[-300:])

    def make_package(self, files: dict) -> str:
        pkg = os.path.abspath(self.mktemp())
        os.makedirs(pkg)
        os.chmod(pkg, 0o755)
        for name, body in files.items():
            path = os.path.join(pkg, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            mode = 0o755 if body.startswith("#!") else 0o644
            with open(path, "w") as f:
                f.write(body)
            os.chmod(path, mode)
        return pkg

    def call(self, pkg, entry="main.py", data=b"", runtime="python", timeout=5.0,
             reuse="per-call", memory_mb=None, request_id="req") -> defer.Deferred:
        spec = RuntimeSpec(runtime=runtime, entry=entry, reuse=reuse, memory_mb=memory_mb)
        return self.executor.invoke("fid-test", pkg, spec, data, deadline_s=timeout,
                                    request_id=request_id)

    @defer.inlineCallbacks
    def assert_no_leftovers(self):
        """No child of the zygote but its spare.  A spare forked a moment ago
        may not have named itself yet, so look again for up to 2 s."""
        from twisted.internet import task

        for _ in range(100):
            left = self.zygote_children()
            if not left:
                return
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(left, [], "a process outlived its call")

    def zygote_children(self) -> list[int]:
        """Jailed processes of this executor still alive (children of the
        zygote's template), except its pre-forked spare (named ``orb-spare``
        until it takes a call) and a child primed for a function's next call
        (``orb-ready`` until its call arrives)."""
        def children(pid):
            kids = []
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/children") as f:
                        kids += [int(x) for x in f.read().split()]
            except OSError:
                pass
            return kids

        def name(pid):
            try:
                with open(f"/proc/{pid}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
                return fields.get("Name", "").strip()
            except OSError:
                return None

        jailed = []
        for kid in children(self.hello["pid"]):
            if name(kid) == "orb-template":
                jailed += [k for k in children(kid) if name(k) not in (None, "orb-spare", "orb-ready")]
            elif name(kid) not in (None, "orb-spare", "orb-ready"):
                jailed.append(kid)
        return jailed
