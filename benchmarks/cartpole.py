"""Benchmark dqn_cartpole.py over several seeds and write a Markdown table of the results.

    python benchmarks/cartpole.py                     # seeds 1-10, default arguments, one run at a time
    python benchmarks/cartpole.py --jobs 2 -- --learning-rate 5e-4   # extra args go to dqn_cartpole.py

Per seed: environment steps to the first greedy evaluation >= 475 (CartPole-v1's reward threshold),
the final greedy return, the wall-clock of the whole process and the training steps per second; then the
medians. Runs go one at a time by default so that the wall-clock is not shared with another run.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import machine, report

ROOT = Path(__file__).resolve().parent.parent


def run_seed(seed: int, extra: list[str], run_root: str, script: Path) -> dict:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(script), "--seed", str(seed), "--run-root",
                    f"{run_root}/{seed}", *extra], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    summary = json.loads(next(Path(run_root, str(seed)).glob("*/summary.json")).read_text())
    return {**summary, "process_seconds": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 11)))
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (timings are fair only with 1)")
    parser.add_argument("--script", type=Path, default=ROOT / "dqn_cartpole.py", help="the script to benchmark")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("extra", nargs="*", help="arguments passed on to dqn_cartpole.py (after --)")
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory() as run_root, ThreadPoolExecutor(opts.jobs) as pool:
        results = list(pool.map(lambda s: run_seed(s, opts.extra, run_root, opts.script), opts.seeds))

    threshold = 475
    lines = [f"{opts.script.name} {' '.join(opts.extra) or '(default arguments)'}",
             f"machine: {machine()}, no GPU used, {opts.jobs} run(s) at a time", "",
             "| seed | steps to greedy ≥ 475 | final greedy return | wall-clock (s) | SPS |",
             "|---:|---:|---:|---:|---:|"]
    for r in results:
        solved = r["first_solved_step"]
        lines.append(f"| {r['seed']} | {solved if solved is not None else 'never'} | {r['eval_mean_return']:.1f} "
                     f"| {r['process_seconds']:.1f} | {r['sps']:.0f} |")
    solved_steps = [r["first_solved_step"] if r["first_solved_step"] is not None else float("inf") for r in results]
    lines.append(f"| **median** | {statistics.median(solved_steps):g} | "
                 f"{statistics.median(r['eval_mean_return'] for r in results):.1f} | "
                 f"{statistics.median(r['process_seconds'] for r in results):.1f} | "
                 f"{statistics.median(r['sps'] for r in results):.0f} |")
    n_solved = sum(s != float("inf") for s in solved_steps)
    n_final = sum(r["eval_mean_return"] >= threshold for r in results)
    lines += ["", f"reached greedy ≥ {threshold}: {n_solved}/{len(results)} seeds; "
                  f"ended the run there: {n_final}/{len(results)}"]
    report(lines, opts.out)


if __name__ == "__main__":
    main()
