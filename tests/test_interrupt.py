"""Ctrl-C during training saves the checkpoint and the summary so far and exits cleanly."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, only_run_dir, read_summary

CASES = {
    # script: (arguments, a line that shows training is under way, evaluation games done by then)
    "dqn_cartpole.py": (["--total-timesteps", "1000000", "--learning-starts", "100", "--eval-frequency", "500",
                         "--eval-episodes", "1"], "step ", 1),
    "dqn_atari.py": (["--total-timesteps", "1000000", "--buffer-size", "20000", "--learning-starts", "100",
                      "--eval-episodes", "1"], "replay memory:", 0),
    "sac_minitaur.py": (["--env-id", "Pendulum-v1", "--num-envs", "2", "--total-timesteps", "1000000",
                         "--learning-starts", "256", "--eval-frequency", "1000", "--eval-episodes", "1"], "step ", 1),
}


@pytest.mark.parametrize("script", CASES)
def test_ctrl_c_saves_checkpoint_and_summary(tmp_path, script):
    args, under_way, evaluated = CASES[script]
    process = subprocess.Popen([sys.executable, str(ROOT / script), *args, "--run-root", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                               # a shell's background job ignores SIGINT, and the child would inherit that
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in process.stdout:
            if line.startswith(under_way):
                break
        time.sleep(3)  # well into the loop: past learning_starts, gradient steps taken
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole process group, workers too
        stdout, stderr = process.communicate(timeout=120)
    finally:  # never leave a million-step run behind when the test fails
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "interrupted at step" in stdout
    run_dir = only_run_dir(tmp_path)
    summary = read_summary(run_dir)
    assert summary["interrupted"] is True and 100 < summary["global_step"] < 1_000_000
    assert summary["gradient_steps"] > 0 and summary["eval_episodes"] == evaluated
    assert (run_dir / script.replace(".py", ".pt")).stat().st_size > 0
    assert list(run_dir.glob("events.out.tfevents.*"))
