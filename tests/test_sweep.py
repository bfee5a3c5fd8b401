"""benchmarks/tools/sweep.py on local Ray: a real CartPole sweep with a failing setting, resumed; a dying worker.
Ray and matplotlib come from benchmarks/requirements.txt: without them these tests are skipped."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT

for module in ("ray", "matplotlib"):
    pytest.importorskip(module, reason=f"the sweep tool needs {module}: pip install -r benchmarks/requirements.txt")

SHORT = ["--", "--total-timesteps", "300", "--learning-starts", "128", "--batch-size", "64",
         "--eval-frequency", "300", "--eval-episodes", "1"]


def sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.tools.sweep", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_a_sweep_runs_every_seed_and_setting_reports_failures_and_resumes(tmp_path):
    arguments = ["dqn_cartpole.py", "--seeds", "1-2", "--grid", "gamma=0.99,1.5", "--sweep-dir", str(tmp_path),
                 "--out", str(tmp_path / "table.md"), "--plot", str(tmp_path / "curves.png"), "--solved", "0",
                 *SHORT]
    result = sweep(*arguments)
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "table.md").read_text()
    for seed in (1, 2):  # a row for every run, the failed ones included
        assert f"| --gamma 0.99 | {seed} | ok | 300 |" in table
        row = next(line for line in table.splitlines() if line.startswith(f"| --gamma 0.99 | {seed} | ok"))
        assert row.split("|")[7].strip() == "300"  # first solved: the first evaluation at or above --solved
        assert f"| --gamma 1.5 | {seed} | failed: exit 2, error: --gamma must be in [0, 1], got 1.5 |" in table
    assert "| --gamma 0.99 | 2 | 0 |" in table and "| --gamma 1.5 | 2 | 2 |" in table  # the medians' table
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    run_dirs = sorted(tmp_path.glob("gamma_0.99/seed-*/CartPole-v1__dqn_cartpole__*"))
    assert len(run_dirs) == 2

    again = sweep(*arguments)  # the finished runs are kept; only the failed ones run again
    assert again.returncode == 0, again.stderr
    assert "2 runs already finished, 2 to run" in again.stdout
    assert sorted(tmp_path.glob("gamma_0.99/seed-*/CartPole-v1__dqn_cartpole__*")) == run_dirs


FAKE_SCRIPT = """
import json, os, pathlib, signal, sys
marker = pathlib.Path(sys.argv[0]).with_suffix(".died-once")
if not marker.exists():  # the first attempt takes its Ray worker down with it
    marker.write_text("")
    os.kill(os.getppid(), signal.SIGKILL)
    raise SystemExit(1)
run_dir = pathlib.Path(sys.argv[sys.argv.index("--run-root") + 1]) / "Fake-v0__fake__1__0"
run_dir.mkdir(parents=True)
(run_dir / "summary.json").write_text(json.dumps({"global_step": 7, "eval_mean_return": 1.0, "eval_curve": [[7, 1.0]]}))
"""


def test_a_task_whose_worker_dies_is_retried(tmp_path):
    script = tmp_path / "fake.py"
    script.write_text(FAKE_SCRIPT)
    result = sweep(str(script), "--seeds", "1", "--sweep-dir", str(tmp_path / "sweep"), "--retries", "2")
    assert result.returncode == 0, result.stderr
    assert script.with_suffix(".died-once").exists()  # the first attempt did die
    saved = json.loads((tmp_path / "sweep" / "default" / "seed-1" / "result.json").read_text())
    assert saved["returncode"] == 0 and saved["summary"]["global_step"] == 7
    assert "| default | 1 | ok | 7 |" in result.stdout
