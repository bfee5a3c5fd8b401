"""Ctrl-C during training saves the checkpoint and the summary so far and exits cleanly."""

import os
import signal
import subprocess
import sys

from conftest import ROOT, only_run_dir, read_summary


def test_ctrl_c_saves_checkpoint_and_summary(tmp_path):
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "dqn_cartpole.py"), "--total-timesteps", "1000000", "--learning-starts", "100",
         "--eval-frequency", "500", "--eval-episodes", "1", "--run-root", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stdout:  # wait until training is under way: the first progress line
        if line.startswith("step "):
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "interrupted at step" in stdout
    run_dir = only_run_dir(tmp_path)
    summary = read_summary(run_dir)
    assert summary["interrupted"] is True and 500 <= summary["global_step"] < 1_000_000
    assert summary["eval_episodes"] == 1 and summary["gradient_steps"] > 0
    assert (run_dir / "dqn_cartpole.pt").stat().st_size > 0
    assert list(run_dir.glob("events.out.tfevents.*"))
