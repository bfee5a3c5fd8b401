"""Stopping a run: Ctrl-C and SIGTERM save the checkpoint and the summary so far, exit with 128 + the
signal, and the run resumes from there; a kill -9, even during a checkpoint write, never leaves a broken
checkpoint behind."""

import importlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, only_run_dir, read_summary, run_script

CASES = {
    # script: (arguments, a line that shows training is under way, evaluation games done by then)
    "dqn_cartpole.py": (["--total-timesteps", "1000000", "--learning-starts", "128", "--eval-frequency", "500",
                         "--eval-episodes", "1"], "step ", 1),
    "dqn_atari.py": (["--total-timesteps", "1000000", "--buffer-size", "20000", "--learning-starts", "100",
                      "--eval-episodes", "1"], "run directory", 0),
    "sac_minitaur.py": (["--env-id", "Pendulum-v1", "--num-envs", "2", "--total-timesteps", "1000000",
                         "--learning-starts", "256", "--eval-frequency", "1000", "--eval-episodes", "1"], "step ", 1),
}


def start(script: str, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            start_new_session=True,
                            # a shell's background job ignores SIGINT, and the child would inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def signal_when_under_way(process: subprocess.Popen, under_way: str, signum: int, wait: float = 3.0):
    try:
        for line in process.stdout:
            if line.startswith(under_way):
                break
        time.sleep(wait)  # well into the loop: past learning_starts, gradient steps taken
        os.killpg(process.pid, signum)  # to the whole process group, as a terminal or systemd does: workers too
        return process.communicate(timeout=120)
    finally:  # never leave a million-step run behind when the test fails
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("script", CASES)
def test_a_stop_signal_saves_checkpoint_and_summary_then_the_run_resumes(tmp_path, script, signum):
    args, under_way, evaluated = CASES[script]
    process = start(script, [*args, "--run-root", str(tmp_path)])
    stdout, stderr = signal_when_under_way(process, under_way, signum)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and f"stopped by {signal.Signals(signum).name} at step" in stdout
    run_dir = only_run_dir(tmp_path)
    summary = read_summary(run_dir)
    assert summary["interrupted"] is True and 100 < summary["global_step"] < 1_000_000
    assert summary["gradient_steps"] > 0 and summary["eval_episodes"] == evaluated
    checkpoint = run_dir / script.replace(".py", ".pt")
    assert checkpoint.stat().st_size > 0 and not list(run_dir.glob("*.partial"))
    assert list(run_dir.glob("events.out.tfevents.*"))
    if signum == signal.SIGINT:
        return
    stopped_at = summary["global_step"]
    result = run_script(script, "--resume", str(checkpoint), "--total-timesteps", str(stopped_at + 300))
    assert result.returncode == 0, result.stderr
    resumed = read_summary(run_dir)
    assert resumed["global_step"] == stopped_at + 300 and resumed["interrupted"] is False
    assert resumed["gradient_steps"] > summary["gradient_steps"]
    assert resumed["eval_curve"][:len(summary["eval_curve"])] == summary["eval_curve"]


@pytest.mark.parametrize("script, args", [
    ("dqn_atari.py", ["--env-id", "ALE/Pong-v5", "--total-timesteps", "1000000", "--buffer-size", "3000",
                      "--learning-starts", "100", "--eval-frequency", "100", "--eval-episodes", "1"]),
    ("sac_minitaur.py", ["--env-id", "Pendulum-v1", "--total-timesteps", "1000000", "--learning-starts", "256",
                         "--eval-frequency", "50", "--eval-episodes", "1"]),
])
def test_kill_9_at_any_moment_leaves_a_checkpoint_that_resumes(tmp_path, script, args):
    """With a checkpoint at every (short) evaluation, a kill -9 often lands during a write: the last whole
    one survives. The kill comes a few seconds after the first evaluation, whose checkpoint follows it."""
    process = start(script, [*args, "--run-root", str(tmp_path)])
    signal_when_under_way(process, "step ", signal.SIGKILL, wait=4.0)
    run_dir = only_run_dir(tmp_path)
    checkpoint = run_dir / script.replace(".py", ".pt")
    step = torch.load(checkpoint, weights_only=False)["global_step"]
    assert step > 0
    result = run_script(script, "--resume", str(checkpoint), "--total-timesteps", str(step + 200))
    assert result.returncode == 0, result.stderr
    assert read_summary(run_dir)["global_step"] == step + 200


@pytest.mark.parametrize("module", ["dqn_cartpole", "dqn_atari", "sac_minitaur"])
def test_a_write_killed_midway_leaves_the_previous_file_whole(tmp_path, module):
    write_atomically = importlib.import_module(module).write_atomically
    path = tmp_path / "checkpoint.pt"
    write_atomically(path, lambda f: torch.save({"step": 1}, f))

    def killed_midway(f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # as if the process died here

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, killed_midway)
    assert torch.load(path)["step"] == 1


@pytest.mark.parametrize("script", ["dqn_cartpole.py", "dqn_atari.py"])
def test_a_stop_signal_ends_an_evaluation_with_its_summary(tmp_path, script):
    if script == "dqn_atari.py":
        checkpoint, episodes = ROOT / "models" / "pong_dqn.pt", "10"  # minutes of Pong
    else:
        trained = run_script(script, "--total-timesteps", "300", "--learning-starts", "128", "--eval-episodes", "1",
                             "--run-root", str(tmp_path / "trained"))
        assert trained.returncode == 0, trained.stderr
        checkpoint, episodes = only_run_dir(tmp_path / "trained") / "dqn_cartpole.pt", "1000000"
    process = start(script, ["--eval-checkpoint", str(checkpoint), "--eval-episodes", episodes,
                             "--run-root", str(tmp_path / "evaluated")])
    stdout, stderr = signal_when_under_way(process, "run directory", signal.SIGTERM)
    assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr
    summary = read_summary(only_run_dir(tmp_path / "evaluated"))
    assert summary["interrupted"] is True and summary["eval_episodes"] == 0 and summary["eval_curve"] == []
