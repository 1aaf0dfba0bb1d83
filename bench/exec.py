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
- throughput: calls/s with the queue kept full, on this machine's cores,
  and the CPU time one call costs in every process involved (peer, zygote,
  template, jailed child), from the kernel's counters: ``cores / CPU per
  call`` is the throughput the machine gives when nothing else runs on it,
  which holds under load from other work, where calls/s does not;
- ``bwrap / jailed``: the two are run in alternating rounds, so that load
  from other work falls on both alike;
- per-layer cost: one executor per configuration (every layer on; one
  layer switched off with ``ExecConfig.disable_layers``, which needs the
  unconfined opt-out), all running at once and called in alternating rounds;
  a layer's cost is the p50 with every layer on minus the p50 without it.

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
# Calls kept running at once in the throughput runs (the executor queues the rest).
THROUGHPUT_CONCURRENCY = int(os.environ.get("ORB_BENCH_CONCURRENCY", "4"))
sys.path.insert(0, os.path.dirname(HERE))

from orb.exec import ExecConfig, Executor, RuntimeSpec  # noqa: E402
from orb.protocol.codes import ResultStatus  # noqa: E402

HANDLER = "def handler(event, context):\n    return event\n"
# The per-call identity is a uid from the pool for a root peer, a user
# namespace of its own for a non-root one; cgroups only where writable.
LAYERS = ("seccomp", "landlock", "pidns", "root",
          "uid_pool" if os.geteuid() == 0 else "userns", "cgroup")
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


async def timed_calls(ex, pkg, n, reuse="per-call"):
    spec = RuntimeSpec(runtime="python", entry="main.py", reuse=reuse)
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        r = await ex.invoke("bench", pkg, spec, b"ping", deadline_s=5)
        lat.append(time.perf_counter() - t)
        if r.status != ResultStatus.OK:
            raise RuntimeError(f"call failed: {r}")
    return lat


async def bench_layers(reactor, pkg, calls, rounds=15):
    """Per-call p50 for every configuration, executors side by side, called
    in alternating rounds of ``calls // rounds``."""
    from twisted.internet import defer

    configs = {"all": ()}
    for name in LAYERS:
        configs[f"without {name}"] = (name,)
    configs["without all"] = LAYERS
    executors = {}
    try:
        for name, disabled in configs.items():
            ex = Executor(reactor, ExecConfig(max_queue=64, allow_unconfined=bool(disabled),
                                              disable_layers=tuple(disabled)))
            executors[name] = ex
            await defer.ensureDeferred(ex.start())
            await timed_calls(ex, pkg, 20)  # warm up
        lat = {name: [] for name in configs}
        round_p50 = {name: [] for name in configs}
        cpu = {name: 0.0 for name in configs}  # CPU seconds, every process, None if unreadable
        per_round = max(1, calls // rounds)
        order = list(executors)
        for i in range(rounds):
            # A different order each round, so no configuration always runs
            # first after a switch.
            for name in order[i % len(order):] + order[:i % len(order)]:
                c0 = cpu_snapshot(executors[name])
                got = await timed_calls(executors[name], pkg, per_round)
                c1 = cpu_snapshot(executors[name])
                cpu[name] = None if None in (c0, c1, cpu[name]) else cpu[name] + c1 - c0
                lat[name] += got
                round_p50[name].append(pct(got, 50))
        out = {name: summary(samples) for name, samples in lat.items()}
        # A layer's cost: the median over rounds of (every layer on) minus
        # (that one off), each pair measured close together.
        for name in configs:
            diffs = [a - b for a, b in zip(round_p50["all"], round_p50[name])]
            out[name]["paired_cost_ms"] = round(statistics.median(diffs) * 1000, 3)
            n = len(lat[name])
            out[name]["cpu_ms_per_call"] = round(cpu[name] * 1000 / n, 3) if cpu[name] else None
        return out
    finally:
        for ex in executors.values():
            await defer.ensureDeferred(ex.stop())


async def bench_versus_bwrap(reactor, pkg, fresh, rounds=10):
    """bwrap and jailed per-call p50 from alternating rounds."""
    from twisted.internet import defer

    argv = bwrap_argv(pkg)
    if argv is None:
        return None
    ex = Executor(reactor, ExecConfig(max_queue=64))
    try:
        await defer.ensureDeferred(ex.start())
        await timed_calls(ex, pkg, 20)
        jailed, bw = [], []
        for _ in range(rounds):
            bw += bench_bwrap(max(1, fresh // rounds), pkg)
            jailed += await timed_calls(ex, pkg, 20)
        return {"bwrap": summary(bw), "jailed": summary(jailed),
                "ratio": round(pct(bw, 50) / pct(jailed, 50), 2)}
    finally:
        await defer.ensureDeferred(ex.stop())


def _proc_cpu_s(pid, children=False):
    """utime + stime (and with ``children``, that of its reaped children) of ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(ex):
    """CPU seconds so far of this process, the zygote, and the template with
    the jailed children it reaped; None where they cannot be read (a non-root
    peer's zygote, in its user namespace, is not dumpable)."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    total = me.ru_utime + me.ru_stime
    zygote = ex.zygote_pid
    try:
        total += _proc_cpu_s(zygote)
        with open(f"/proc/{zygote}/task/{zygote}/children") as f:
            kids = [int(k) for k in f.read().split()]
        templates = []
        for kid in kids:
            with open(f"/proc/{kid}/comm") as f:
                if f.read().strip() == "orb-template":
                    templates.append(kid)
        if len(templates) != 1:
            return None
        return total + _proc_cpu_s(templates[0], children=True)
    except (OSError, TypeError, ValueError):
        return None


async def bench_executor(reactor, pkg, calls, reuse, prefork=True):
    from twisted.internet import defer, task

    ex = Executor(reactor, ExecConfig(max_queue=64, prefork=prefork, max_concurrent=THROUGHPUT_CONCURRENCY))
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
        cpu0 = cpu_snapshot(ex)
        for _ in range(window):
            one()
        await done
        elapsed = time.perf_counter() - t
        cpu1 = cpu_snapshot(ex)
        cpu_ms = (cpu1 - cpu0) * 1000 / total if None not in (cpu0, cpu1) else None
        return {"latency": summary(lat), "boot": summary(boot), "exec": summary(run),
                "latency_5ms_apart": summary(gapped),
                "throughput_per_s": round(total / elapsed, 1), "throughput_calls": total,
                "cpu_ms_per_call": round(cpu_ms, 3) if cpu_ms else None,
                "cpu_bound_per_s": round(_cores() * 1000 / cpu_ms, 1) if cpu_ms else None,
                "throughput_failed": state["other"], "concurrency": ex.config.max_concurrent}
    finally:
        await defer.ensureDeferred(ex.stop())


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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

        from twisted.internet import defer, task

        box = {}

        async def run_all(reactor):
            box["per_call"] = await bench_executor(reactor, pkg, args.calls, "per-call")
            box["warm"] = await bench_executor(reactor, pkg, args.calls, "per-function")
            box["versus"] = await bench_versus_bwrap(reactor, pkg, args.fresh)
            box["layers"] = await bench_layers(reactor, pkg, args.layer_calls)

        try:
            task.react(lambda reactor: defer.ensureDeferred(run_all(reactor)))
        except SystemExit as e:
            if e.code:
                raise
        results["jailed_per_call"] = box["per_call"]
        results["warm_worker"] = box["warm"]
        results["layers"] = box["layers"]
        results["versus_bwrap"] = box["versus"]
        results["bwrap"] = box["versus"]["bwrap"] if box["versus"] else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    jailed = results["jailed_per_call"]["latency"]["p50_ms"]
    warm = results["warm_worker"]["latency"]["p50_ms"]
    tput = results["jailed_per_call"]["throughput_per_s"]
    versus = results["versus_bwrap"]
    layers = results["layers"]
    results["layer_cost_ms"] = {name: layers[f"without {name}"]["paired_cost_ms"]
                                for name in LAYERS + ("all",)}
    all_cpu = layers["all"]["cpu_ms_per_call"]
    results["layer_cpu_cost_ms"] = {
        name: (round(all_cpu - layers[f"without {name}"]["cpu_ms_per_call"], 3)
               if all_cpu and layers[f"without {name}"]["cpu_ms_per_call"] else None)
        for name in LAYERS + ("all",)}
    cpu_bound = results["jailed_per_call"]["cpu_bound_per_s"]
    results["targets"] = {
        "jailed_p50_le_5ms": jailed <= 5.0,
        "ge_4x_faster_than_bwrap": versus is not None and versus["ratio"] >= 4,
        "warm_p50_le_1ms": warm <= 1.0,
        "throughput_ge_400": tput >= 400.0,
        "cpu_bound_throughput_ge_400": cpu_bound is not None and cpu_bound >= 400.0,
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
        if r["cpu_ms_per_call"]:
            print(f"  CPU per call in all processes {r['cpu_ms_per_call']:.3f} ms -> "
                  f"{r['cpu_bound_per_s']:.0f} calls/s on {_cores()} idle cores")
        else:
            print("  CPU per call: n/a (the zygote's counters cannot be read)")
    if versus is not None:
        print(f"alternating rounds: bwrap p50 {versus['bwrap']['p50_ms']:.3f} ms, jailed p50 "
              f"{versus['jailed']['p50_ms']:.3f} ms: bwrap / jailed = {versus['ratio']:.2f}x")
    print("per-layer cost (alternating rounds; median over rounds of the round's p50 with every\n"
          "layer minus its p50 without that one):")
    for name, row in layers.items():
        cpu = row["cpu_ms_per_call"]
        print(f"  {name:22} p50 {row['p50_ms']:7.3f} ms   CPU per call "
              + (f"{cpu:.3f} ms" if cpu else "n/a"))
    for name, cost in results["layer_cost_ms"].items():
        cpu_cost = results["layer_cpu_cost_ms"][name]
        cpu_text = f"{cpu_cost:+7.3f} ms" if cpu_cost is not None else "n/a"
        print(f"  cost of {name:14} p50 {cost:+7.3f} ms   CPU {cpu_text}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    for k, ok in results["targets"].items():
        print(f"target {k}: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
