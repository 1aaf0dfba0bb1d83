"""
The jail: runs untrusted functions in sandboxed children of a zygote.

Public API (everything else here is private)::

    from orb.exec import Executor, ExecConfig, RuntimeSpec, ExecResult

    executor = Executor(reactor, ExecConfig(max_concurrent=2))
    layers = yield executor.start()          # Deferred[dict]: the zygote's hello
    result = yield executor.invoke(
        fid, package_dir,                     # the package, read-only to the function
        RuntimeSpec(runtime="python", entry="main.py", reuse="per-call"),
        input_bytes, deadline_s=5.0, request_id="r1")
    result.status   # orb.protocol.codes.ResultStatus
    result.output, result.log, result.message
    result.queue_ms, result.boot_ms, result.exec_ms
    yield executor.stop()                    # kills the zygote and every child

``invoke`` accepts a :class:`RuntimeSpec` or a manifest mapping
(``{"runtime": "python", "entry": "main.py", "reuse": "per-function"}``,
see :meth:`RuntimeSpec.from_manifest`).  Its Deferred always fires with an
:class:`ExecResult`, never an errback:

- ``OK``: output is the handler's return value (bytes as is, str as UTF-8,
  anything else as JSON) or the ``exec`` program's stdout;
- ``ERROR``: the function failed; ``log`` holds its stderr (traceback);
- ``TIMEOUT``: the wall-clock deadline (or the CPU limit) was reached and
  the child's whole process group was killed; also for a call whose
  deadline passed while it waited in the queue.  ``deadline_s`` counts the
  time queued and the time running, not the jail's boot (which has
  ``boot_max_s`` of its own);
- ``MEMORY``: the kernel's OOM killer ended the call in its own memory
  cgroup (any runtime).  Without a writable memory cgroup (a non-root
  peer) memory is bounded by RLIMIT_AS alone, and a failed allocation is
  the function's own ERROR: no kernel witness, no MEMORY verdict;
- ``KILLED_BY_POLICY``: seccomp stopped a forbidden syscall, named in
  ``message`` when the kernel names it to the zygote (seccomp user
  notification: ``seccomp stopped forbidden syscall socket``), else
  ``seccomp stopped a forbidden syscall``;
- ``OUTPUT_TOO_LARGE``: the zygote counted more than ``output_max_bytes``
  (a frame header's claim counts for nothing);
- ``BUSY``: ``max_concurrent`` calls are running and ``max_queue`` wait;
- ``REFUSED``: a required jail layer is missing on this host and
  ``ExecConfig.allow_unconfined`` (the operator's loud opt-out) is off;
- ``INTERNAL``: the zygote died, hung or lost its template, or the executor
  is stopping; the message says which.

Cancelling the Deferred of ``invoke`` withdraws the call (it then fails
with ``CancelledError``; no ExecResult comes): a queued call leaves the
queue at once; a running one is killed by the zygote (the child's whole
PID namespace and cgroup; a warm worker is killed with its call), and its
slot stays taken until the zygote reports the child reaped, so
``max_concurrent`` always bounds the live children.

Verdicts are the supervisor's: the status comes from the exit status and
signal the kernel reports, seccomp notifications, the call's cgroup's OOM
count and the zygote's own clock and byte counts; ``boot_ms``/``exec_ms``
are the zygote's clock.  Function output is payload only.  The function's
own outcome, OK or ERROR, is its exit code (0 or not), which it could
choose anyway; in a warm worker, whose process it shares with the runtime,
it is the ``kind`` of its answer frame, and a function that breaks that
channel gets ERROR (garbage) or TIMEOUT (no answer), never a limit's
verdict.  A warm call ends when the kernel reports the worker stopped
again, not when its answer arrives.

Each call's child, before function code runs:

- comes from a pristine template (forked by the zygote before the first
  call; it never holds a tenant's code, input or output), as pid 1 of its
  own PID namespace, in its own mount, IPC and UTS namespaces and the
  zygote's empty network namespace;
- ``pivot_root``s into a minimal tree: the runtime's files read-only, the
  package read-only at ``/pkg``, a size- and inode-capped tmpfs at ``/tmp``
  (its cwd), ``/dev/{null,zero,urandom,random}``, no ``/proc``;
- runs under a uid/gid of its own from a pool (``uid_base``/``uid_count``)
  that owns no host file, when the peer is root; a non-root peer's zygote
  runs in a user namespace instead;
- sits in a memory and a pids cgroup of its own (v1 or v2) where the host
  lets the peer make them: memory (shared and tmpfs pages too) and tasks
  bounded, the OOM kill counted, the cgroup removed once the child is
  reaped;
- Landlock (read-only runtime and package, read-write ``/tmp``, TCP
  bind/connect denied, signals and abstract unix sockets scoped), rlimits
  (CPU, AS, FSIZE, NOFILE, NPROC, CORE=0), no_new_privs, no capabilities,
  an empty environment, its own session;
- seccomp, an allowlist per runtime (default deny): no sockets, no new
  processes, no tracing, namespaces, mounts, AIO, SysV IPC, io_uring,
  userfaultfd, perf_event_open, bpf, keyrings, inotify, xattrs or chown;
  calls that take a target process only on itself.

The source is read and compiled inside the child, under its limits.

Runtimes: ``python`` (the entry module defines ``handler(event: bytes,
context)``; ``context.fid``, ``context.request_id``, ``context.secrets`` (a read-only map of the
function's secrets on this host, RFC 9.12; empty without),
``context.remaining_s()``; stdlib plus pure-Python code in the package) and
``exec`` (an ELF binary or a ``#!`` script whose interpreter is on the
allowlist; reads stdin, writes stdout).  ``reuse="per-function"`` (python
only) keeps a warm jailed worker per function (one fid only); its module
state and scratch persist between that function's calls, and it is stopped
(SIGSTOP) whenever it has no call: a call's deadline covers it until the
kernel reports it stopped again (the template, its parent, sees the stop).

Configuration (:class:`ExecConfig`, all optional): ``max_concurrent``
(default: cores), ``max_queue`` (default 4 x cores; beyond it BUSY),
``memory_mb`` (RLIMIT_AS, default 256), ``default_timeout_s``,
``output_max_bytes`` (1 MiB), ``log_max_bytes`` (64 KiB),
``input_max_bytes`` (1 MiB), ``scratch_max_bytes`` (16 MiB) and
``scratch_max_inodes`` (4096), ``max_tasks`` (64), ``nofile``,
``max_workers``, ``worker_idle_s``, ``boot_max_s``, ``prefork`` (keep a spare child
ready), ``uid_base``/``uid_count``, ``heartbeat_s`` (a zygote that does
not answer within it is replaced), ``allow_unconfined`` (the loud
opt-out), ``disable_layers`` (benchmarks: ``seccomp``, ``seccomp_notify``,
``landlock``, ``pidns``, ``root``, ``uid_pool``, ``userns``, ``cgroup``; a
disabled layer is missing),
``grace_s``.

How it is built:

- ``_executor``: the Twisted side.  Scheduling (concurrency limit, FIFO
  queue, BUSY, deadlines, a watchdog per call, a heartbeat, zygote
  restarts) with an injected clock; it never blocks and never forks.
- ``_zygote``: the supervisor, started with ``spawnProcess``: a plain
  ``selectors`` loop (no Twisted).  It builds the shared part of the
  children's root, compiles the seccomp programs, forks the template,
  hands out orders, input and uids, enforces deadlines and output caps,
  receives seccomp notifications and classifies each ending.
- ``_child``: what a child does between fork and function code (see its
  docstring for the order of the layers), and the python runtime.
- ``_ns``: namespaces, the root, ``pivot_root``, the uid pool.
- ``_frames``: the peer <-> zygote (and zygote <-> worker) framing: a
  ``>II`` header (JSON length, payload length), a JSON control object, a
  raw payload.  Private to this package, not the ORB wire protocol.
- ``_landlock``, ``_seccomp``: the two kernel interfaces.
- ``_cgroup``: per-child memory and pids cgroups (v1 or v2), their OOM
  count, and their removal.
"""

__all__ = ["Executor", "ExecConfig", "ExecResult", "ExecutorState", "RuntimeSpec"]


def __getattr__(name):
    # Lazy, so the zygote (which imports orb.exec._zygote) never loads Twisted
    # or attrs: a smaller zygote forks faster and starts in a fraction of the time.
    if name in __all__:
        from . import _executor

        return getattr(_executor, name)
    raise AttributeError(f"module 'orb.exec' has no attribute {name!r}")
