"""Learning curves and speed of sac_minitaur.py: Minitaur at 100k steps over several seeds, Pendulum-v1.

    python benchmarks/sac.py                                   # Minitaur and Pendulum, seeds 1-3
    python benchmarks/sac.py --which minitaur --seeds 1 2 3 4 5 -- --num-envs 2
    python benchmarks/sac.py --parallel 2                      # two runs at a time (each then gets 1 core)
    python benchmarks/sac.py --which speed                     # steps/s by torch threads and envs

Each run uses the script's defaults (plus any arguments after --); the table gives the greedy evaluation
(mean of 10 episodes) at every evaluation point, the final one averaged over seeds, wall-clock and steps/s.
The speed table measures steps/s while learning (one update of batch 256 per step) on the Minitaur,
between steps 7,000 and 15,000 of a run that learns from step 5,000, from TensorBoard's wall-clock times.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import machine, report
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    "minitaur": ["--env-id", "MinitaurBulletEnv-v0", "--total-timesteps", "100000"],
    "pendulum": ["--env-id", "Pendulum-v1", "--total-timesteps", "15000", "--learning-starts", "1000",
                 "--eval-frequency", "2500"],
}


def run(which: str, seed: int, extra: list[str], log_dir: Path | None) -> dict:
    with tempfile.TemporaryDirectory() as run_root:
        log = open(log_dir / f"{which}_{seed}.log", "w") if log_dir else subprocess.DEVNULL
        subprocess.run([sys.executable, str(ROOT / "sac_minitaur.py"), *SETTINGS[which], "--seed", str(seed),
                        "--no-save-model", "--run-root", run_root, *extra], check=True, stdout=log,
                       stderr=subprocess.STDOUT)
        return json.loads(next(Path(run_root).glob("*/summary.json")).read_text())


def learning_sps(threads: int, num_envs: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as run_root:
        subprocess.run([sys.executable, str(ROOT / "sac_minitaur.py"), "--total-timesteps", "15000",
                        "--learning-starts", "5000", "--eval-frequency", "1000000", "--eval-episodes", "1",
                        "--num-threads", str(threads), "--num-envs", str(num_envs), "--no-save-model",
                        "--run-root", run_root, *extra], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        events = EventAccumulator(str(next(Path(run_root).iterdir())))
        events.Reload()
        points = [e for e in events.Scalars("charts/SPS") if e.step >= 7_000]
    return (points[-1].step - points[0].step) / (points[-1].wall_time - points[0].wall_time)


def speed_table(extra: list[str]) -> list[str]:
    lines = ["", "MinitaurBulletEnv-v0: steps/s while learning", "", "| torch threads | envs | steps/s |",
             "|---:|---:|---:|"]
    for threads in [1, 2]:
        for num_envs in [1, 2]:
            lines.append(f"| {threads} | {num_envs} | {learning_sps(threads, num_envs, extra):.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--which", choices=[*SETTINGS, "speed"], nargs="+", default=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this file")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep each run's progress lines here")
    parser.add_argument("extra", nargs="*", help="arguments passed on to sac_minitaur.py (after --)")
    opts = parser.parse_args()

    lines = [f"sac_minitaur.py, defaults {' '.join(opts.extra)}; {opts.parallel} run(s) at a time",
             f"machine: {machine()}"]
    for which in opts.which:
        if which == "speed":
            lines += speed_table(opts.extra)
            continue
        with ThreadPoolExecutor(opts.parallel) as pool:
            summaries = list(pool.map(lambda seed: run(which, seed, opts.extra, opts.log_dir), opts.seeds))
        steps = [step for step, _ in summaries[0]["eval_curve"]]
        lines += ["", f"{SETTINGS[which][1]}: greedy eval return (mean of 10 episodes) by env step", "",
                  "| seed | " + " | ".join(f"{s / 1000:g}k" for s in steps) + " | wall s | steps/s |",
                  "|---:|" + "---:|" * (len(steps) + 2)]
        for seed, summary in zip(opts.seeds, summaries):
            lines.append(f"| {seed} | " + " | ".join(f"{mean:.2f}" for _, mean in summary["eval_curve"]) +
                         f" | {summary['wall_seconds']:.0f} | {summary['sps']:.0f} |")
        finals = [s["eval_mean_return"] for s in summaries]
        lines += ["", f"final: mean over seeds {np.mean(finals):.2f}, median {np.median(finals):.2f}, "
                      f"min {np.min(finals):.2f}; median wall {np.median([s['wall_seconds'] for s in summaries]):.0f} s"]
    report(lines, opts.out)


if __name__ == "__main__":
    main()
