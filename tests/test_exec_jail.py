"""
Every jail layer and every result code, with real jailed children of a
real zygote.  (tests/hostile/ holds the attack suite.)
"""

import json
import os

from twisted.internet import defer
from twisted.trial.unittest import SkipTest

from orb.protocol.codes import ResultStatus

from .hostile._support import JailTestCase

ECHO = """
import json
def handler(event, context):
    print("seen", len(event), "bytes")
    return {"event": event.decode(), "fid": context.fid, "request_id": context.request_id,
            "remaining_ok": 0 < context.remaining_s() <= 5}
"""

PROBE = """
import ctypes, os, resource
def handler(event, context):
    libc = ctypes.CDLL(None)
    return {
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "no_new_privs": libc.prctl(39, 0, 0, 0, 0),
        "pgid_is_pid": os.getpgid(0) == os.getpid(),
        "sid_is_pid": os.getsid(0) == os.getpid(),
        "as": resource.getrlimit(resource.RLIMIT_AS)[0],
        "core": resource.getrlimit(resource.RLIMIT_CORE)[0],
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "cpu": resource.getrlimit(resource.RLIMIT_CPU)[0],
        "fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
    }
"""

SCRATCH = """
import os
def handler(event, context):
    before = sorted(os.listdir("."))
    with open("note.txt", "w") as f:
        f.write("x" * 1000)
    os.mkdir("sub")
    os.symlink("../note.txt", "sub/link")
    with open("sub/link") as f:
        n = len(f.read())
    return {"before": before, "read_back": n, "cwd": os.getcwd()}
"""


class PythonRuntimeTests(JailTestCase):
    @defer.inlineCallbacks
    def test_ok_json_result_context_and_log(self):
        """A handler's JSON result, context fields and printed log come back."""
        pkg = self.make_package({"main.py": ECHO})
        r = yield self.call(pkg, data=b"hello", request_id="r-42")
        self.assertEqual(r.status, ResultStatus.OK, r)
        self.assertEqual(json.loads(r.output), {"event": "hello", "fid": "fid-test",
                                                "request_id": "r-42", "remaining_ok": True})
        self.assertEqual(r.log, b"seen 5 bytes\n")  # print() goes to the log, not the output
        self.assertGreater(r.boot_ms, 0)
        self.assertGreater(r.exec_ms, 0)
        self.assertGreaterEqual(r.queue_ms, 0)

    @defer.inlineCallbacks
    def test_bytes_and_str_results_are_raw(self):
        """bytes and str results come back as raw bytes."""
        pkg = self.make_package({"b.py": "def handler(e, c):\n    return b'\\x00\\xff' + e\n",
                                 "s.py": "def handler(e, c):\n    return 'caf\\u00e9'\n"})
        rb = yield self.call(pkg, "b.py", data=b"!")
        rs = yield self.call(pkg, "s.py")
        self.assertEqual(rb.output, b"\x00\xff!")
        self.assertEqual(rs.output, "café".encode())

    @defer.inlineCallbacks
    def test_package_may_ship_pure_python_deps(self):
        """A package may import its own pure-Python modules."""
        pkg = self.make_package({"main.py": "import helper\ndef handler(e, c):\n    return helper.double(e)\n",
                                 "helper.py": "def double(b):\n    return b + b\n"})
        r = yield self.call(pkg, data=b"ab")
        self.assertEqual((r.status, r.output), (ResultStatus.OK, b"abab"))

    @defer.inlineCallbacks
    def test_large_input_and_output(self):
        """A megabyte of input and output round-trips."""
        pkg = self.make_package({"main.py": "import hashlib\ndef handler(e, c):\n    return e[::-1]\n"})
        data = os.urandom(900 * 1024)
        for reuse in ("per-call", "per-function"):
            r = yield self.call(pkg, data=data, reuse=reuse)
            self.assertEqual((r.status, r.output), (ResultStatus.OK, data[::-1]), reuse)

    @defer.inlineCallbacks
    def test_exception_is_error_with_traceback_log(self):
        """An exception is ERROR with the traceback in the log."""
        pkg = self.make_package({"main.py": "def handler(e, c):\n    raise ValueError('bad input here')\n"})
        r = yield self.call(pkg)
        self.assertEqual(r.status, ResultStatus.ERROR)
        self.assertIn(b"ValueError: bad input here", r.log)
        self.assertIn(b"Traceback", r.log)

    @defer.inlineCallbacks
    def test_missing_handler_and_syntax_error(self):
        """A missing handler or a syntax error is ERROR with the reason in the log."""
        pkg = self.make_package({"none.py": "x = 1\n", "syn.py": "def handler(:\n"})
        r1 = yield self.call(pkg, "none.py")
        r2 = yield self.call(pkg, "syn.py")
        self.assertEqual(r1.status, ResultStatus.ERROR)
        self.assertIn(b"no callable handler", r1.log)
        self.assertEqual(r2.status, ResultStatus.ERROR)
        self.assertIn(b"SyntaxError", r2.log)

    @defer.inlineCallbacks
    def test_missing_entry(self):
        """A missing entry is ERROR naming it."""
        pkg = self.make_package({"main.py": ECHO})
        r = yield self.call(pkg, "nope.py")
        self.assertEqual(r.status, ResultStatus.ERROR)
        self.assertIn("not found", r.message)

    @defer.inlineCallbacks
    def test_process_hygiene_and_rlimits(self):
        """Empty environment, no_new_privs, own session, rlimits and /tmp as cwd."""
        pkg = self.make_package({"main.py": PROBE})
        r = yield self.call(pkg, memory_mb=128, timeout=3)
        self.assertEqual(r.status, ResultStatus.OK, r.log)
        got = json.loads(r.output)
        self.assertEqual(got["env"], {})
        self.assertEqual(got["no_new_privs"], 1)
        self.assertTrue(got["pgid_is_pid"])
        self.assertTrue(got["sid_is_pid"])
        # With a memory cgroup (the bound that counts), the address space has
        # room for the cgroup to bind first; without one it is the bound.
        mem = 128 * 1024 * 1024
        want_as = 2 * mem + (1 << 30) if self.executor.layers.get("cgroup_memory") else mem
        self.assertEqual(got["as"], want_as)
        self.assertEqual(got["core"], 0)
        self.assertEqual(got["nofile"], self.executor.config.nofile)
        self.assertLessEqual(got["cpu"], 5)
        self.assertEqual(got["fsize"], self.executor.config.scratch_max_bytes)
        self.assertEqual(got["cwd"], "/tmp")

    @defer.inlineCallbacks
    def test_scratch_is_writable_fresh_and_wiped(self):
        """Scratch is writable, empty for every call, and leaves nothing on the host."""
        pkg = self.make_package({"main.py": SCRATCH})
        r1 = yield self.call(pkg)
        r2 = yield self.call(pkg)
        self.assertEqual(r1.status, ResultStatus.OK, r1.log)
        first = json.loads(r1.output)
        second = json.loads(r2.output)
        self.assertEqual((first["before"], first["read_back"]), ([], 1000))
        self.assertEqual(second["before"], [])  # nothing carried over
        self.assertEqual(first["cwd"], "/tmp")
        # Scratch was a tmpfs in the call's own mount namespace: nothing of
        # it is on the host.
        root = self.hello["scratch_root"]
        self.assertEqual(sorted(os.listdir(root)), ["empty", "root"])
        self.assertEqual(os.listdir(os.path.join(root, "root")), [])

    @defer.inlineCallbacks
    def test_package_is_read_only(self):
        """The package cannot be modified."""
        pkg = self.make_package({"main.py": "def handler(e, c):\n    open(__file__, 'a').write('#')\n"})
        r = yield self.call(pkg)
        self.assertEqual(r.status, ResultStatus.ERROR)
        # Not the file's owner (root peer), or a read-only mount (user namespace).
        self.assertTrue(b"PermissionError" in r.log or b"Read-only file system" in r.log, r.log)
        with open(os.path.join(pkg, "main.py")) as f:
            self.assertFalse(f.read().endswith("#"))

    @defer.inlineCallbacks
    def test_timeout_kills_and_reports(self):
        """A call past its deadline is killed and reported TIMEOUT."""
        pkg = self.make_package({"main.py": "import time\ndef handler(e, c):\n    time.sleep(60)\n"})
        r = yield self.call(pkg, timeout=0.5)
        self.assertEqual(r.status, ResultStatus.TIMEOUT)
        self.assertIn("deadline", r.message)
        self.assertLess(r.boot_ms + r.exec_ms, 2000)

    @defer.inlineCallbacks
    def test_memory_limit(self):
        """A call past its memory limit is MEMORY."""
        pkg = self.make_package({"main.py": "def handler(e, c):\n    return len(bytearray(512 * 1024 * 1024))\n"})
        r = yield self.call(pkg, memory_mb=128)
        self.assert_memory_verdict(r, 128)

    @defer.inlineCallbacks
    def test_output_cap(self):
        """Output past the cap is OUTPUT_TOO_LARGE."""
        cap = self.executor.config.output_max_bytes
        pkg = self.make_package({"main.py": f"def handler(e, c):\n    return b'x' * {cap + 1}\n",
                                 "fits.py": f"def handler(e, c):\n    return b'x' * {cap}\n"})
        r = yield self.call(pkg)
        ok = yield self.call(pkg, "fits.py")
        self.assertEqual(r.status, ResultStatus.OUTPUT_TOO_LARGE)
        self.assertEqual(r.output, b"")
        self.assertEqual((ok.status, len(ok.output)), (ResultStatus.OK, cap))

    @defer.inlineCallbacks
    def test_log_is_capped_not_fatal(self):
        """A huge log is truncated with a note; the call still succeeds."""
        cap = self.executor.config.log_max_bytes
        pkg = self.make_package({"main.py": f"import sys\ndef handler(e, c):\n    sys.stderr.write('y' * {cap * 4})\n    return 'done'\n"})
        r = yield self.call(pkg)
        self.assertEqual((r.status, r.output), (ResultStatus.OK, b"done"))
        self.assertLessEqual(len(r.log), cap)
        self.assertIn(b"log truncated", r.log)

    @defer.inlineCallbacks
    def test_seccomp_kills_a_forbidden_syscall(self):
        """A forbidden syscall is KILLED_BY_POLICY, named from the kernel's notification."""
        pkg = self.make_package({"main.py": "import socket\ndef handler(e, c):\n    socket.socket()\n"})
        r = yield self.call(pkg)
        self.assertEqual(r.status, ResultStatus.KILLED_BY_POLICY)
        self.assertEqual(r.message, "seccomp stopped forbidden syscall socket")

    @defer.inlineCallbacks
    def test_threads_are_allowed(self):
        """Threads work."""
        pkg = self.make_package({"main.py": (
            "import threading\n"
            "def handler(e, c):\n"
            "    out = []\n"
            "    ts = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]\n"
            "    [t.start() for t in ts]; [t.join() for t in ts]\n"
            "    return sorted(out)\n")})
        r = yield self.call(pkg)
        self.assertEqual((r.status, json.loads(r.output)), (ResultStatus.OK, [0, 1, 2, 3]))

    @defer.inlineCallbacks
    def test_host_files_cannot_be_named(self):
        """Host files such as /etc/passwd do not exist inside."""
        pkg = self.make_package({"main.py": "def handler(e, c):\n    return open('/etc/passwd').read()\n"})
        r = yield self.call(pkg)
        self.assertEqual(r.status, ResultStatus.ERROR)
        self.assertIn(b"FileNotFoundError", r.log)


class ReuseTests(JailTestCase):
    COUNTER = "n = 0\ndef handler(e, c):\n    global n\n    n += 1\n    return n\n"

    @defer.inlineCallbacks
    def test_per_call_is_isolated_per_function_keeps_state(self):
        """per-call starts fresh each time; per-function keeps module state."""
        pkg = self.make_package({"main.py": self.COUNTER})
        per_call, warm = [], []
        for _ in range(3):
            per_call.append((yield self.call(pkg)).output)
        for _ in range(3):
            warm.append((yield self.call(pkg, reuse="per-function")).output)
        self.assertEqual(per_call, [b"1", b"1", b"1"])
        self.assertEqual(warm, [b"1", b"2", b"3"])

    @defer.inlineCallbacks
    def test_warm_worker_errors_and_recovers_after_timeout(self):
        """A warm worker reports errors and is replaced after a timeout."""
        pkg = self.make_package({"main.py": (
            "import time\n"
            "def handler(e, c):\n"
            "    if e == b'raise': raise KeyError('boom')\n"
            "    if e == b'hang': time.sleep(60)\n"
            "    print('log for', e)\n"
            "    return e\n")})
        r1 = yield self.call(pkg, data=b"a", reuse="per-function")
        r2 = yield self.call(pkg, data=b"raise", reuse="per-function")
        r3 = yield self.call(pkg, data=b"hang", reuse="per-function", timeout=0.5)
        r4 = yield self.call(pkg, data=b"b", reuse="per-function")
        self.assertEqual((r1.status, r1.output, r1.log), (ResultStatus.OK, b"a", b"log for b'a'\n"))
        self.assertEqual(r2.status, ResultStatus.ERROR)
        self.assertIn(b"KeyError: 'boom'", r2.log)
        self.assertEqual(r3.status, ResultStatus.TIMEOUT)
        self.assertEqual((r4.status, r4.output), (ResultStatus.OK, b"b"))

    @defer.inlineCallbacks
    def test_warm_worker_policy_kill(self):
        """A warm worker's forbidden syscall is KILLED_BY_POLICY."""
        pkg = self.make_package({"main.py": "import os\ndef handler(e, c):\n    os.fork()\n"})
        r = yield self.call(pkg, reuse="per-function")
        self.assertEqual(r.status, ResultStatus.KILLED_BY_POLICY)
        self.assertIn("forbidden syscall", r.message)

    @defer.inlineCallbacks
    def test_warm_worker_output_cap(self):
        """A warm worker's oversized output is OUTPUT_TOO_LARGE."""
        cap = self.executor.config.output_max_bytes
        pkg = self.make_package({"main.py": f"def handler(e, c):\n    return b'z' * {cap + 10}\n"})
        r = yield self.call(pkg, reuse="per-function")
        self.assertEqual(r.status, ResultStatus.OUTPUT_TOO_LARGE)


class ExecRuntimeTests(JailTestCase):
    @defer.inlineCallbacks
    def test_shell_script_echoes_stdin(self):
        """An exec shell script reads its input on stdin and answers on stdout."""
        pkg = self.make_package({"main": "#!/bin/sh\nread line\necho \"got $line\"\n"})
        r = yield self.call(pkg, "main", data=b"abc\n", runtime="exec")
        self.assertEqual((r.status, r.output), (ResultStatus.OK, b"got abc\n"), r)

    @defer.inlineCallbacks
    def test_python_script_and_exit_code(self):
        """An exec python script's output and non-zero exit come back."""
        pkg = self.make_package({
            "ok": "#!/usr/bin/python3\nimport sys\nsys.stdout.write(sys.stdin.read().upper())\n",
            "fail": "#!/usr/bin/python3\nimport sys\nprint('oops', file=sys.stderr)\nsys.exit(3)\n"})
        ok = yield self.call(pkg, "ok", data=b"shout", runtime="exec")
        fail = yield self.call(pkg, "fail", runtime="exec")
        self.assertEqual((ok.status, ok.output), (ResultStatus.OK, b"SHOUT"), ok)
        self.assertEqual(fail.status, ResultStatus.ERROR)
        self.assertIn("status 3", fail.message)
        self.assertIn(b"oops", fail.log)

    @defer.inlineCallbacks
    def test_elf_binary_large_stdin(self):
        """An ELF binary reads a large stdin."""
        import shutil

        pkg = self.make_package({})
        shutil.copy("/bin/cat", os.path.join(pkg, "main"))
        data = os.urandom(700 * 1024)
        r = yield self.call(pkg, "main", data=data, runtime="exec")
        self.assertEqual((r.status, r.output), (ResultStatus.OK, data))

    @defer.inlineCallbacks
    def test_elf_binary(self):
        """An ELF binary runs."""
        import shutil

        pkg = self.make_package({})
        shutil.copy("/bin/cat", os.path.join(pkg, "main"))
        r = yield self.call(pkg, "main", data=b"through a dynamic ELF", runtime="exec")
        self.assertEqual((r.status, r.output), (ResultStatus.OK, b"through a dynamic ELF"), r)

    @defer.inlineCallbacks
    def test_interpreter_not_on_allowlist(self):
        """A script whose interpreter is not allowlisted is refused before running."""
        pkg = self.make_package({"main": "#!/usr/bin/env python3\nprint(1)\n"})
        r = yield self.call(pkg, "main", runtime="exec")
        self.assertEqual(r.status, ResultStatus.ERROR)
        self.assertIn("allowlist", r.message)

    @defer.inlineCallbacks
    def test_exec_cannot_run_other_binaries(self):
        """An exec program cannot run binaries outside its package."""
        pkg = self.make_package({"main": "#!/usr/bin/python3\nimport os\nos.execv('/bin/ls', ['ls'])\n"})
        r = yield self.call(pkg, "main", runtime="exec")
        self.assertEqual(r.status, ResultStatus.ERROR)
        self.assertIn(b"PermissionError", r.log)

    @defer.inlineCallbacks
    def test_exec_seccomp_still_applies(self):
        """The exec runtime is still under seccomp."""
        pkg = self.make_package({
            "sock": "#!/usr/bin/python3\nimport socket\nsocket.socket()\n",
            "fork": "#!/usr/bin/python3\nimport os\nos.fork()\n"})
        sock = yield self.call(pkg, "sock", runtime="exec")
        fork = yield self.call(pkg, "fork", runtime="exec")
        self.assertEqual(sock.status, ResultStatus.ERROR)
        self.assertIn(b"PermissionError", sock.log)
        self.assertEqual(fork.status, ResultStatus.KILLED_BY_POLICY)

    @defer.inlineCallbacks
    def test_exec_memory(self):
        """An exec program past its memory limit ends MEMORY (cgroup OOM), or ERROR naming the limit without one."""
        pkg = self.make_package({"main": "#!/usr/bin/python3\nx = bytearray(1 << 30)\n"})
        r = yield self.call(pkg, "main", runtime="exec", memory_mb=128)
        self.assert_memory_verdict(r, 128)
        if r.status == ResultStatus.ERROR:
            self.assertIn(b"MemoryError", r.log)

    @defer.inlineCallbacks
    def test_exec_timeout(self):
        """An exec program past its deadline is TIMEOUT."""
        pkg = self.make_package({"main": "#!/bin/sh\nwhile :; do :; done\n"})
        r = yield self.call(pkg, "main", runtime="exec", timeout=0.5)
        self.assertEqual(r.status, ResultStatus.TIMEOUT)


class BusyTests(JailTestCase):
    config = {"max_concurrent": 1, "max_queue": 1}

    @defer.inlineCallbacks
    def test_busy_when_queue_full_and_queue_time_reported(self):
        """A full queue gives BUSY, and queued calls report their wait."""
        pkg = self.make_package({"main.py": "import time\ndef handler(e, c):\n    time.sleep(0.3)\n    return e\n"})
        ds = [self.call(pkg, data=b"%d" % i) for i in range(3)]
        third = yield ds[2]
        first = yield ds[0]
        second = yield ds[1]
        self.assertEqual(third.status, ResultStatus.BUSY)
        self.assertEqual((first.status, second.status), (ResultStatus.OK, ResultStatus.OK))
        self.assertGreater(second.queue_ms, 200)


class ZygoteCrashTests(JailTestCase):
    @defer.inlineCallbacks
    def test_killed_zygote_fails_calls_restarts_and_leaves_nothing(self):
        """A killed zygote fails its calls INTERNAL, takes its children with it, and is replaced."""
        import signal

        from twisted.internet import reactor, task

        pkg = self.make_package({"main.py": "import time\ndef handler(e, c):\n    time.sleep(30)\n",
                                 "ok.py": "def handler(e, c):\n    return 'ok'\n"})
        old_pid = self.hello["pid"]
        old_root = self.hello["scratch_root"]
        old_cgroups = self.hello.get("cgroup_dirs", [])
        hanging = self.call(pkg, timeout=30)
        yield task.deferLater(reactor, 0.3, lambda: None)
        jailed = self.zygote_children()
        self.assertEqual(len(jailed), 1)
        os.kill(old_pid, signal.SIGKILL)
        r = yield hanging
        self.assertEqual(r.status, ResultStatus.INTERNAL)
        self.assertIn("zygote", r.message)
        self.assertFalse(os.path.exists(old_root))
        # PDEATHSIG: the jailed child died with its zygote.
        for _ in range(100):
            if not os.path.exists(f"/proc/{jailed[0]}"):
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertFalse(os.path.exists(f"/proc/{jailed[0]}"))
        # The executor restarts the zygote (after restart_delay_s) and serves again.
        after = yield self.call(pkg, "ok.py")
        self.assertEqual((after.status, after.output), (ResultStatus.OK, b"ok"))
        # The dead zygote's cgroups go too, once its children are gone.
        for _ in range(200):
            if not any(os.path.exists(d) for d in old_cgroups):
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertEqual([d for d in old_cgroups if os.path.exists(d)], [])
        self.flushLoggedErrors()


class CgroupTests(JailTestCase):
    """Per-call cgroups, where the host lets the peer make them."""

    def setUp(self):
        d = super().setUp()

        def check(_):
            if not self.executor.layers.get("cgroup"):
                reason = self.executor.layers and self.hello["notes"].get("cgroup", "")
                print(f"\nSKIP cgroup tests: {reason}")
                raise SkipTest(f"no writable memory and pids cgroup here: {reason}")
        return d.addCallback(check)

    def cgroup_of(self, pid: int) -> dict:
        with open(f"/proc/{pid}/cgroup") as f:
            out = {}
            for line in f:
                _hid, names, path = line.rstrip("\n").split(":", 2)
                for name in names.split(",") or [""]:
                    out[name] = path
            return out

    @defer.inlineCallbacks
    def test_a_call_runs_in_its_own_cgroup_removed_after_it(self):
        """A running call sits in its own memory and pids cgroup, limited to its call, gone once it ends."""
        from twisted.internet import reactor, task

        pkg = self.make_package({"main.py": "import time\ndef handler(e, c):\n    time.sleep(1)\n"})
        running = self.call(pkg, memory_mb=96, timeout=5)
        yield task.deferLater(reactor, 0.5, lambda: None)
        jailed = self.zygote_children()
        self.assertEqual(len(jailed), 1)
        groups = self.cgroup_of(jailed[0])
        dirs = []
        for parent in self.hello["cgroup_dirs"]:
            mount = "memory" if "/memory" in parent else "pids"
            leaf = "/sys/fs/cgroup/" + mount + groups[mount]
            self.assertTrue(leaf.startswith(parent + "/"), (leaf, parent))
            dirs.append(leaf)
            if mount == "memory":
                with open(leaf + "/memory.limit_in_bytes") as f:
                    self.assertEqual(int(f.read()), 96 * 1024 * 1024)
            else:
                with open(leaf + "/pids.max") as f:
                    self.assertEqual(int(f.read()), self.executor.config.max_tasks)
        r = yield running
        self.assertEqual(r.status, ResultStatus.OK)
        for _ in range(100):
            if not any(os.path.exists(d) for d in dirs):
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertEqual([d for d in dirs if os.path.exists(d)], [])

    @defer.inlineCallbacks
    def test_stop_removes_every_cgroup(self):
        """After the executor stops, none of its cgroups is left on the host."""
        pkg = self.make_package({"main.py": "def handler(e, c):\n    return 'ok'\n"})
        for _ in range(3):
            r = yield self.call(pkg)
            self.assertEqual(r.status, ResultStatus.OK)
        dirs = self.hello["cgroup_dirs"]
        self.assertTrue(dirs)
        yield self.executor.stop()
        self.assertEqual([d for d in dirs if os.path.exists(d)], [])


class WithoutRootOptOutTests(JailTestCase):
    """The operator's opt-out with the minimal root switched off: calls still
    run, in a scratch dir of their own on the host, under their own identity."""

    config = {"disable_layers": ("root",), "allow_unconfined": True}

    @defer.inlineCallbacks
    def test_call_runs_in_a_host_scratch_dir(self):
        """Without the root layer (opted out) a call runs with a fresh scratch dir as its cwd."""
        import shutil
        import tempfile

        # The host's paths are the function's now: a package its uid can reach.
        pkg = tempfile.mkdtemp(prefix="orb-test-pkg-")
        self.addCleanup(shutil.rmtree, pkg, True)
        os.chmod(pkg, 0o755)
        with open(os.path.join(pkg, "main.py"), "w") as f:
            f.write(SCRATCH)
        os.chmod(os.path.join(pkg, "main.py"), 0o644)
        r = yield self.call(pkg)
        self.assertEqual(r.status, ResultStatus.OK, r)
        got = json.loads(r.output)
        self.assertEqual(got["before"], [])
        self.assertTrue(got["cwd"].startswith(self.hello["scratch_root"]), got)
        self.flushLoggedErrors()


class MissingLayerTests(JailTestCase):
    """A layer that is not there, on a real kernel (switched off here)."""

    config = {"disable_layers": ("pidns",)}

    @defer.inlineCallbacks
    def test_missing_layer_refuses_naming_it(self):
        """With a required layer missing, untrusted code is REFUSED and the message names the layer."""
        self.assertEqual(self.hello["missing"], ["pidns"])
        pkg = self.make_package({"main.py": "def handler(e, c):\n    return 'ran'\n"})
        r = yield self.call(pkg)
        self.assertEqual(r.status, ResultStatus.REFUSED)
        self.assertIn("pidns", r.message)
        self.assertEqual(r.output, b"")


class KillProcessFallbackTests(JailTestCase):
    """Without seccomp user notification (an old kernel, simulated here)."""

    config = {"disable_layers": ("seccomp_notify",)}

    @defer.inlineCallbacks
    def test_forbidden_syscall_still_kills_without_a_name(self):
        """Without user notification a forbidden syscall is still KILLED_BY_POLICY, unnamed."""
        self.assertEqual(self.hello["missing"], [])
        pkg = self.make_package({"main.py": "import socket\ndef handler(e, c):\n    socket.socket()\n"})
        r = yield self.call(pkg)
        self.assertEqual((r.status, r.message),
                         (ResultStatus.KILLED_BY_POLICY, "seccomp stopped a forbidden syscall"))


class WarmFreezeTests(JailTestCase):
    """A warm call lasts until the kernel reports its worker stopped again."""

    config = {"heartbeat_s": 60.0, "grace_s": 1.0}

    @defer.inlineCallbacks
    def test_answer_without_a_confirmed_stop_is_a_timeout(self):
        """A warm worker that answers but is not seen frozen by its deadline ends TIMEOUT, not OK."""
        import signal

        pkg = self.make_package({"main.py": "def handler(e, c):\n    return e\n"})
        first = yield self.call(pkg, data=b"warm", reuse="per-function")
        self.assertEqual((first.status, first.output), (ResultStatus.OK, b"warm"))
        old = self.hello["pid"]
        with open(f"/proc/{old}/task/{old}/children") as f:
            kids = [int(k) for k in f.read().split()]
        template = [k for k in kids if open(f"/proc/{k}/comm").read().strip() == "orb-template"]
        self.assertEqual(len(template), 1)
        # The template (the worker's parent, which sees it stop) cannot report.
        os.kill(template[0], signal.SIGSTOP)
        self.addCleanup(lambda: os.path.exists(f"/proc/{template[0]}")
                        and os.kill(template[0], signal.SIGCONT))
        r = yield self.call(pkg, data=b"again", reuse="per-function", timeout=1.0)
        self.assertEqual(r.status, ResultStatus.TIMEOUT, r)
        self.flushLoggedErrors()


class HungZygoteTests(JailTestCase):
    config = {"heartbeat_s": 0.5, "restart_delay_s": 0.2}

    @defer.inlineCallbacks
    def replaced(self, old_pid):
        """Wait until a new zygote serves. (A call sent in the moment between the old zygote's
        death and the executor noticing it is lost with INTERNAL, as a call in flight is.)"""
        from twisted.internet import reactor, task

        from orb.exec._executor import ExecutorState

        for _ in range(500):
            pid = self.executor.zygote_pid
            if self.executor.state is ExecutorState.READY and pid not in (None, old_pid):
                return
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.fail(f"the executor is {self.executor.state.value}, with no new zygote serving")

    @defer.inlineCallbacks
    def test_stopped_zygote_is_replaced(self):
        """A zygote that hangs (here: stopped) is replaced; the call in flight ends INTERNAL."""
        import signal

        pkg = self.make_package({"main.py": "import time\ndef handler(e, c):\n    time.sleep(5)\n",
                                 "ok.py": "def handler(e, c):\n    return 'ok'\n"})
        hanging = self.call(pkg, timeout=30)
        os.kill(self.hello["pid"], signal.SIGSTOP)
        r = yield hanging
        self.assertEqual(r.status, ResultStatus.INTERNAL)
        self.assertIn("heartbeat", r.message)
        after = yield self.call(pkg, "ok.py")
        self.assertEqual((after.status, after.output), (ResultStatus.OK, b"ok"))
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_killed_template_replaces_the_zygote(self):
        """If the template that forks children dies, the zygote is replaced and calls work again."""
        import signal

        from twisted.internet import reactor, task

        pkg = self.make_package({"ok.py": "def handler(e, c):\n    return 'ok'\n"})
        first = yield self.call(pkg, "ok.py")
        self.assertEqual(first.status, ResultStatus.OK)
        old = self.hello["pid"]
        with open(f"/proc/{old}/task/{old}/children") as f:
            kids = [int(k) for k in f.read().split()]
        template = [k for k in kids if open(f"/proc/{k}/comm").read().strip() == "orb-template"]
        self.assertEqual(len(template), 1)
        os.kill(template[0], signal.SIGKILL)
        for _ in range(200):
            if not os.path.exists(f"/proc/{old}"):
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertFalse(os.path.exists(f"/proc/{old}"), "the zygote outlived its template")
        yield self.replaced(old)
        after = yield self.call(pkg, "ok.py")
        self.assertEqual((after.status, after.output), (ResultStatus.OK, b"ok"))
        self.flushLoggedErrors()


    @defer.inlineCallbacks
    def test_stopped_template_replaces_the_zygote(self):
        """A template that hangs (here: stopped) stops the heartbeat, so the zygote is replaced."""
        import signal

        from twisted.internet import reactor, task

        pkg = self.make_package({"ok.py": "def handler(e, c):\n    return 'ok'\n"})
        old = self.hello["pid"]
        for _ in range(100):  # the template names itself a moment after its fork
            with open(f"/proc/{old}/task/{old}/children") as f:
                kids = [int(k) for k in f.read().split()]
            template = [k for k in kids if open(f"/proc/{k}/comm").read().strip() == "orb-template"]
            if template:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        os.kill(template[0], signal.SIGSTOP)
        for _ in range(250):
            if not os.path.exists(f"/proc/{old}"):
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertFalse(os.path.exists(f"/proc/{old}"), "a zygote with a hung template lived on")
        yield self.replaced(old)
        after = yield self.call(pkg, "ok.py")
        self.assertEqual((after.status, after.output), (ResultStatus.OK, b"ok"))
        self.flushLoggedErrors()


class PythonRuntimeDirectForkTests(PythonRuntimeTests):
    """The python runtime again with no pre-forked spare (memfd input, the
    full seccomp policy loaded by the child itself)."""

    config = {"prefork": False}
