"""Steps per second of dqn_atari.py while it learns, the replay memory it allocates, and a learning run.

    python benchmarks/atari.py                                   # Pong, 1 and 2 envs, 30k steps each
    python benchmarks/atari.py --num-envs 4 --steps 50000 -- --device cuda
    python benchmarks/atari.py --learning-run 1000000 --env-id PongNoFrameskip-v4 --out results.md
    python benchmarks/atari.py --table runs/benchmark-learning/<run>   # the same table for a run stopped early

Each run collects `--learning-starts` steps, then learns (one gradient step of 32 every 4 steps). The
steady-state rate is measured between the progress points after learning started, from the wall-clock
times TensorBoard records, so start-up, warm-up and the final evaluation do not count.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine, report
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent


def learning_sps(env_id: str, num_envs: int, steps: int, learning_starts: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as run_root:
        subprocess.run([sys.executable, str(ROOT / "dqn_atari.py"), "--env-id", env_id, "--num-envs", str(num_envs),
                        "--total-timesteps", str(steps), "--learning-starts", str(learning_starts),
                        "--buffer-size", "100000", "--eval-episodes", "1", "--no-save-model",
                        "--run-root", run_root, *extra], check=True, stdout=subprocess.DEVNULL)
        run_dir = next(Path(run_root).iterdir())
        events = EventAccumulator(str(run_dir))
        events.Reload()
        points = [e for e in events.Scalars("charts/SPS") if e.step > learning_starts + 5_000]
        summary = json.loads((run_dir / "summary.json").read_text())
    first, last = points[0], points[-1]
    return {"num_envs": num_envs, "learning_sps": (last.step - first.step) / (last.wall_time - first.wall_time),
            "whole_run_sps": summary["sps"], "device": "cuda" if "cuda" in extra else "cpu"}


def learning_run(env_id: str, steps: int, extra: list[str]) -> Path:
    """One training run: default arguments but its length (so ε decays over its first 10 %), 1M-transition
    memory, 5 evaluation games every 100k steps. Returns its run directory."""
    run_root = ROOT / "runs" / "benchmark-learning"
    subprocess.run([sys.executable, str(ROOT / "dqn_atari.py"), "--env-id", env_id, "--total-timesteps", str(steps),
                    "--eval-frequency", "100000", "--eval-episodes", "5", "--run-root", str(run_root), *extra],
                   check=True)
    return max(run_root.iterdir(), key=lambda p: p.stat().st_mtime)


def learning_table(run_dir: Path) -> list[str]:
    """A run's evaluations and the mean score of its training games between them, from its TensorBoard events
    (so that a run stopped early can be reported too)."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    games = events.Scalars("charts/episodic_return")
    lines = ["| step | evaluation (5 games, ε = 0.05) | training games since the previous row: mean score |",
             "|---:|---:|---:|"]
    previous = 0
    for point in events.Scalars("eval/mean_return"):
        scores = [g.value for g in games if previous < g.step <= point.step]
        mean = f"{sum(scores) / len(scores):.1f} ({len(scores)} games)" if scores else "–"
        lines.append(f"| {point.step:,} | {point.value:.1f} | {mean} |")
        previous = point.step
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        lines.append(f"\n{summary['global_step']:,} steps in {summary['wall_seconds'] / 60:.0f} min "
                     f"({summary['sps']:.0f} steps/s){', interrupted' if summary['interrupted'] else ''}.")
    else:
        last = events.Scalars("charts/SPS")[-1]
        lines.append(f"\nStopped without a summary; last progress point: step {last.step:,} at {last.value:.0f} "
                     f"steps/s on average since the start.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="ALE/Pong-v5")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--learning-starts", type=int, default=5_000)
    parser.add_argument("--learning-run", type=int, default=0, metavar="STEPS",
                        help="instead of speed, train once for STEPS steps and report the evaluations")
    parser.add_argument("--table", type=Path, default=None, metavar="RUN_DIR",
                        help="only write the learning table of an existing run directory")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("extra", nargs="*", help="arguments passed on to dqn_atari.py (after --)")
    opts = parser.parse_args()
    if opts.learning_run or opts.table:
        run_dir = opts.table or learning_run(opts.env_id, opts.learning_run, opts.extra)
        report([f"dqn_atari.py, run {run_dir.name}", f"machine: {machine()}", "", *learning_table(run_dir)], opts.out)
        return

    lines = [f"dqn_atari.py on {opts.env_id}: {opts.steps:,} steps, learning from step {opts.learning_starts:,} "
             f"{' '.join(opts.extra)}",
             f"machine: {machine()}", "",
             "| envs | device | steps/s while learning | steps/s, whole run |", "|---:|---|---:|---:|"]
    for num_envs in opts.num_envs:
        r = learning_sps(opts.env_id, num_envs, opts.steps, opts.learning_starts, opts.extra)
        lines.append(f"| {num_envs} | {r['device']} | {r['learning_sps']:.0f} | {r['whole_run_sps']:.0f} |")
    report(lines, opts.out)


if __name__ == "__main__":
    main()
