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

from orb.exec import RuntimeSpec

from ._support import JailTestCase, make_fake_data_dir, tree_checksum

FUNCTIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "functions")
POLICY = ResultStatus.KILLED_BY_POLICY
# Refused (Landlock, not the owner), or not even there (pivot_root).
UNREADABLE = (b"PermissionError", b"FileNotFoundError")


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
    def attack(self, entry, status, message_part=None, log_part=None, timeout=5.0, pkg=FUNCTIONS,
               data=None, runtime="python", workers_left=False):
        data = self.event if data is None else data
        hostile = self.call(pkg, entry, data=data, timeout=timeout, request_id=entry,
                            runtime=runtime)
        during = yield self.call(FUNCTIONS, "benign.py", timeout=5.0)
        result = yield hostile
        after = yield self.call(FUNCTIONS, "benign.py", timeout=5.0)
        if status is not None:  # None: the caller checks the status itself
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
        if not workers_left:
            yield self.assert_no_leftovers()
        os.kill(self.hello["pid"], 0)  # the zygote is alive
        return result

    # -- network -------------------------------------------------------------

    def test_tcp_socket(self):
        """A TCP socket ends the call as KILLED_BY_POLICY."""
        return self.attack("net_tcp.py", POLICY, "forbidden syscall socket")

    def test_udp_socket(self):
        """A UDP socket ends the call as KILLED_BY_POLICY."""
        return self.attack("net_udp.py", POLICY, "forbidden syscall socket")

    def test_unix_socket(self):
        """A unix socket ends the call as KILLED_BY_POLICY."""
        return self.attack("net_unix.py", POLICY, "forbidden syscall socket")

    # -- reading host secrets --------------------------------------------------

    def test_read_etc_shadow(self):
        """/etc/shadow cannot be read (or even named) from inside."""
        return self.attack("read_shadow.py", ResultStatus.ERROR, log_part=UNREADABLE)

    def test_read_ssh_dir(self):
        """~/.ssh cannot be read (or even named) from inside."""
        return self.attack("read_ssh.py", ResultStatus.ERROR, log_part=UNREADABLE)

    def test_read_peer_key(self):
        """The peer's node key cannot be read (or even named) from inside."""
        return self.attack("read_peer_key.py", ResultStatus.ERROR, log_part=UNREADABLE)

    def test_read_peer_data_dir(self):
        """The peer's data dir cannot be listed or read from inside."""
        return self.attack("read_data_dir.py", ResultStatus.ERROR, log_part=UNREADABLE)

    # -- writing outside scratch -------------------------------------------------

    def test_write_outside_scratch(self):
        """Every write outside scratch is refused: data dir, key, root, runtime, package."""
        return self.attack("write_outside.py", ResultStatus.ERROR,
                           log_part=b"every write outside scratch was denied")

    def test_symlink_and_dotdot_escape(self):
        """Symlinks and .. out of scratch reach nothing."""
        return self.attack("symlink_escape.py", ResultStatus.ERROR,
                           log_part=b"every escape from scratch was denied")

    def test_fill_disk_in_scratch(self):
        """Filling scratch stops at its size cap with an error, not a full host disk."""
        return self.attack("fill_disk.py", ResultStatus.ERROR,
                           log_part=(b"No space left on device", b"File too large"))

    # -- processes ---------------------------------------------------------------

    def test_fork_bomb(self):
        """A fork bomb is killed at its first fork."""
        return self.attack("fork_bomb.py", POLICY, "forbidden syscall clone")

    @defer.inlineCallbacks
    def test_thread_bomb_within_limits(self):
        """Threads work, and the limits bound how many."""
        r = yield self.attack("thread_bomb.py", ResultStatus.ERROR, log_part=b"can't start new thread")
        self.assertIn(b"threads: 10", r.log)  # threads work; the address-space limit bounds them

    @defer.inlineCallbacks
    def test_memory_bomb(self):
        """A memory bomb ends as MEMORY (the cgroup's OOM kill), or ERROR naming the limit without a cgroup."""
        r = yield self.attack("memory_bomb.py", None)
        self.assert_memory_verdict(r, 256)

    @defer.inlineCallbacks
    def test_shared_memory_counts_against_the_limit(self):
        """Shared anonymous mappings count against the memory limit: MEMORY, or ERROR without a cgroup."""
        r = yield self.attack("shared_memory_bomb.py", None)
        self.assert_memory_verdict(r, 256)

    def test_forged_memory_exit_is_an_error(self):
        """A function exiting with the old MEMORY code (3) gets ERROR: only the kernel's OOM kill is MEMORY."""
        return self.attack("forge_memory_exit.py", ResultStatus.ERROR, "exited with status 3")

    def test_forged_memory_sys_exit_is_an_error(self):
        """sys.exit(3) from a handler gets ERROR, not MEMORY."""
        return self.attack("forge_memory_exit.py", ResultStatus.ERROR, data=b"sys.exit")

    def test_infinite_cpu_loop(self):
        """An endless CPU loop ends as TIMEOUT at the deadline."""
        return self.attack("cpu_loop.py", ResultStatus.TIMEOUT, "deadline", timeout=1.0)

    def test_sleep_forever(self):
        """A call that sleeps forever ends as TIMEOUT at the deadline."""
        return self.attack("sleep_forever.py", ResultStatus.TIMEOUT, "deadline", timeout=1.0)

    def test_100mb_result(self):
        """A 100 MB return value ends as OUTPUT_TOO_LARGE."""
        return self.attack("big_stdout.py", ResultStatus.OUTPUT_TOO_LARGE, "cap")

    def test_100mb_raw_stdout(self):
        """100 MB written straight to stdout ends as OUTPUT_TOO_LARGE."""
        return self.attack("raw_stdout.py", ResultStatus.OUTPUT_TOO_LARGE, "cap")

    def test_exec_bin_sh(self):
        """execve of /bin/sh from python ends the call as KILLED_BY_POLICY."""
        return self.attack("exec_sh.py", POLICY, "forbidden syscall execve")

    @defer.inlineCallbacks
    def test_subprocess_shell(self):
        # _posixsubprocess blocks every signal around vfork(); a forced SIGSYS
        # then kills with the default action before the reporter can name
        # the syscall, so the message only says seccomp stopped it.
        """subprocess (fork + exec) ends the call as KILLED_BY_POLICY."""
        r = yield self.attack("subprocess_sh.py", POLICY)
        self.assertIn("seccomp stopped", r.message)

    def test_ptrace_parent(self):
        """ptrace of the parent ends the call as KILLED_BY_POLICY."""
        return self.attack("ptrace_parent.py", POLICY, "forbidden syscall ptrace")

    def test_kill_parent_peer(self):
        """Signalling the peer ends the call as KILLED_BY_POLICY."""
        return self.attack("kill_parent.py", POLICY, "forbidden syscall kill")

    def test_background_child(self):
        """A background child process is killed at its fork."""
        return self.attack("background_child.py", POLICY, "forbidden syscall clone")

    @defer.inlineCallbacks
    def test_background_thread_dies_with_the_call(self):
        """A thread left running dies with the call; the answer is not delayed."""
        r = yield self.attack("background_thread.py", ResultStatus.OK)
        self.assertEqual(r.output, b"answered, thread still running")
        self.assertLess(r.exec_ms, 1000)

    def test_escape_process_group(self):
        """setsid to escape the process group ends the call as KILLED_BY_POLICY."""
        return self.attack("escape_pgroup.py", POLICY, "forbidden syscall setsid")

    def test_new_user_namespace(self):
        """unshare of a new user namespace ends the call as KILLED_BY_POLICY."""
        return self.attack("unshare_ns.py", POLICY, "forbidden syscall unshare")


    # -- tenants cannot see each other (issue 8) ---------------------------------

    @defer.inlineCallbacks
    def test_cross_tenant_heap_and_objects(self):
        """A tenant that scans its whole heap and every object finds no other tenant's secret."""
        secret = b"ORB-SECRET-" + os.urandom(16).hex().encode()
        own = b"ORB-SECRET-" + os.urandom(16).hex().encode()
        spec_warm = RuntimeSpec(runtime="python", entry="keep_secret.py", reuse="per-function")
        spec_once = RuntimeSpec(runtime="python", entry="keep_secret.py")
        for spec in (spec_warm, spec_once):  # a warm worker keeps it while B scans
            r = yield self.executor.invoke("tenant-a", FUNCTIONS, spec, secret, deadline_s=5)
            self.assertEqual((r.status, r.output), (ResultStatus.OK, b"echo " + secret))
        r = yield self.attack("heap_scan.py", ResultStatus.OK, timeout=20.0, data=own,
                              workers_left=True)
        got = json.loads(r.output)
        # The scanner works (it finds the copy of its own input)...
        self.assertIn(own.decode(), got["found"])
        # ...and finds nothing of tenant A.
        self.assertNotIn(secret.decode(), got["found"])
        self.assertLess(got["pages_left"], 120000)

    # -- host file metadata, host paths, mounts, inotify ----------------------------

    def test_host_metadata_chmod_setuid_utime_acl(self):
        """chmod, setuid, utime and ACL writes change no host file; the xattr call is killed."""
        return self.attack("host_metadata.py", POLICY, "forbidden syscall setxattr")

    @defer.inlineCallbacks
    def test_host_paths_cannot_be_named(self):
        """Host paths, /proc and the data dir do not exist inside the jail; its root is minimal."""
        r = yield self.attack("host_probe.py", ResultStatus.OK)
        got = json.loads(r.output)
        self.assertEqual(set(got["seen"].values()), {"No such file or directory"}, got)
        if got["root"] != "Permission denied":  # Landlock may hide the listing itself
            self.assertLessEqual(set(got["root"]), {"usr", "root", "bin", "lib", "lib64", "sbin",
                                                    "lib32", "dev", "pkg", "tmp", "etc"})

    def test_listmount_is_killed(self):
        """listmount(2) ends the call as KILLED_BY_POLICY."""
        return self.attack("listmount.py", POLICY, "forbidden syscall listmount")

    def test_inotify_is_killed(self):
        """inotify on a host directory ends the call as KILLED_BY_POLICY."""
        return self.attack("inotify_watch.py", POLICY, "forbidden syscall inotify_init1")

    # -- other processes -------------------------------------------------------------

    def _aimed(self, attack):
        event = json.dumps(dict(json.loads(self.event), attack=attack)).encode()
        name = {"prlimit": "prlimit64", "sched": "sched_setaffinity", "nice": "setpriority"}[attack]
        return self.attack("target_other.py", POLICY, f"forbidden syscall {name}", data=event)

    def test_prlimit_on_the_peer_is_killed(self):
        """prlimit64 aimed at the peer ends the call as KILLED_BY_POLICY."""
        return self._aimed("prlimit")

    def test_sched_setaffinity_on_the_peer_is_killed(self):
        """sched_setaffinity aimed at the peer ends the call as KILLED_BY_POLICY."""
        return self._aimed("sched")

    def test_setpriority_on_the_peer_is_killed(self):
        """setpriority aimed at the peer ends the call as KILLED_BY_POLICY."""
        return self._aimed("nice")

    @defer.inlineCallbacks
    def test_prlimit_and_priority_on_itself_work(self):
        """A function may lower its own limits and priority."""
        event = json.dumps(dict(json.loads(self.event), attack="self")).encode()
        r = yield self.attack("target_other.py", ResultStatus.OK, data=event)
        self.assertEqual(json.loads(r.output), {"nofile": 32})

    @defer.inlineCallbacks
    def test_cannot_clear_the_parent_death_signal(self):
        """A function cannot clear its parent-death signal to outlive a dead zygote (EPERM)."""
        r = yield self.attack("outlive.py", ResultStatus.OK)
        self.assertEqual(json.loads(r.output), {"result": -1, "errno": 1})

    # -- a compile bomb ----------------------------------------------------------------

    @defer.inlineCallbacks
    def test_compile_bomb_runs_under_the_calls_limits(self):
        """A 1 MB source that needs ~400 MB to compile hits the call's memory limit, in its own child."""
        pkg = os.path.abspath(self.mktemp())
        os.makedirs(pkg)
        with open(os.path.join(pkg, "bomb.py"), "w") as f:
            f.write("x=1\n" * 250000)
        os.chmod(pkg, 0o755)
        r = yield self.attack("bomb.py", None, pkg=pkg, timeout=10.0)
        self.assert_memory_verdict(r, 256)

    # -- forged verdicts and timings -----------------------------------------------------

    @defer.inlineCallbacks
    def test_forged_status_records_and_frames_are_payload(self):
        """Status records and fake frames a function writes change neither its status nor its timings."""
        r = yield self.attack("forge_verdict.py", ResultStatus.OK)
        self.assertEqual(r.message, "")
        self.assertTrue(r.output.endswith(b" fd-writes:[]"), r.output)  # no status fd to write to
        self.assertLess(r.exec_ms, 5000)
        self.assertLess(r.boot_ms, 5000)

    def test_forged_setup_failure_is_an_error(self):
        """A function that claims a jail setup failure gets ERROR with the exit code, not INTERNAL."""
        return self.attack("forge_exit.py", ResultStatus.ERROR, "exited with status 4")

    def test_sigsys_to_itself_is_a_policy_kill(self):
        """Sending itself SIGSYS is a forbidden syscall: the verdict stays truthful."""
        return self.attack("sigsys_self.py", POLICY, "forbidden syscall kill")

    def test_exec_binary_with_its_own_sigsys_handler(self):
        """An exec program that installs a SIGSYS handler is still killed at a forbidden syscall."""
        return self.attack("sigsys_handler.py", POLICY, "forbidden syscall mount", runtime="exec")

    # -- kernel resources ----------------------------------------------------------------

    def test_aio_is_killed(self):
        """io_setup (the host-wide AIO quota) ends the call as KILLED_BY_POLICY."""
        return self.attack("aio.py", POLICY, "forbidden syscall io_setup")

    def test_sysv_shared_memory_is_killed(self):
        """shmget ends the call as KILLED_BY_POLICY: no SysV memory beyond the limit or after the call."""
        return self.attack("sysv_shm.py", POLICY, "forbidden syscall shmget")

    @defer.inlineCallbacks
    def test_thread_flood_is_capped(self):
        """Asking for 3000 threads gets at most the call's task limit."""
        r = yield self.attack("thread_flood.py", ResultStatus.OK, timeout=10.0)
        got = json.loads(r.output)
        self.assertLess(got["started"], self.executor.config.max_tasks)
        self.assertIn("can't start new thread", got["error"])

    @defer.inlineCallbacks
    def test_a_thread_hog_leaves_other_tenants_their_threads(self):
        """A tenant holding every thread it may have does not stop a concurrent tenant from starting threads."""
        from twisted.internet import reactor, task

        hog = self.call(FUNCTIONS, "thread_hog.py", timeout=10.0, request_id="hog")
        yield task.deferLater(reactor, 0.7, lambda: None)
        other = yield self.executor.invoke("tenant-b", FUNCTIONS, RuntimeSpec(
            runtime="python", entry="few_threads.py"), b"", deadline_s=5, request_id="other")
        self.assertEqual((other.status, json.loads(other.output or b"{}")),
                         (ResultStatus.OK, {"threads": 10}), other)
        r = yield hog
        self.assertEqual(r.status, ResultStatus.OK, r)
        self.assertLess(json.loads(r.output)["started"], self.executor.config.max_tasks)

    @defer.inlineCallbacks
    def test_deep_and_wide_scratch_trees(self):
        """A deep and a wide tree stop at the scratch inode cap and vanish with the call."""
        r = yield self.attack("scratch_tree.py", ResultStatus.OK, timeout=20.0)
        got = json.loads(r.output)
        cap = self.executor.config.scratch_max_inodes
        self.assertLessEqual(got["depth"], cap)
        self.assertLessEqual(got["wide"], cap)
        self.assertEqual((got["deep_error"], got["wide_error"]),
                         ("No space left on device", "No space left on device"))
        root = self.hello["scratch_root"]
        self.assertEqual(sorted(os.listdir(root)), ["empty", "root"])


class HostileWarmWorkerTests(HostileTests):
    """The same attacks against a warm per-function worker."""

    def zygote_children(self):
        return []  # warm workers stay alive by design

    def call(self, pkg, entry="main.py", reuse="per-call", runtime="python", **kw):
        if entry != "benign.py" and runtime == "python":
            reuse = "per-function"
        return JailTestCase.call(self, pkg, entry, reuse=reuse, runtime=runtime, **kw)

    def test_100mb_raw_stdout(self):
        """In a warm worker raw bytes on stdout break only the function's own result: ERROR."""
        return self.attack("raw_stdout.py", ResultStatus.ERROR, "garbage")

    @defer.inlineCallbacks
    def test_forged_status_records_and_frames_are_payload(self):
        """In a warm worker a fake frame breaks only the function's own result: ERROR, not a verdict."""
        r = yield self.attack("forge_verdict.py", ResultStatus.ERROR, "garbage")
        self.assertLess(r.exec_ms, 5000)

    @defer.inlineCallbacks
    def test_forged_output_too_large_header_is_not_a_verdict(self):
        """A warm worker whose frame header claims 100 MB does not get OUTPUT_TOO_LARGE: it never answers, TIMEOUT."""
        r = yield self.attack("forge_worker_frame.py", ResultStatus.TIMEOUT, "deadline",
                              data=b"huge", timeout=1.0, workers_left=True)
        self.assertLess(r.boot_ms + r.exec_ms, 5000)

    @defer.inlineCallbacks
    def test_forged_status_frame_is_payload(self):
        """A warm worker's own complete frame claiming KILLED_BY_POLICY and huge timings is payload: OK, our clock."""
        r = yield self.attack("forge_worker_frame.py", ResultStatus.OK, data=b"status",
                              workers_left=True)
        self.assertEqual((r.output, r.message), (b"forged payload", ""))
        self.assertLess(r.exec_ms, 5000)
        self.assertGreaterEqual(r.exec_ms, 0)
        self.assertGreaterEqual(r.boot_ms, 0)

    @defer.inlineCallbacks
    def test_warm_worker_overrun_is_frozen(self):
        """A thread left running after the answer burns no CPU between calls: the worker is frozen."""
        from twisted.internet import reactor, task

        first = yield self.call(FUNCTIONS, "worker_overrun.py", data=b"start")
        yield task.deferLater(reactor, 1.0, lambda: None)
        second = yield self.call(FUNCTIONS, "worker_overrun.py", data=b"again")
        self.assertEqual((first.status, second.status), (ResultStatus.OK, ResultStatus.OK))
        burned = json.loads(second.output)["cpu_s"] - json.loads(first.output)["cpu_s"]
        self.assertLess(burned, 0.5, "the worker ran while it had no call")

    @defer.inlineCallbacks
    def test_background_thread_dies_with_the_call(self):
        """A thread left running dies with the call; the answer is not delayed."""
        r = yield self.attack("background_thread.py", ResultStatus.OK)
        self.assertEqual(r.output, b"answered, thread still running")


class HostileDirectForkTests(HostileTests):
    """The same attacks with no pre-forked spare: every child is forked for
    its call and loads the full seccomp policy itself."""

    config = dict(HostileTests.config, prefork=False)