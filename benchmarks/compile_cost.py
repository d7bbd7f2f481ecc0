"""What a cold start compiles: every Numba specialisation a command compiles, and its cost.

A fresh clone has no Numba cache, so its first run compiles every kernel it touches (the
`cache=True` files then make later runs load them instead). This script runs a command the
way a fresh clone would (an empty NUMBA_CACHE_DIR), records every compilation in every Python
process it starts (examples, pytest and the subprocesses they spawn), and prints one row per
kernel: how many specialisations (dtype / layout signatures) were compiled and the CPU seconds
they took. With --warm it runs the command a second time on the now-filled cache.

    python benchmarks/compile_cost.py                    # examples/train_tiny_llama.py --quick
    python benchmarks/compile_cost.py --warm             # ... then once more, from the cache
    python benchmarks/compile_cost.py -- python -m pytest -q tests/test_kernels_attention.py
    python benchmarks/compile_cost.py --json
    python benchmarks/compile_cost.py --ahead off         # without pipeline.compile_ahead's helper (before/after)

CPU seconds (time.thread_time of the compiling thread), not wall-clock: compilation is
single-threaded, so on a shared machine CPU time is the part that does not depend on how many
other jobs wait for the cores. Even CPU time grows when the other hyperthread of the core is
busy, so the table also reports a fixed pure-Python loop's CPU time (`calibration`) measured
in the same processes: compare runs by their ratio to it. Times are exclusive: a kernel that
calls another @njit function is charged only for its own part.

The last line says how much of the compiling was Python's garbage collector (collections that
ran while a kernel compiled; they are inside the kernels' rows): ~1.3 of ~13 CPU s in a
--quick run, most of it ~14 full collections (benchmarks/README.md, "Cold start").

How: a `sitecustomize.py` on PYTHONPATH wraps numba's Dispatcher.compile in every process
(so a site-wide sitecustomize, if there is one, is not run during the measurement).
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = r'''
import atexit, json, os, threading, time

def _calibrate():  # a fixed CPU-bound loop: how fast this core is right now
    t = time.thread_time()
    s = 0
    for i in range(2_000_000):
        s += i
    return time.thread_time() - t

_out = os.environ.get("COMPILE_COST_OUT")
if _out:
    open(f"{_out}.{os.getpid()}.started", "w").close()  # the harness waits for this process's dump
    from numba.core import dispatcher as _dispatcher, sigutils as _sigutils

    _original = _dispatcher.Dispatcher.compile
    _calib = [_calibrate()]
    # One stack per thread: the kernel pool's threads reach a kernel's first call together; one
    # compiles it while the others wait on Numba's compile lock (their thread time stays ~0).
    _local, _done = threading.local(), {}

    def compile(self, sig):
        args, _ = _sigutils.normalize_signature(sig)
        if tuple(args) in self.overloads:  # already there: nothing is compiled
            return _original(self, sig)
        hits, before = sum(self._cache_hits.values()), len(self.overloads)
        stack = _local.__dict__.setdefault("stack", [])
        stack.append(0.0)
        t0 = time.thread_time()
        try:
            return _original(self, sig)
        finally:
            dt = time.thread_time() - t0
            nested = stack.pop()
            if stack:
                stack[-1] += dt
            # A thread that waited on the lock while another compiled this signature also gets
            # here (with ~0 s): per signature, keep the record of the thread that did the work.
            key = (id(self), tuple(args))
            if len(self.overloads) > before and (key not in _done or _done[key]["cpu_s"] < dt - nested):
                _done[key] = dict(
                    name=f"{self.py_func.__module__}.{self.py_func.__qualname__}", sig=str(sig), cpu_s=dt - nested,
                    from_cache=sum(self._cache_hits.values()) > hits, parallel=bool(self.targetoptions.get("parallel")))

    _dispatcher.Dispatcher.compile = compile

    # Python's garbage collector inside compilation: Numba allocates many objects while it compiles,
    # so collections (full ones traverse the whole heap) run in the middle of it and their time is
    # part of each kernel's row. Counted here (thread time of collections that start while this
    # thread compiles), by generation, so a table can say how much of the total they are.
    import gc as _gc
    _gc_t = {}
    _gc_sum = dict(cpu_s=[0.0, 0.0, 0.0], count=[0, 0, 0])

    def _gc_callback(phase, info):
        if not getattr(_local, "stack", None):
            return
        if phase == "start":
            _gc_t[threading.get_ident()] = time.thread_time()
        elif threading.get_ident() in _gc_t:
            g = info["generation"]
            _gc_sum["cpu_s"][g] += time.thread_time() - _gc_t.pop(threading.get_ident())
            _gc_sum["count"][g] += 1

    _gc.callbacks.append(_gc_callback)

    def _dump():
        _calib.append(_calibrate())
        with open(f"{_out}.{os.getpid()}.json", "w") as f:
            json.dump(dict(records=list(_done.values()), calibration_s=min(_calib), gc=_gc_sum, pid=os.getpid()), f)

    atexit.register(_dump)
'''


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


def run(command: list, cache_dir: str, probe_dir: str, tag: str, ahead: str = "auto") -> dict:
    out = os.path.join(probe_dir, tag)
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, COMPILE_COST_OUT=out)
    env["PYTHONPATH"] = os.pathsep.join([probe_dir, REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    if ahead != "auto":
        env["MINILLM_COMPILE_AHEAD"] = "1" if ahead == "on" else "0"
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(stderr[-3000:])
        raise SystemExit(f"compile_cost: {' '.join(command)} failed with exit code {proc.returncode}")
    # processes the command started and left running dump when they end (pipeline.compile_ahead's
    # helper is stopped at the command's exit; one killed by a signal never dumps: stop waiting for it)
    deadline = time.time() + 300
    while time.time() < deadline and any(_alive(int(f.split(".")[-2])) for f in glob.glob(out + ".*.started")
                                         if not os.path.exists(f[: -len("started")] + "json")):
        time.sleep(0.2)
    files = glob.glob(out + ".*.json")
    dumps = [json.load(open(f)) for f in files]
    records = [r for d in dumps for r in d["records"]]
    own = [r for d in dumps if d.get("pid") == proc.pid for r in d["records"] if not r["from_cache"]]
    per = collections.defaultdict(lambda: dict(compiled=0, cpu_s=0.0, loaded=0, load_cpu_s=0.0, signatures=set(), parallel=False))
    for r in records:
        a = per[r["name"]]
        if r["from_cache"]:
            a["loaded"] += 1
            a["load_cpu_s"] += r["cpu_s"]
        else:
            a["compiled"] += 1
            a["cpu_s"] += r["cpu_s"]
        a["signatures"].add(r["sig"])
        a["parallel"] |= r["parallel"]
    kernels = {k: dict(v, signatures=sorted(v["signatures"])) for k, v in per.items()}
    gc_cpu = [sum(d.get("gc", {}).get("cpu_s", [0, 0, 0])[g] for d in dumps) for g in range(3)]
    gc_count = [sum(d.get("gc", {}).get("count", [0, 0, 0])[g] for d in dumps) for g in range(3)]
    return dict(
        command=command, processes=len(files), wall_s=wall, load_average=os.getloadavg(),
        calibration_s=min((d["calibration_s"] for d in dumps), default=None),
        compile_cpu_s=sum(v["cpu_s"] for v in kernels.values()), load_cpu_s=sum(v["load_cpu_s"] for v in kernels.values()),
        own_compile_cpu_s=sum(r["cpu_s"] for r in own), own_compilations=len(own),
        gc_in_compile_cpu_s=gc_cpu, gc_in_compile_collections=gc_count,
        kernels=kernels,
    )


def print_table(res: dict, title: str, show_signatures: bool) -> None:
    print(f"\n{title}: {' '.join(res['command'])}")
    print(f"{res['processes']} process(es), {res['wall_s']:.1f} s wall, load average {res['load_average'][0]:.1f}; "
          f"calibration loop {res['calibration_s']:.3f} CPU s (lower = a less contended core)")
    print(f"compiling: {res['compile_cpu_s']:.1f} CPU s; loading from the cache: {res['load_cpu_s']:.1f} CPU s")
    if res["processes"] > 1:
        print(f"of which the command's own process: {res['own_compile_cpu_s']:.1f} CPU s ({res['own_compilations']} "
              f"compilations); the rest ran in the processes it started (e.g. pipeline.compile_ahead's helper)")
    print("| kernel | parallel | compiled | CPU s | from cache | CPU s |")
    print("|---|---|---:|---:|---:|---:|")
    helpers = dict(compiled=0, cpu_s=0.0)
    for name, a in sorted(res["kernels"].items(), key=lambda kv: -(kv[1]["cpu_s"] + kv[1]["load_cpu_s"])):
        if not name.startswith("minillm."):  # np.empty, min, str, ... that Numba compiles for a kernel
            helpers["compiled"] += a["compiled"]
            helpers["cpu_s"] += a["cpu_s"]
            continue
        print(f"| `{name[len('minillm.'):]}` | {'yes' if a['parallel'] else ''} | {a['compiled']} | {a['cpu_s']:.2f} "
              f"| {a['loaded']} | {a['load_cpu_s']:.2f} |")
        if show_signatures:
            for s in a["signatures"]:
                print(f"|   {s[:150]} | | | | | |")
    print(f"| Numba's own helpers (np.empty, min, ...) | | {helpers['compiled']} | {helpers['cpu_s']:.2f} | | |")
    gc_cpu, gc_n = res["gc_in_compile_cpu_s"], res["gc_in_compile_collections"]
    print(f"of the compiling, Python's garbage collector: {sum(gc_cpu):.2f} CPU s ({gc_n[2]} full collections "
          f"{gc_cpu[2]:.2f} s, {gc_n[0] + gc_n[1]} young ones {gc_cpu[0] + gc_cpu[1]:.2f} s), inside the rows above")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="*", help="the command to run (after --); default: the tiny LLaMA --quick run")
    p.add_argument("--warm", action="store_true", help="run the command again on the filled cache")
    p.add_argument("--signatures", action="store_true", help="list each kernel's compiled signatures")
    p.add_argument("--ahead", choices=["auto", "on", "off"], default="auto",
                   help="pipeline.compile_ahead's helper: as a user gets it (auto: when a core is idle), always "
                        "(MINILLM_COMPILE_AHEAD=1) or never (=0; the run compiles everything itself)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        probe_dir, cache_dir = os.path.join(tmp, "probe"), os.path.join(tmp, "numba_cache")
        os.makedirs(probe_dir)
        os.makedirs(cache_dir)
        with open(os.path.join(probe_dir, "sitecustomize.py"), "w") as f:
            f.write(PROBE)
        command = args.command or [sys.executable, "examples/train_tiny_llama.py", "--quick", "--no-progress",
                                   "--out-dir", os.path.join(tmp, "run")]
        results = {"cold": run(command, cache_dir, probe_dir, "cold", args.ahead)}
        if args.warm:
            if not args.command:  # a second run of the example needs its own out dir
                command = command[:-1] + [os.path.join(tmp, "run2")]
            results["warm"] = run(command, cache_dir, probe_dir, "warm", args.ahead)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    for tag, res in results.items():
        print_table(res, f"{tag} start", args.signatures)


if __name__ == "__main__":
    main()
