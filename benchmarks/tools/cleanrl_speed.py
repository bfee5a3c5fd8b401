"""dqn_atari.py against CleanRL's dqn_atari.py: the same loop with the same flags, runs alternating (nothing
else may share the machine).

CleanRL's file needs gymnasium 0.29 and its own cleanrl_utils, so it runs from a checkout, in a venv of its own:

    git clone https://github.com/vwxyzjn/cleanrl /tmp/cleanrl && git -C /tmp/cleanrl checkout fe8d8a0
    python3.11 -m venv /tmp/cleanrl-venv && /tmp/cleanrl-venv/bin/pip install torch==2.13.0 \\
        gymnasium==0.29.1 ale-py==0.9.0 "numpy<2" "opencv-python<4.11" tyro tensorboard
    python -m benchmarks.tools.cleanrl_speed --cleanrl /tmp/cleanrl --python /tmp/cleanrl-venv/bin/python --repeat 3

Both run Nature DQN's loop (one-step targets, no Double DQN) at CleanRL's defaults where they set the cost
(a gradient step of 32 every 4 environment steps, the target copied every 1,000, Adam at 1e-4) with a
100,000-step memory and the same ε schedule. Ours runs twice: in float32, like for like, and as shipped
(bf16 update where the CPU has bf16 instructions). The rate is taken from the wall-clock times both scripts
record with their TD-loss points in TensorBoard, from the first point at or after --from-step to the last,
so start-up and the collection before learning do not count. ale-py 0.9 registers the Atari ids when it is
imported (0.8, which gymnasium 0.29 expects, needs ROM downloads), so CleanRL's file runs unchanged after
`import ale_py`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchmarks.tools.common import machine, report

ROOT = Path(__file__).resolve().parents[2]
OURS_FLOAT32 = ("import signal, dqn_atari; dqn_atari.bf16_is_fast = lambda device: False; "
                "[signal.signal(s, dqn_atari.request_stop) for s in (signal.SIGINT, signal.SIGTERM)]; "
                "dqn_atari.main(dqn_atari.parse_args())")
CLEANRL = "import ale_py, runpy; runpy.run_path('cleanrl/dqn_atari.py', run_name='__main__')"


def commands(args: argparse.Namespace, run_root: str) -> dict[str, tuple[list[str], Path]]:
    """{setting: (command, working directory)}; every run writes its TensorBoard events under run_root."""
    shared = ["--env-id", args.env_id, "--seed", "1", "--total-timesteps", str(args.total_timesteps),
              "--learning-starts", str(args.learning_starts), "--buffer-size", "100000", "--train-frequency", "4",
              "--target-network-frequency", "1000", "--batch-size", "32", "--learning-rate", "1e-4"]
    ours = [*shared, "--n-step", "1", "--no-double-dqn", "--exploration-steps", str(args.total_timesteps // 2),
            "--num-threads", "2", "--eval-episodes", "1", "--no-save-model", "--run-root", run_root]
    cleanrl = [*shared, "--exploration-fraction", "0.5", "--no-cuda"]
    return {"CleanRL dqn_atari.py (float32)": ([args.python, "-c", CLEANRL, *cleanrl], args.cleanrl),
            "ours, float32": ([sys.executable, "-c", OURS_FLOAT32, *ours], ROOT),
            "ours as shipped": ([sys.executable, str(ROOT / "dqn_atari.py"), *ours], ROOT)}


def learning_rate_of_one_run(command: list[str], cwd: Path, events_root: Path, from_step: int) -> float:
    """Environment steps per second between the TD-loss points of one run from from_step on."""
    before = set(events_root.glob("*")) if events_root.exists() else set()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    (run_dir,) = set(events_root.glob("*")) - before
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    points = [e for e in events.Scalars("losses/td_loss") if e.step >= from_step]
    if len(points) < 2:
        raise SystemExit(f"error: fewer than two TD-loss points after step {from_step:,}: run longer")
    return (points[-1].step - points[0].step) / (points[-1].wall_time - points[0].wall_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cleanrl", type=Path, required=True, help="a checkout of github.com/vwxyzjn/cleanrl")
    parser.add_argument("--python", required=True, help="the python of a venv in which CleanRL's file runs")
    parser.add_argument("--env-id", default="PongNoFrameskip-v4")
    parser.add_argument("--total-timesteps", type=int, default=15_000)
    parser.add_argument("--learning-starts", type=int, default=5_000)
    parser.add_argument("--from-step", type=int, default=6_000, help="measure from this step on")
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting, alternating")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as run_root:
        settings = commands(args, run_root)
        for _ in range(args.repeat):  # alternating, so that a drift of the machine affects every setting alike
            for name, (command, cwd) in settings.items():
                events_root = cwd / "runs" if name.startswith("CleanRL") else Path(run_root)
                rates.setdefault(name, []).append(learning_rate_of_one_run(command, cwd, events_root,
                                                                           args.from_step))
                print(f"{name}: {rates[name][-1]:.1f} steps/s", flush=True)
    baseline = statistics.median(rates["CleanRL dqn_atari.py (float32)"])
    lines = [f"{machine()}; {args.env_id}, steps {args.from_step:,}–{args.total_timesteps:,} of each run", "",
             "| script | steps/s while learning (each run) | median | vs CleanRL |", "|---|---|---:|---:|"]
    for name, values in rates.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {', '.join(f'{v:.1f}' for v in values)} | {median:.1f} | {median / baseline:.2f}× |")
    report(lines, args.out)


if __name__ == "__main__":
    main()
