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
  deadline passed while it waited in the queue;
- ``MEMORY``: the address-space limit was reached;
- ``KILLED_BY_POLICY``: seccomp stopped a forbidden syscall, named in
  ``message`` (e.g. ``seccomp stopped forbidden syscall socket``);
- ``OUTPUT_TOO_LARGE``: stdout passed ``output_max_bytes``;
- ``BUSY``: ``max_concurrent`` calls are running and ``max_queue`` wait;
- ``REFUSED``: a required jail layer is missing on this host and
  ``ExecConfig.allow_unconfined`` (the operator's loud opt-out) is off;
- ``INTERNAL``: the zygote died or the executor is stopping.

Layers applied to every child before function code runs: seccomp (no
sockets, tracing, namespaces, mounts, BPF, keyrings, io_uring, modules,
fork/vfork/non-thread clone, exec for python), Landlock (read-only package
and runtime files, read-write per-call tmpfs scratch, TCP bind/connect
denied, signals and abstract unix sockets scoped), rlimits (CPU, AS,
FSIZE, NOFILE, NPROC, CORE=0), no_new_privs, no capabilities, an empty
environment, its own session and process group, and the zygote's empty
network namespace.

Runtimes: ``python`` (the entry module defines ``handler(event: bytes,
context)``; ``context.fid``, ``context.request_id``,
``context.remaining_s()``; stdlib plus pure-Python code in the package) and
``exec`` (an ELF binary or a ``#!`` script whose interpreter is on the
allowlist; reads stdin, writes stdout).  ``reuse="per-function"`` (python
only) keeps a warm jailed worker per function; its module state and scratch
persist between that function's calls.

Configuration (:class:`ExecConfig`, all optional): ``max_concurrent``
(default: cores), ``max_queue`` (default 4 x cores; beyond it BUSY),
``memory_mb`` (RLIMIT_AS, default 256), ``default_timeout_s``,
``output_max_bytes`` (1 MiB), ``log_max_bytes`` (64 KiB),
``input_max_bytes`` (1 MiB), ``scratch_max_bytes`` (16 MiB: the per-call
tmpfs size and RLIMIT_FSIZE), ``nofile``, ``max_workers``,
``worker_idle_s``, ``prefork`` (keep one pre-forked spare child),
``allow_unconfined`` (the loud opt-out), ``grace_s`` (how long past a
deadline the peer waits for the zygote before restarting it).

How it is built:

- ``_executor``: the Twisted side.  Scheduling (concurrency limit, FIFO
  queue, BUSY, deadlines, a watchdog per call, zygote restarts) with an
  injected clock; it never blocks and never forks.
- ``_zygote``: the fork server, started with ``spawnProcess``.  A plain
  ``selectors`` loop (no Twisted, so it stays small and forks fast) in its
  own network, IPC and mount namespaces.  It compiles the seccomp policy
  once, pre-opens the runtime's read-only paths, keeps one pre-forked
  spare, enforces deadlines and output caps, names trapped syscalls, mounts
  and wipes each call's tmpfs scratch.
- ``_child``: what a child does between fork and function code (see its
  docstring for the order of the layers), and the python runtime.
- ``_frames``: the peer <-> zygote (and zygote <-> worker) framing: a
  ``>II`` header (JSON length, payload length), a JSON control object, a
  raw payload.  Private to this package, not the ORB wire protocol.
- ``_landlock``, ``_seccomp``: the two kernel interfaces.
"""

__all__ = ["Executor", "ExecConfig", "ExecResult", "ExecutorState", "RuntimeSpec"]


def __getattr__(name):
    # Lazy, so the zygote (which imports orb.exec._zygote) never loads Twisted
    # or attrs: a smaller zygote forks faster and starts in a fraction of the time.
    if name in __all__:
        from . import _executor

        return getattr(_executor, name)
    raise AttributeError(f"module 'orb.exec' has no attribute {name!r}")
