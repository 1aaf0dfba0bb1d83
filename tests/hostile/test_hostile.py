"""
The hostile-function suite: each attack is a real function in
``functions/`` run through the real executor.  For each one we check

- the result code and a message a person can act on;
- that the host kept serving: a benign call started while the attack runs,
  and another one after it, both return OK;
- that a checksum of a fake peer data dir (with a 0600 key file) is the
  same before and after, and nothing appeared outside scratch;
- that the attack left no process behind.
"""

import json
import os

from twisted.internet import defer

from orb.protocol.codes import ResultStatus

from ._support import JailTestCase, make_fake_data_dir, tree_checksum

FUNCTIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "functions")
POLICY = ResultStatus.KILLED_BY_POLICY


class HostileTests(JailTestCase):
    config = {"max_concurrent": 2, "memory_mb": 256, "scratch_max_bytes": 8 * 1024 * 1024}

    def setUp(self):
        d = super().setUp()
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.data_dir, self.key = make_fake_data_dir(base)
        self.outside = os.path.join(base, "outside")
        os.makedirs(self.outside)
        self.before = tree_checksum(self.data_dir)
        self.event = json.dumps({"data_dir": self.data_dir, "key": self.key, "outside": self.outside,
                                 "peer_pid": os.getpid()}).encode()
        return d

    @defer.inlineCallbacks
    def attack(self, entry, status, message_part=None, log_part=None, timeout=5.0):
        hostile = self.call(FUNCTIONS, entry, data=self.event, timeout=timeout, request_id=entry)
        during = yield self.call(FUNCTIONS, "benign.py", timeout=5.0)
        result = yield hostile
        after = yield self.call(FUNCTIONS, "benign.py", timeout=5.0)
        self.assertEqual(result.status, status, f"{entry}: {result}")
        if message_part is not None:
            self.assertIn(message_part, result.message)
        if log_part is not None:
            parts = log_part if isinstance(log_part, tuple) else (log_part,)
            self.assertTrue(any(p in result.log for p in parts), f"{entry}: log {result.log[-500:]!r}")
        for benign in (during, after):
            self.assertEqual((benign.status, benign.output), (ResultStatus.OK, b"still serving"))
        self.assertEqual(tree_checksum(self.data_dir), self.before, "the peer's data dir changed")
        with open(self.key, "rb") as f:
            self.assertTrue(f.read().startswith(b"FAKE-ED25519-SECRET-KEY-"))
        self.assertEqual(oct(os.stat(self.key).st_mode & 0o777), oct(0o600))
        self.assertEqual(os.listdir(self.outside), [])
        self.assertFalse(os.path.exists("/tmp/orb-hostile-evil"))
        self.assertFalse(os.path.exists("/tmp/orb-hostile-sh"))
        yield self.assert_no_leftovers()
        os.kill(self.hello["pid"], 0)  # the zygote is alive
        return result

    # -- network -------------------------------------------------------------

    def test_tcp_socket(self):
        return self.attack("net_tcp.py", POLICY, "forbidden syscall")

    def test_udp_socket(self):
        return self.attack("net_udp.py", POLICY, "forbidden syscall")

    def test_unix_socket(self):
        return self.attack("net_unix.py", POLICY, "forbidden syscall")

    # -- reading host secrets --------------------------------------------------

    def test_read_etc_shadow(self):
        return self.attack("read_shadow.py", ResultStatus.ERROR, log_part=(b"PermissionError", b"FileNotFoundError"))

    def test_read_ssh_dir(self):
        return self.attack("read_ssh.py", ResultStatus.ERROR, log_part=(b"PermissionError", b"FileNotFoundError"))

    def test_read_peer_key(self):
        return self.attack("read_peer_key.py", ResultStatus.ERROR, log_part=(b"PermissionError", b"FileNotFoundError"))

    def test_read_peer_data_dir(self):
        return self.attack("read_data_dir.py", ResultStatus.ERROR, log_part=(b"PermissionError", b"FileNotFoundError"))

    # -- writing outside scratch -------------------------------------------------

    def test_write_outside_scratch(self):
        return self.attack("write_outside.py", ResultStatus.ERROR,
                           log_part=b"every write outside scratch was denied")

    def test_symlink_and_dotdot_escape(self):
        return self.attack("symlink_escape.py", ResultStatus.ERROR,
                           log_part=b"every escape from scratch was denied")

    def test_fill_disk_in_scratch(self):
        return self.attack("fill_disk.py", ResultStatus.ERROR,
                           log_part=(b"No space left on device", b"File too large"))

    # -- processes ---------------------------------------------------------------

    def test_fork_bomb(self):
        return self.attack("fork_bomb.py", POLICY, "forbidden syscall")

    @defer.inlineCallbacks
    def test_thread_bomb_within_limits(self):
        r = yield self.attack("thread_bomb.py", ResultStatus.ERROR, log_part=b"can't start new thread")
        self.assertIn(b"threads: 10", r.log)  # threads work; the address-space limit bounds them

    def test_memory_bomb(self):
        return self.attack("memory_bomb.py", ResultStatus.MEMORY, "memory limit")

    def test_infinite_cpu_loop(self):
        return self.attack("cpu_loop.py", ResultStatus.TIMEOUT, "deadline", timeout=1.0)

    def test_sleep_forever(self):
        return self.attack("sleep_forever.py", ResultStatus.TIMEOUT, "deadline", timeout=1.0)

    def test_100mb_result(self):
        return self.attack("big_stdout.py", ResultStatus.OUTPUT_TOO_LARGE, "cap")

    def test_100mb_raw_stdout(self):
        return self.attack("raw_stdout.py", ResultStatus.OUTPUT_TOO_LARGE, "cap")

    def test_exec_bin_sh(self):
        return self.attack("exec_sh.py", POLICY, "forbidden syscall")

    @defer.inlineCallbacks
    def test_subprocess_shell(self):
        # _posixsubprocess blocks every signal around vfork(); a forced SIGSYS
        # then kills with the default action before the reporter can name
        # the syscall, so the message only says seccomp stopped it.
        r = yield self.attack("subprocess_sh.py", POLICY)
        self.assertIn("seccomp stopped", r.message)

    def test_ptrace_parent(self):
        return self.attack("ptrace_parent.py", POLICY, "forbidden syscall")

    def test_kill_parent_peer(self):
        return self.attack("kill_parent.py", POLICY, "forbidden syscall")

    def test_background_child(self):
        return self.attack("background_child.py", POLICY, "forbidden syscall")

    @defer.inlineCallbacks
    def test_background_thread_dies_with_the_call(self):
        r = yield self.attack("background_thread.py", ResultStatus.OK)
        self.assertEqual(r.output, b"answered, thread still running")
        self.assertLess(r.exec_ms, 1000)

    def test_escape_process_group(self):
        return self.attack("escape_pgroup.py", POLICY, "forbidden syscall")

    def test_new_user_namespace(self):
        return self.attack("unshare_ns.py", POLICY, "forbidden syscall")


class HostileWarmWorkerTests(HostileTests):
    """The same attacks against a warm per-function worker."""

    def call(self, pkg, entry="main.py", reuse="per-call", **kw):
        if entry != "benign.py":
            reuse = "per-function"
        return super().call(pkg, entry, reuse=reuse, **kw)

    def zygote_children(self):
        return []  # warm workers stay alive by design

    @defer.inlineCallbacks
    def test_background_thread_dies_with_the_call(self):
        r = yield self.attack("background_thread.py", ResultStatus.OK)
        self.assertEqual(r.output, b"answered, thread still running")


class HostileDirectForkTests(HostileTests):
    """The same attacks with no pre-forked spare: every child is forked for
    its call and loads the full seccomp policy itself."""

    config = dict(HostileTests.config, prefork=False)
