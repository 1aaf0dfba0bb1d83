"""
Executor latency and throughput for a trivial function, all in one run.

    .venv/bin/python bench/exec.py [--calls N] [--fresh N] [--json]

Measures (p50 / p99 latency, milliseconds):

- ``bare fork``: os.fork() + child _exit + waitpid, from this process;
- ``python -c pass``: a plain interpreter start;
- ``zygote per-call``: Executor.invoke round trip, a fresh jailed child per call;
- ``zygote, calls 5 ms apart``: the same with pauses between calls (the
  zygote forks its spare after 1 ms of quiet, so here calls find one ready);
- ``zygote, no prefork``: the same without the zygote's pre-forked spare;
- ``warm worker``: the same with reuse="per-function";
- ``fresh jailed process``: a new interpreter per call that builds the whole
  jail (seccomp compile, Landlock, namespaces) and runs the call;
- throughput: calls/s with the queue kept full, on this machine's cores.

Targets (issue 4): zygote p50 <= 3 ms and <= 2.5x bare fork; fresh jailed
process <= 60 ms; >= 400 trivial calls/s on 2 cores.  Every process the
bench starts is stopped before it exits.
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
from orb.exec._frames import FrameDecoder, encode  # noqa: E402
from orb.protocol.codes import ResultStatus  # noqa: E402

HANDLER = "def handler(event, context):\n    return event\n"


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


def bench_fresh(n, pkg):
    """A new interpreter per call: zygote --once builds the jail and runs one call."""
    boot = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from orb.exec._zygote import main; sys.exit(main(sys.argv[2:]))")
    orb_parent = os.path.dirname(HERE)
    ctl = {"op": "run", "id": 1, "runtime": "python", "entry": "main.py", "package_dir": pkg,
           "timeout_s": 5, "memory_mb": 256, "output_max_bytes": 1 << 20,
           "log_max_bytes": 1 << 16, "scratch_max_bytes": 1 << 24}
    out = []
    for _ in range(n):
        t = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-I", "-B", "-c", boot, orb_parent, "--once"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={})
        try:
            p.stdin.write(encode(ctl, b"ping"))
            p.stdin.flush()
            dec = FrameDecoder(1 << 22)
            done = None
            while done is None:
                data = os.read(p.stdout.fileno(), 65536)
                if not data:
                    raise RuntimeError("fresh jailed process exited early")
                for c, _payload in dec.feed(data):
                    if c.get("op") == "done":
                        done = c
            if done["status"] != "OK":
                raise RuntimeError(f"fresh call failed: {done}")
            out.append(time.perf_counter() - t)
        finally:
            p.stdin.close()
            p.wait(timeout=10)
            p.stdout.close()
    return out


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
    parser.add_argument("--fresh", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="orb-bench-")
    os.chmod(tmp, 0o755)
    pkg = os.path.join(tmp, "pkg")
    os.mkdir(pkg)
    with open(os.path.join(pkg, "main.py"), "w") as f:
        f.write(HANDLER)
    results = {}
    try:
        results["bare_fork"] = summary(bench_fork(args.calls))
        results["python_c_pass"] = summary(bench_python_pass(max(10, args.fresh // 2)))
        results["fresh_jailed_process"] = summary(bench_fresh(args.fresh, pkg))

        from twisted.internet import defer, task

        box = {}

        async def run_all(reactor):
            box["zygote"] = await bench_executor(reactor, pkg, args.calls, "per-call")
            box["zygote_nopre"] = await bench_executor(reactor, pkg, args.calls, "per-call",
                                                       prefork=False)
            box["warm"] = await bench_executor(reactor, pkg, args.calls, "per-function")

        try:
            task.react(lambda reactor: defer.ensureDeferred(run_all(reactor)))
        except SystemExit as e:
            if e.code:
                raise
        results["zygote_per_call"] = box["zygote"]
        results["zygote_per_call_no_prefork"] = box["zygote_nopre"]
        results["warm_worker"] = box["warm"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    z = results["zygote_per_call"]["latency"]["p50_ms"]
    f = results["bare_fork"]["p50_ms"]
    fresh = results["fresh_jailed_process"]["p50_ms"]
    tput = results["zygote_per_call"]["throughput_per_s"]
    results["targets"] = {
        "zygote_p50_le_3ms": z <= 3.0,
        "zygote_p50_le_2.5x_fork": z <= 2.5 * f,
        "fresh_le_60ms": fresh <= 60.0,
        "throughput_ge_400": tput >= 400.0,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"cores: {os.cpu_count()}   python: {sys.version.split()[0]}")
    rows = [("bare fork", results["bare_fork"]),
            ("python -c pass", results["python_c_pass"]),
            ("fresh jailed process", results["fresh_jailed_process"]),
            ("zygote per-call", results["zygote_per_call"]["latency"]),
            ("  boot (in zygote)", results["zygote_per_call"]["boot"]),
            ("  exec (in zygote)", results["zygote_per_call"]["exec"]),
            ("zygote, calls 5 ms apart", results["zygote_per_call"]["latency_5ms_apart"]),
            ("zygote, no prefork", results["zygote_per_call_no_prefork"]["latency"]),
            ("  no prefork, 5 ms apart", results["zygote_per_call_no_prefork"]["latency_5ms_apart"]),
            ("warm worker", results["warm_worker"]["latency"])]
    print(f"{'measure':24} {'p50 ms':>9} {'p99 ms':>9} {'n':>6}")
    for name, s in rows:
        print(f"{name:24} {s['p50_ms']:9.3f} {s['p99_ms']:9.3f} {s['n']:6d}")
    for name in ("zygote_per_call", "zygote_per_call_no_prefork", "warm_worker"):
        r = results[name]
        print(f"throughput {name.replace('_', ' ')}: {r['throughput_per_s']:.0f} calls/s "
              f"({r['throughput_calls']} calls, concurrency {r['concurrency']}, "
              f"{r['throughput_failed']} not OK)")
    print(f"zygote p50 / bare fork p50 = {z / f:.2f}x")
    for k, ok in results["targets"].items():
        print(f"target {k}: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
