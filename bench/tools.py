"""Tool throughput: 64 concurrent python / search calls vs sequential, and python session start latency.

Usage: python bench/tools.py [--quick] [--calls N] [--workers N] [--json]
Ratios are measured against a sequential baseline in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from appo.tools import PythonTool, SearchTool, Session, ToolCall, ToolRegistry
from appo.tools.registry import ToolsConfig

PY_CODE = "s = sum(i * i for i in range(20000))\ns"
QUERIES = [
    "who discovered penicillin",
    "capital of Australia",
    "largest moon in the solar system",
    "when did the Berlin Wall fall",
    "speed of light in vacuum",
    "author of Pride and Prejudice",
    "first person on the Moon",
    "what is Euler's number",
]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(calls: int, workers: int, starts: int) -> dict[str, float]:
    py = PythonTool()
    search = SearchTool(providers=["local"], live_cache=False)
    reg = ToolRegistry([py, search], ToolsConfig(max_workers=workers, timeout=60, retry_count=1))
    out: dict[str, float] = {}
    search.run("warm up the index")
    with reg.runtime() as rt:
        # python: one session per call (= one trajectory each), sessions pre-started in both modes
        def py_round(concurrent: bool) -> float:
            sessions = [Session() for _ in range(calls)]
            rt.execute([ToolCall("python", "0", s) for s in sessions])  # start workers
            batch = [ToolCall("python", PY_CODE, s) for s in sessions]
            if concurrent:
                t = _timed(lambda: rt.execute(batch))
            else:
                t = _timed(lambda: [py.run(c.argument, c.session) for c in batch])
            for s in sessions:
                s.close()
            return t

        out["python_sequential_s"] = py_round(False)
        out["python_concurrent_s"] = py_round(True)
        out["python_speedup"] = out["python_sequential_s"] / out["python_concurrent_s"]

        qs = [QUERIES[i % len(QUERIES)] + f" {i}" for i in range(calls)]
        out["search_sequential_s"] = _timed(lambda: [search.run(q) for q in qs])
        out["search_concurrent_s"] = _timed(lambda: rt.execute([ToolCall("search", q) for q in qs]))
        out["search_speedup"] = out["search_sequential_s"] / out["search_concurrent_s"]

        # cold start to first result, including namespaces and interpreter start
        lat = []
        for _ in range(starts):
            with Session() as s:
                lat.append(_timed(lambda s=s: py.run("1", s)))
        out["python_session_start_median_s"] = statistics.median(lat)
        out["python_session_start_max_s"] = max(lat)
        out["calls"] = calls
        out["workers"] = workers
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 calls, 3 session starts (for tests)")
    ap.add_argument("--calls", type=int, default=64)
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    calls, starts = (8, 3) if args.quick else (args.calls, 10)
    res = bench(calls, min(args.workers, calls), starts)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            print(f"{k:32s} {v:.4f}" if isinstance(v, float) else f"{k:32s} {v}")
    return res


if __name__ == "__main__":
    main()
