"""Learning curves as PNG from run directories: every seed, their mean and their spread.

    python -m benchmarks.tools.plot ~/runs/PongNoFrameskip-v4__dqn_atari__* --out benchmarks/figures/pong.png
    python -m benchmarks.tools.plot "n-step 3=runs/a*" "n-step 1=runs/b*" --out compare.png --hline 18 goal
    python -m benchmarks.tools.plot runs/* --tag charts/episodic_return --smooth 10 --out training.png
    python -m benchmarks.tools.plot ~/runs/Pong* --out pong.png --table pong.md   # and the numbers behind it

Each argument is a run directory, or LABEL=PATTERN for a group of them (a glob); runs without a label
are grouped by env id and script, as their directory names give them. The curve of a run is read from
its TensorBoard events (so a run still under way, or stopped, can be drawn), or from the `eval_curve` of
its summary.json when it has no events. A group's mean and its min–max band are taken over the steps
that all its runs have reached. --table writes, per run, every evaluation with the mean return of the
training episodes since the one before, the mean of its last three evaluations, and the run's length,
wall-clock and steps/s.
"""

from __future__ import annotations

import argparse
import glob
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def run_curve(run_dir: Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `tag` in a run directory."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    if tag in events.Tags()["scalars"]:
        points = events.Scalars(tag)
        return np.array([p.step for p in points]), np.array([p.value for p in points])
    summary = run_dir / "summary.json"
    if tag == "eval/mean_return" and summary.exists():
        curve = np.array(json.loads(summary.read_text()).get("eval_curve") or [], dtype=float).reshape(-1, 2)
        return curve[:, 0].astype(int), curve[:, 1]
    raise SystemExit(f"error: {run_dir} has no '{tag}' curve")


def default_label(run_dir: Path) -> str:
    """'{env_id} ({script})' from a run directory named {env_id}__{script}__{seed}__{time}."""
    parts = run_dir.name.split("__")
    return f"{parts[0]} ({parts[1]})" if len(parts) == 4 else run_dir.name


def groups_of(arguments: list[str]) -> dict[str, list[Path]]:
    groups = defaultdict(list)
    for argument in arguments:
        label, _, pattern = argument.rpartition("=") if "=" in argument else ("", "", argument)
        paths = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser())) if Path(p).is_dir())
        if not paths:
            raise SystemExit(f"error: no run directory matches '{pattern}'")
        for path in paths:
            groups[label or default_label(path)].append(path)
    return groups


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values at each point (fewer at the start)."""
    if window <= 1:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.maximum(np.arange(1, len(values) + 1) - window, 0)]) / counts


def plot(groups: dict[str, list[Path]], tag: str, smooth: int, out: Path, title: str | None,
         hlines: list[tuple[float, str]]) -> None:
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, (label, run_dirs) in zip(colors, groups.items(), strict=False):  # more groups than colours: fewer
        curves = [run_curve(run_dir, tag) for run_dir in run_dirs]
        curves = [(steps, smoothed(values, smooth)) for steps, values in curves if len(steps)]
        for steps, values in curves:
            axes.plot(steps, values, color=color, alpha=0.3, linewidth=0.8)
        # mean and spread where every run has a value: on a common grid up to the shortest run
        end = min(steps[-1] for steps, _ in curves)
        grid = np.unique(np.concatenate([steps[steps <= end] for steps, _ in curves]))
        stacked = np.array([np.interp(grid, steps, values) for steps, values in curves])
        axes.plot(grid, stacked.mean(0), color=color, linewidth=2,
                  label=f"{label}, {len(curves)} run{'s' * (len(curves) > 1)}")
        if len(curves) > 1:
            axes.fill_between(grid, stacked.min(0), stacked.max(0), color=color, alpha=0.15)
    for value, text in hlines:
        axes.axhline(value, color="gray", linestyle="--", linewidth=1)
        axes.annotate(text, (axes.get_xlim()[0], value), textcoords="offset points", xytext=(4, 3), fontsize=8,
                      color="gray")
    axes.set_xlabel("environment steps")
    axes.set_ylabel(tag + (f" (mean of {smooth})" if smooth > 1 else ""))
    axes.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    print(f"wrote {out}")


def learning_table(run_dir: Path) -> list[str]:
    """A run's evaluations and the mean return of its training episodes between them, from its events."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    episodes = events.Scalars("charts/episodic_return") if "charts/episodic_return" in tags else []
    lines = [f"### {run_dir.name}", "", "| step | evaluation | training episodes since the previous row: mean return |",
             "|---:|---:|---:|"]
    previous = 0
    evaluations = events.Scalars("eval/mean_return") if "eval/mean_return" in tags else []
    for point in evaluations:
        returns = [e.value for e in episodes if previous < e.step <= point.step]
        mean = f"{np.mean(returns):.2f} ({len(returns)} episodes)" if returns else "–"
        lines.append(f"| {point.step:,} | {point.value:.2f} | {mean} |")
        previous = point.step
    if len(evaluations) >= 3:  # one lucky evaluation does not make a result
        lines.append(f"\nMean of the last three evaluations: {np.mean([p.value for p in evaluations[-3:]]):.2f}.")
    summary = run_dir / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        stopped = ", stopped early" if s.get("interrupted") else ""
        lines.append(f"\n{s['global_step']:,} steps, {s['wall_seconds'] / 60:.0f} min of training "
                     f"({s['sps']:.0f} steps/s in its last session){stopped}.")
    elif "charts/SPS" in tags:
        last = events.Scalars("charts/SPS")[-1]
        lines.append(f"\nUnder way or stopped without a summary: step {last.step:,} reached.")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories, or LABEL=PATTERN groups")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--tag", default="eval/mean_return", help="TensorBoard scalar to plot")
    parser.add_argument("--smooth", type=int, default=1, help="moving mean over this many points")
    parser.add_argument("--title")
    parser.add_argument("--hline", nargs=2, action="append", default=[], metavar=("VALUE", "TEXT"),
                        help="a dashed reference line, e.g. --hline 18 goal")
    parser.add_argument("--table", type=Path, help="also write the runs' evaluations here (Markdown)")
    args = parser.parse_args()
    groups = groups_of(args.runs)
    plot(groups, args.tag, args.smooth, args.out, args.title, [(float(value), text) for value, text in args.hline])
    if args.table:
        lines = [line for run_dirs in groups.values() for run_dir in run_dirs for line in learning_table(run_dir)]
        args.table.write_text("\n".join(lines))
        print(f"wrote {args.table}")


if __name__ == "__main__":
    main()
