# -*- test-case-name: tests.test_exec_cli -*-
"""
``orb sandbox-run`` and ``orb sandbox-check``: the jail, by hand.

``orb sandbox-run --runtime python|exec --entry PATH [--timeout S]
[--memory MB] [--data TEXT] [--reuse per-call|per-function]
[--allow-unconfined]`` runs one function through the real executor (input
from ``--data`` or stdin) and prints one JSON object: status, code,
message, output, log and timing.  Exit status 0 when the function returned
OK, 1 for any other result, 2 for bad arguments.

``orb sandbox-check [--json]`` prints which jail layers this kernel
provides.  Exit status 0 when every required layer is there, 1 otherwise.
"""

import json
import os
import subprocess
import sys


def register(sub) -> None:
    run = sub.add_parser("sandbox-run", help="run one function through the jail and print the result as JSON")
    run.add_argument("--runtime", required=True, choices=["python", "exec"])
    run.add_argument("--entry", required=True, metavar="PATH",
                     help="the function file, or a dir holding main.py (python) or main (exec)")
    run.add_argument("--timeout", type=_positive_float, default=10.0, metavar="S")
    run.add_argument("--memory", type=_positive_int, default=256, metavar="MB")
    run.add_argument("--data", default=None, help="input bytes (UTF-8); stdin when absent")
    run.add_argument("--reuse", choices=["per-call", "per-function"], default="per-call")
    run.add_argument("--allow-unconfined", action="store_true",
                     help="DANGEROUS: run even if jail layers are missing")
    run.add_argument("--json", action="store_true", help="accepted for symmetry: the output is always JSON")
    run.set_defaults(func=sandbox_run)

    check = sub.add_parser("sandbox-check", help="print which jail layers this kernel provides")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=sandbox_check)


def _positive_float(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (0 < value <= 3600):
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 and at most 3600")
    return value


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not (16 <= value <= 65536):
        raise argparse.ArgumentTypeError(f"{text!r} must be between 16 and 65536")
    return value


def _resolve_entry(runtime: str, entry: str) -> tuple[str, str]:
    from .main import UsageError

    path = os.path.abspath(entry)
    if os.path.isdir(path):
        name = "main.py" if runtime == "python" else "main"
        if not os.path.isfile(os.path.join(path, name)):
            raise UsageError(f"orb sandbox-run: error: {entry} is a dir without {name}")
        return path, name
    if not os.path.isfile(path):
        raise UsageError(f"orb sandbox-run: error: no such file: {entry}")
    if runtime == "exec" and not os.access(path, os.X_OK):
        raise UsageError(f"orb sandbox-run: error: {entry} is not executable")
    return os.path.dirname(path), os.path.basename(path)


def sandbox_run(args) -> int:
    from twisted.internet import reactor
    from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
                                globalLogBeginner, textFileLogObserver)

    from ..exec import ExecConfig, Executor, RuntimeSpec

    package_dir, entry = _resolve_entry(args.runtime, args.entry)
    if args.data is not None:
        data = args.data.encode("utf-8")
    else:
        data = sys.stdin.buffer.read() if not sys.stdin.isatty() else b""
    spec = RuntimeSpec(runtime=args.runtime, entry=entry, memory_mb=args.memory,
                       reuse=args.reuse if args.runtime == "python" else "per-call")
    # Warnings and worse (the unconfined opt-out is logged as critical).
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr),
                                    [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    config = ExecConfig(allow_unconfined=args.allow_unconfined, max_timeout_s=3600)
    executor = Executor(reactor, config)
    box = {}

    def go():
        d = executor.start()
        d.addCallback(lambda hello: box.__setitem__("layers", hello.get("layers", {})))
        d.addCallback(lambda _: executor.invoke("local", package_dir, spec, data,
                                                deadline_s=args.timeout, request_id="sandbox-run"))
        d.addCallback(lambda result: box.__setitem__("result", result))
        d.addErrback(lambda f: box.__setitem__("error", f.getErrorMessage()))
        d.addBoth(lambda _: executor.stop())
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    if "error" in box:
        print(f"orb sandbox-run: error: {box['error']}", file=sys.stderr)
        return 1
    result = box["result"]
    doc = result.to_json()
    doc["layers"] = box.get("layers", {})
    print(json.dumps(doc, indent=2))
    return 0 if result.status.name == "OK" else 1


def probe_layers(allow_unconfined: bool = False) -> dict:
    """Ask a fresh zygote process which layers it can build (it unshares namespaces)."""
    orb_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    boot = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from orb.exec._zygote import main; sys.exit(main(sys.argv[2:]))")
    cmd = [sys.executable, "-I", "-B", "-c", boot, orb_parent, "--probe"]
    if allow_unconfined:
        cmd.append("--allow-unconfined")
    out = subprocess.run(cmd, capture_output=True, timeout=60, env={}, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.decode(errors="replace").strip().splitlines()[-1:] or "probe failed")
    return json.loads(out.stdout)


_DESCRIPTIONS = {
    "uid_pool": "per-call uid/gid from a pool, owning no host file (root peer)",
    "userns": "user namespace for a non-root peer",
    "pidns": "own PID namespace per call (pid 1; sees and signals no other process)",
    "call_namespaces": "own mount, IPC and UTS namespaces per call",
    "root": "minimal root: runtime read-only, package read-only, capped tmpfs /tmp, /dev",
    "pivot_root": "pivot_root into that root, host tree detached",
    "seccomp": "seccomp allowlist per runtime (default deny)",
    "landlock_fs": "Landlock filesystem rules (read-only package, read-write scratch)",
    "landlock_net": "Landlock TCP bind/connect denied (ABI >= 4)",
    "landlock_scope": "Landlock signal and abstract-unix scoping (ABI >= 6)",
    "no_new_privs": "no_new_privs",
    "rlimits": "rlimits (CPU, AS, FSIZE, NOFILE, NPROC, CORE=0)",
    "netns": "empty network namespace",
    "cgroup": "a cgroup per call (memory and pids; the note names the controllers in use)",
    "cgroup_memory": "cgroup memory bound per call, shared and tmpfs pages included; OOM -> MEMORY",
    "cgroup_pids": "cgroup task bound per call (processes and threads)",
}


def sandbox_check(args) -> int:
    from ..exec._zygote import REQUIRED_LAYERS

    try:
        report = probe_layers()
    except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as e:
        print(f"orb sandbox-check: error: could not probe the kernel: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        layers = report["layers"]
        print(f"Landlock ABI: {report['landlock_abi']}")
        identity = "uid_pool" if "uid_pool" in layers else "userns"
        for name, text in _DESCRIPTIONS.items():
            if name in ("uid_pool", "userns") and name != identity:
                continue
            mark = "yes" if layers.get(name) else "NO "
            need = "required" if name in REQUIRED_LAYERS or name == identity else "optional"
            note = report.get("notes", {}).get(name)
            print(f"  [{mark}] {name:15} {need:8}  {text}" + (f" ({note})" if note else ""))
        mode = report.get("notes", {}).get("seccomp_mode")
        if mode:
            print(f"seccomp mode: {mode}")
        if report["missing"]:
            print("MISSING required layers: " + ", ".join(report["missing"]) +
                  " -- untrusted functions will be REFUSED unless the operator opts out")
        else:
            print("all required layers present: untrusted functions will run jailed")
    return 1 if report["missing"] else 0
