"""Wall time of ``pamc demo``: arms one after another (``--jobs 1``) against two at a time.

    PYTHONPATH=src python benchmarks/bench_demo.py                 # the default demo
    PYTHONPATH=src python benchmarks/bench_demo.py --quick --repeats 2

Each cell runs ``python -m pamc demo --no-progress --jobs J`` in a fresh process (every arm on
one intra-op thread, the demo's setting), on a quiet machine and beside one CPU-bound process
the benchmark starts itself (a Python busy loop, killed after the cell). Cells run
interleaved, repeat by repeat, in one run. The script prints the median wall time of each
cell, the speed-up of ``--jobs 2`` over ``--jobs 1``, the slowdown that one busy process
causes, the load average (1 min) before and after every cell, and checks that every cell
printed the same table. ``--today`` adds the demo as it ran before parallel arms (``--jobs 1
--threads 2``, PyTorch's default two threads on two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from competitor import load_while

def run_cell(jobs: int, threads: int, busy: bool, quick: bool, out: Path) -> tuple[float, float, float, str]:
    """(wall seconds, load before, load after, results.md) of one demo run."""
    cmd = [sys.executable, "-m", "pamc", "demo", "--no-progress", "--jobs", str(jobs), "--threads", str(threads),
           "-o", str(out)] + (["--quick"] if quick else [])
    with load_while(busy) as loads:
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
    return wall, *loads, (out / "results.md").read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo's --quick sizes")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--today", action="store_true", help="also --jobs 1 --threads 2")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    setups = [("--jobs 1", 1, 1), ("--jobs 2", 2, 1)] + ([("--jobs 1 --threads 2", 1, 2)] if args.today else [])
    cells = [(name, jobs, threads, busy) for busy in (False, True) for name, jobs, threads in setups]
    times: dict[tuple, list[float]] = {c: [] for c in cells}
    loads: dict[tuple, list[tuple[float, float]]] = {c: [] for c in cells}
    tables = set()
    print(f"demo{' --quick' if args.quick else ''}, usable cores {len(os.sched_getaffinity(0))}, "
          f"{args.repeats} repeat(s); load average (1 min) at start {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for n, cell in enumerate(cells):
                wall, before, after, table = run_cell(*cell[1:], args.quick, Path(tmp) / f"demo{n}")
                times[cell].append(wall)
                loads[cell].append((before, after))
                if cell[2] == 1:
                    tables.add(table)
                print(f"  repeat {rep}: {cell[0]:>20} {'busy ' if cell[3] else 'quiet'}: {wall:6.1f} s "
                      f"(load {before:.1f} -> {after:.1f})", flush=True)
    med = {c: statistics.median(t) for c, t in times.items()}
    print()
    print("| demo run | quiet (s) | 1 busy process (s) | slowdown | load avg (min-max) |")
    print("|---|---|---|---|---|")
    rows = []
    for name, jobs, threads in setups:
        quiet, busy = med[(name, jobs, threads, False)], med[(name, jobs, threads, True)]
        seen = [x for b in (False, True) for pair in loads[(name, jobs, threads, b)] for x in pair]
        print(f"| {name} | {quiet:.1f} | {busy:.1f} | {busy / quiet:.2f}x | {min(seen):.1f}-{max(seen):.1f} |")
        rows.append({"setup": name, "quiet_s": quiet, "busy_s": busy, "runs_quiet": times[(name, jobs, threads, False)],
                     "runs_busy": times[(name, jobs, threads, True)], "load_min": min(seen), "load_max": max(seen)})
    seq, par = rows[0], rows[1]
    print(f"speed-up of --jobs 2 over --jobs 1: {seq['quiet_s'] / par['quiet_s']:.2f}x quiet, "
          f"{seq['busy_s'] / par['busy_s']:.2f}x beside one busy process")
    if args.today:
        today = rows[2]
        print(f"speed-up of --jobs 2 over --jobs 1 --threads 2 (the demo before parallel arms): "
              f"{today['quiet_s'] / par['quiet_s']:.2f}x quiet, {today['busy_s'] / par['busy_s']:.2f}x busy")
    print(f"every one-thread cell printed the same table: {len(tables) == 1}")
    if args.json:
        args.json.write_text(json.dumps({"quick": args.quick, "repeats": args.repeats, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
