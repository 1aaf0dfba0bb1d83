"""
Executor latency and throughput for a trivial function, all in one run.

    .venv/bin/python bench/exec.py [--calls N] [--fresh N] [--layer-calls N] [--json]

Measures (p50 / p99 latency, milliseconds), all in the same run:

- ``bare fork``: os.fork() + child _exit + waitpid, from this process;
- ``python -c pass``: a plain interpreter start;
- ``bwrap``: ``bwrap --unshare-all`` (Debian's bubblewrap) running the same
  function with ``python3 -I -S`` per call: what a user would pick instead;
- ``jailed per-call``: Executor.invoke round trip, a fresh jailed child per
  call (every layer on), back to back and 5 ms apart;
- ``warm worker``: the same with reuse="per-function" (frozen between calls);
- throughput: calls/s with the queue kept full, on this machine's cores;
- per-layer cost: the per-call p50 with one layer switched off
  (``ExecConfig.disable_layers``, which needs the unconfined opt-out), set
  against the p50 with every layer on, measured just before and after.

Targets (issue 8): jailed per-call p50 <= 5 ms; >= 4x faster than bwrap;
warm worker p50 <= 1 ms; >= 400 trivial calls/s on 2 cores.  Every process
the bench starts is stopped before it exits.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from orb.exec import ExecConfig, Executor, RuntimeSpec  # noqa: E402
from orb.protocol.codes import ResultStatus  # noqa: E402

HANDLER = "def handler(event, context):\n    return event\n"
LAYERS = ("seccomp", "landlock", "pidns", "root", "uid_pool")
BWRAP_RUNNER = ("import sys; sys.path.insert(0, '/pkg'); from main import handler; "
                "sys.stdout.buffer.write(handler(sys.stdin.buffer.read(), None))")


def pct(samples, p):
    s = sorted(samples)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


def summary(samples_s):
    ms = [x * 1000 for x in samples_s]
    return {"p50_ms": round(pct(ms, 50), 3), "p99_ms": round(pct(ms, 99), 3),
            "mean_ms": round(statistics.mean(ms), 3), "n": len(ms)}


def bench_fork(n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        out.append(time.perf_counter() - t)
    return out


def bench_python_pass(n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        out.append(time.perf_counter() - t)
    return out


def bwrap_argv(pkg):
    """bwrap --unshare-all with the interpreter's tree and the package read-only."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    prefix = os.path.realpath(sys.base_prefix)
    py = os.path.join(prefix, "bin", "python3")
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr"]
    for link in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(link):
            argv += ["--symlink", os.readlink(link), link]
    if not prefix.startswith("/usr/"):
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--ro-bind", pkg, "/pkg", "--tmpfs", "/tmp", "--dev", "/dev", "--proc", "/proc",
             "--chdir", "/tmp", "--", py, "-I", "-S", "-c", BWRAP_RUNNER]
    return argv


def bench_bwrap(n, pkg):
    argv = bwrap_argv(pkg)
    if argv is None:
        return None
    out = []
    for _ in range(n):
        t = time.perf_counter()
        got = subprocess.run(argv, input=b"ping", capture_output=True, check=True, env={})
        out.append(time.perf_counter() - t)
        if got.stdout != b"ping":
            raise RuntimeError(f"bwrap run failed: {got.stderr[-300:]!r}")
    return out


async def bench_layer(reactor, pkg, calls, disabled=()):
    """Per-call p50 with ``disabled`` layers off (an empty tuple: every layer on)."""
    from twisted.internet import defer

    ex = Executor(reactor, ExecConfig(max_queue=64, allow_unconfined=bool(disabled),
                                      disable_layers=tuple(disabled)))
    try:
        await defer.ensureDeferred(ex.start())
        spec = RuntimeSpec(runtime="python", entry="main.py")
        lat = []
        for i in range(calls + 20):
            t = time.perf_counter()
            r = await ex.invoke("bench", pkg, spec, b"ping", deadline_s=5)
            if i >= 20:
                lat.append(time.perf_counter() - t)
            if r.status != ResultStatus.OK:
                raise RuntimeError(f"call failed: {r}")
        return summary(lat)
    finally:
        await defer.ensureDeferred(ex.stop())


async def bench_executor(reactor, pkg, calls, reuse, prefork=True):
    from twisted.internet import defer, task

    ex = Executor(reactor, ExecConfig(max_queue=64, prefork=prefork))
    try:
        await defer.ensureDeferred(ex.start())
        spec = RuntimeSpec(runtime="python", entry="main.py", reuse=reuse)
        for _ in range(20):  # warm up
            r = await ex.invoke("bench", pkg, spec, b"ping", deadline_s=5)
            assert r.status == ResultStatus.OK, r
        lat, boot, run = [], [], []
        for _ in range(calls):
            t = time.perf_counter()
            r = await ex.invoke("bench", pkg, spec, b"ping", deadline_s=5)
            lat.append(time.perf_counter() - t)
            if r.status != ResultStatus.OK:
                raise RuntimeError(f"call failed: {r}")
            boot.append(r.boot_ms / 1000)
            run.append(r.exec_ms / 1000)
        # Calls 5 ms apart: traffic with pauses, where the pre-forked spare
        # is ready when a call arrives.
        gapped = []
        for _ in range(min(200, calls)):
            await task.deferLater(reactor, 0.005, lambda: None)
            t = time.perf_counter()
            r = await ex.invoke("bench", pkg, spec, b"ping", deadline_s=5)
            gapped.append(time.perf_counter() - t)
            if r.status != ResultStatus.OK:
                raise RuntimeError(f"call failed: {r}")
        # Throughput: keep max_concurrent running and the queue topped up.
        total = calls * 2
        window = ex.config.max_concurrent * 4
        done = defer.Deferred()
        state = {"sent": 0, "ok": 0, "other": 0}

        def one(_=None):
            if state["sent"] >= total:
                return
            state["sent"] += 1
            d = ex.invoke("bench", pkg, spec, b"ping", deadline_s=10)
            d.addCallback(finished)

        def finished(r):
            state["ok" if r.status == ResultStatus.OK else "other"] += 1
            if r.status != ResultStatus.OK and state["other"] <= 3:
                print("not OK:", r, file=sys.stderr)
            if state["ok"] + state["other"] == total:
                done.callback(None)
            else:
                one()

        t = time.perf_counter()
        for _ in range(window):
            one()
        await done
        elapsed = time.perf_counter() - t
        return {"latency": summary(lat), "boot": summary(boot), "exec": summary(run),
                "latency_5ms_apart": summary(gapped),
                "throughput_per_s": round(total / elapsed, 1), "throughput_calls": total,
                "throughput_failed": state["other"], "concurrency": ex.config.max_concurrent}
    finally:
        await defer.ensureDeferred(ex.stop())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--fresh", type=int, default=40, help="bwrap and python -c pass runs")
    parser.add_argument("--layer-calls", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from twisted.logger import formatEvent, globalLogBeginner

    def failures_only(event):
        # The per-layer runs use the unconfined opt-out, which logs loudly;
        # show failures only.
        if "log_failure" in event:
            print(formatEvent(event), event["log_failure"].getTraceback(), file=sys.stderr)
        elif event.get("log_namespace") != "orb.exec" and str(event.get("log_level")) in (
                "<LogLevel=error>", "<LogLevel=critical>"):
            print(formatEvent(event), file=sys.stderr)

    globalLogBeginner.beginLoggingTo([failures_only], redirectStandardIO=False)
    tmp = tempfile.mkdtemp(prefix="orb-bench-")
    os.chmod(tmp, 0o755)
    pkg = os.path.join(tmp, "pkg")
    os.mkdir(pkg)
    os.chmod(pkg, 0o755)
    with open(os.path.join(pkg, "main.py"), "w") as f:
        f.write(HANDLER)
    os.chmod(os.path.join(pkg, "main.py"), 0o644)
    results = {}
    try:
        results["bare_fork"] = summary(bench_fork(args.calls))
        results["python_c_pass"] = summary(bench_python_pass(max(10, args.fresh // 2)))
        bw = bench_bwrap(args.fresh, pkg)
        results["bwrap"] = summary(bw) if bw else None

        from twisted.internet import defer, task

        box = {}

        async def run_all(reactor):
            box["per_call"] = await bench_executor(reactor, pkg, args.calls, "per-call")
            box["warm"] = await bench_executor(reactor, pkg, args.calls, "per-function")
            layers = {"all (before)": await bench_layer(reactor, pkg, args.layer_calls)}
            for name in LAYERS:
                layers[f"without {name}"] = await bench_layer(reactor, pkg, args.layer_calls,
                                                              (name,))
            layers["without all five"] = await bench_layer(reactor, pkg, args.layer_calls, LAYERS)
            layers["all (after)"] = await bench_layer(reactor, pkg, args.layer_calls)
            box["layers"] = layers

        try:
            task.react(lambda reactor: defer.ensureDeferred(run_all(reactor)))
        except SystemExit as e:
            if e.code:
                raise
        results["jailed_per_call"] = box["per_call"]
        results["warm_worker"] = box["warm"]
        results["layers"] = box["layers"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    jailed = results["jailed_per_call"]["latency"]["p50_ms"]
    warm = results["warm_worker"]["latency"]["p50_ms"]
    tput = results["jailed_per_call"]["throughput_per_s"]
    bwrap = results["bwrap"]["p50_ms"] if results["bwrap"] else None
    layers = results["layers"]
    base = (layers["all (before)"]["p50_ms"] + layers["all (after)"]["p50_ms"]) / 2
    results["layer_cost_ms"] = {name: round(base - layers[f"without {name}"]["p50_ms"], 3)
                                for name in LAYERS + ("all five",)}
    results["targets"] = {
        "jailed_p50_le_5ms": jailed <= 5.0,
        "ge_4x_faster_than_bwrap": bwrap is not None and bwrap >= 4 * jailed,
        "warm_p50_le_1ms": warm <= 1.0,
        "throughput_ge_400": tput >= 400.0,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"cores: {os.cpu_count()}   python: {sys.version.split()[0]}   "
          f"load average: {os.getloadavg()[0]:.2f}")
    rows = [("bare fork", results["bare_fork"]),
            ("python -c pass", results["python_c_pass"])]
    if results["bwrap"]:
        rows.append(("bwrap --unshare-all", results["bwrap"]))
    rows += [("jailed per-call", results["jailed_per_call"]["latency"]),
             ("  boot (zygote clock)", results["jailed_per_call"]["boot"]),
             ("  exec (zygote clock)", results["jailed_per_call"]["exec"]),
             ("  calls 5 ms apart", results["jailed_per_call"]["latency_5ms_apart"]),
             ("warm worker (frozen)", results["warm_worker"]["latency"])]
    print(f"{'measure':26} {'p50 ms':>9} {'p99 ms':>9} {'n':>6}")
    for name, s in rows:
        print(f"{name:26} {s['p50_ms']:9.3f} {s['p99_ms']:9.3f} {s['n']:6d}")
    for name in ("jailed_per_call", "warm_worker"):
        r = results[name]
        print(f"throughput {name.replace('_', ' ')}: {r['throughput_per_s']:.0f} calls/s "
              f"({r['throughput_calls']} calls, concurrency {r['concurrency']}, "
              f"{r['throughput_failed']} not OK)")
    if bwrap is not None:
        print(f"bwrap p50 / jailed per-call p50 = {bwrap / jailed:.2f}x")
    print("per-layer cost (p50 with every layer minus p50 without that one):")
    for name, row in layers.items():
        print(f"  {name:22} p50 {row['p50_ms']:7.3f} ms")
    for name, cost in results["layer_cost_ms"].items():
        print(f"  cost of {name:14} {cost:+7.3f} ms")
    for k, ok in results["targets"].items():
        print(f"target {k}: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
