"""Steps per second of a script while it learns, one run at a time (nothing else may share the machine).

    python -m benchmarks.tools.speed dqn_atari.py --repeat 3 --from-step 10000 -- --env-id PongNoFrameskip-v4 \\
        --total-timesteps 30000 --learning-starts 5000 --buffer-size 100000
    python -m benchmarks.tools.speed sac_minitaur.py --grid num-threads=1,2 --grid num-envs=1,2 --from-step 7000 \\
        -- --total-timesteps 15000 --learning-starts 5000 --eval-frequency 1000000 --eval-episodes 1

The rate is measured between the first progress point at or after --from-step (set it past learning
starts) and the last one, from the wall-clock times TensorBoard records with `charts/SPS`, so start-up,
collection before learning and the final evaluation do not count; the whole run's rate (summary.json)
is given beside it. Settings are --grid combinations, as for sweep.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchmarks.tools.common import machine, report
from benchmarks.tools.sweep import parse_grid, setting_name

ROOT = Path(__file__).resolve().parents[2]


def learning_speed(script: str, args: list[str], from_step: int) -> tuple[float, float]:
    """(steps/s while learning, steps/s of the whole run) of one run of `script args`."""
    with tempfile.TemporaryDirectory() as run_root:
        subprocess.run([sys.executable, str(ROOT / script), *args, "--no-save-model", "--run-root", run_root],
                       check=True, stdout=subprocess.DEVNULL)
        run_dir = next(Path(run_root).iterdir())
        events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        events.Reload()
        points = [e for e in events.Scalars("charts/SPS") if e.step >= from_step]
        if len(points) < 2:
            raise SystemExit(f"error: fewer than two progress points after step {from_step:,}: run longer")
        whole = json.loads((run_dir / "summary.json").read_text())["sps"]
    return (points[-1].step - points[0].step) / (points[-1].wall_time - points[0].wall_time), whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script")
    parser.add_argument("--grid", action="append", default=[], help="flag=value1,value2,... (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting, interleaved across settings")
    parser.add_argument("--from-step", type=int, required=True, help="measure from this step on (past learning starts)")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args, script_args = parser.parse_known_args()
    script_args = [a for a in script_args if a != "--"]
    settings = parse_grid(args.grid)
    rates: dict[str, list[tuple[float, float]]] = {setting_name(s): [] for s in settings}
    for _ in range(args.repeat):  # interleaved, so that a drift of the machine affects every setting alike
        for setting in settings:
            rates[setting_name(setting)].append(learning_speed(args.script, [*script_args, *setting], args.from_step))
    lines = [f"Command: `python -m benchmarks.tools.speed {' '.join(sys.argv[1:])}`", "", f"Machine: {machine()}", "",
             "| setting | steps/s while learning, per run | median | whole run, median |", "|---|---|---:|---:|"]
    for name, runs in rates.items():
        lines.append(f"| {name} | {', '.join(f'{learning:.0f}' for learning, _ in runs)} | "
                     f"{statistics.median(r for r, _ in runs):.0f} | {statistics.median(w for _, w in runs):.0f} |")
    report(lines, args.out)


if __name__ == "__main__":
    main()
