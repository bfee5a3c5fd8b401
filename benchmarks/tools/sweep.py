"""Sweeps on Ray: every (seed, setting) of a script as its own process, then one table and the curves.

    python -m benchmarks.tools.sweep dqn_cartpole.py --seeds 1-10 --name cartpole
    python -m benchmarks.tools.sweep dqn_cartpole.py --seeds 1-3 --grid n-step=1,5 --grid tau=0.01,1.0
    python -m benchmarks.tools.sweep sac_minitaur.py --seeds 1-3 --name minitaur -- --total-timesteps 300000
    python -m benchmarks.tools.sweep dqn_atari.py --seeds 1-4 --gpus-per-run 0.25 --address auto -- --env-id ...

A setting is one combination of the --grid values (flag=v1,v2,...; every combination is run); the
arguments after -- go to every run. Each run is a Ray task that asks for --cpus-per-run CPUs and
--gpus-per-run GPUs, so Ray places as many at a time as the machine (or the cluster) holds: on CPUs, one
run per core; on a GPU, 1 / gpus-per-run runs share it. Without --address, Ray starts inside this process
on this machine and stops with it; with --address auto (or ray://host:port) the sweep joins a running
cluster unchanged. Every node needs this checkout and its Python at the same paths (a shared filesystem
or identical images); results come back through Ray, not through the filesystem.

Everything lands in --sweep-dir (default sweeps/<name>): per run, its run directory and its output in
<setting>/seed-<n>/, and result.json once it ended. Running the same command again skips the runs that
finished, so a sweep stopped half-way resumes. A task whose worker died is retried (--retries); a run
that failed is a row in the table with its exit status and last line, never a missing one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.tools.common import machine, report
from benchmarks.tools.plot import plot

ROOT = Path(__file__).resolve().parents[2]


def run_one(command: list[str], run_root: str) -> dict:
    """A Ray task: one run of a script as a subprocess; its exit status, the end of its output and its summary."""
    started = time.time()
    process = subprocess.run([*command, "--run-root", run_root], capture_output=True, text=True)
    output = (process.stdout + process.stderr).strip().splitlines()
    summaries = sorted(Path(run_root).glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    return {"returncode": process.returncode, "last_line": output[-1] if output else "",
            "seconds": time.time() - started,
            "summary": json.loads(summaries[-1].read_text()) if summaries else None,
            "output": "\n".join(output[-200:])}


def parse_seeds(values: list[str]) -> list[int]:
    seeds = []
    for value in values:
        first, _, last = value.partition("-")
        seeds += list(range(int(first), int(last or first) + 1))
    return seeds


def parse_grid(values: list[str]) -> list[list[str]]:
    """[['--n-step', '1', '--tau', '0.01'], ...]: every combination of the --grid flags' values."""
    axes = []
    for value in values:
        flag, _, options = value.partition("=")
        if not options:
            raise SystemExit(f"error: --grid takes flag=value1,value2,..., got '{value}'")
        axes.append([(f"--{flag.lstrip('-')}", option) for option in options.split(",")])
    return [[part for pair in combination for part in pair] for combination in itertools.product(*axes)]


def setting_name(setting: list[str]) -> str:
    return " ".join(setting) if setting else "default"


def sweep(args: argparse.Namespace) -> dict[tuple[str, int], dict]:
    import ray

    script = (ROOT / args.script).resolve()
    if not script.exists():
        raise SystemExit(f"error: no script {script}")
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    task = ray.remote(run_one).options(num_cpus=args.cpus_per_run, num_gpus=args.gpus_per_run,
                                       max_retries=args.retries, retry_exceptions=False)
    results, pending = {}, {}
    for setting in parse_grid(args.grid):
        for seed in parse_seeds(args.seeds):
            name = setting_name(setting).replace(" ", "_").replace("/", "-").lstrip("-")
            folder = args.sweep_dir / name / f"seed-{seed}"
            result_file = folder / "result.json"
            if result_file.exists() and json.loads(result_file.read_text())["returncode"] == 0:
                results[(setting_name(setting), seed)] = json.loads(result_file.read_text())
                continue  # finished in an earlier attempt of this sweep
            folder.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, str(script), "--seed", str(seed), *setting, *args.script_args]
            pending[task.remote(command, str(folder.resolve()))] = (setting_name(setting), seed, folder)
    print(f"{len(results)} runs already finished, {len(pending)} to run", flush=True)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        name, seed, folder = pending.pop(done[0])
        try:
            result = ray.get(done[0])
        except Exception as e:  # the worker died more often than --retries allows
            result = {"returncode": None, "last_line": f"{type(e).__name__}: {str(e).splitlines()[0]}",
                      "seconds": None, "summary": None, "output": str(e)}
        result.update(setting=name, seed=seed, folder=str(folder))
        (folder / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        results[(name, seed)] = result
        status = "ok" if result["returncode"] == 0 else f"FAILED ({result['last_line']})"
        print(f"[{len(results)}/{len(results) + len(pending)}] {name} seed {seed}: {status}", flush=True)
    ray.shutdown()
    return results


def table(results: dict[tuple[str, int], dict], command: str, solved: float | None) -> list[str]:
    """Per run, then the median per setting, of what the runs' summaries report; `first solved` is the first
    evaluation at or above `solved`."""
    lines = [f"Command: `{command}`", "", f"Machine: {machine()}", "",
             "| setting | seed | status | steps | final eval | best eval | first solved | wall-clock (s) | steps/s |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    by_setting: dict[str, list[dict]] = {}
    for (name, seed), result in sorted(results.items()):
        summary = result["summary"] or {}
        curve = summary.get("eval_curve") or []
        first_solved = next((step for step, mean in curve if solved is not None and mean >= solved), None)
        row = {"final": summary.get("eval_mean_return"), "best": max((m for _, m in curve), default=None),
               "solved": first_solved, "wall": summary.get("wall_seconds"), "sps": summary.get("sps")}
        ok = result["returncode"] == 0
        by_setting.setdefault(name, []).append({**row, "ok": ok})
        status = "ok" if ok else f"failed: exit {result['returncode']}, {result['last_line'][:80]}"
        lines.append(f"| {name} | {seed} | {status} | {summary.get('global_step', '')} | {fmt(row['final'])} | "
                     f"{fmt(row['best'])} | {fmt(row['solved'])} | {fmt(row['wall'], 1)} | {fmt(row['sps'], 0)} |")
    lines += ["", "| setting | runs | failed | median final eval | median best eval | median wall-clock (s) "
              "| median steps/s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, rows in by_setting.items():
        ok = [r for r in rows if r["ok"]]
        lines.append(f"| {name} | {len(rows)} | {len(rows) - len(ok)} | {median(ok, 'final')} | {median(ok, 'best')} | "
                     f"{median(ok, 'wall', 1)} | {median(ok, 'sps', 0)} |")
    return lines


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def median(rows: list[dict], key: str, digits: int = 2) -> str:
    values = [r[key] for r in rows if r[key] is not None]
    return fmt(float(np.median(values)), digits) if values else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", help="dqn_cartpole.py, dqn_atari.py or sac_minitaur.py")
    parser.add_argument("--seeds", nargs="+", default=["1-3"], help="seeds and ranges, e.g. 1-10 or 1 4 7")
    parser.add_argument("--grid", action="append", default=[], help="flag=value1,value2,... (repeatable)")
    parser.add_argument("--name", help="the sweep's name (default: the script's)")
    parser.add_argument("--sweep-dir", type=Path, help="where runs and results go (default: sweeps/<name>)")
    parser.add_argument("--cpus-per-run", type=float, default=1.0)
    parser.add_argument("--gpus-per-run", type=float, default=0.0)
    parser.add_argument("--address", help="an existing Ray cluster: auto, or ray://host:port")
    parser.add_argument("--retries", type=int, default=2, help="times a task is retried when its worker dies")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    parser.add_argument("--plot", type=Path, help="also draw the evaluation curves of the runs here (PNG)")
    parser.add_argument("--solved", type=float, help="the evaluation score that counts as solved (CartPole: 475)")
    args, script_args = parser.parse_known_args()
    args.script_args = [a for a in script_args if a != "--"]
    args.name = args.name or Path(args.script).stem
    args.sweep_dir = args.sweep_dir or Path("sweeps") / args.name
    results = sweep(args)
    report(table(results, " ".join(["python", "-m", "benchmarks.tools.sweep", *sys.argv[1:]]), args.solved), args.out)
    if args.plot:
        groups: dict[str, list[Path]] = {}
        for (name, _), result in sorted(results.items()):
            if result["summary"]:
                run_dirs = sorted(Path(result["folder"]).glob("*/summary.json"))
                if not run_dirs:  # the run happened on another node: its summary came back through Ray
                    (Path(result["folder"]) / "summary.json").write_text(json.dumps(result["summary"]))
                groups.setdefault(name, []).append(run_dirs[-1].parent if run_dirs else Path(result["folder"]))
        plot(groups, "eval/mean_return", 1, args.plot, f"{args.name}: {args.script}", [])


if __name__ == "__main__":
    main()
