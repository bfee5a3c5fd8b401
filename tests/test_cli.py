"""What every script does alike: bad input is one `error:` line and exit status 2, before any run directory
exists; runs started together never share a run directory."""

import importlib
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, assert_one_line_error, read_summary, run_script

BAD_INPUTS = {
    "dqn_cartpole.py": [
        (["--env-id", "Pendulum-v1"], "needs a Discrete action space, but 'Pendulum-v1' has Box"),
        (["--env-id", "NoSuchEnv-v0"], "cannot make env 'NoSuchEnv-v0'"),
        (["--env-id", "no_such_module:Env-v0"], "cannot make env 'no_such_module:Env-v0'"),
        (["--batch-size", "128", "--buffer-size", "64"], "--batch-size 128 is larger than --buffer-size 64"),
        (["--total-timesteps", "0"], "--total-timesteps must be positive"),
        (["--gamma", "1.5"], "--gamma must be in [0, 1]"),
        (["--eval-checkpoint", "no/such/file.pt"], "cannot load checkpoint 'no/such/file.pt'"),
        (["--resume", "no/such/file.pt"], "cannot load checkpoint 'no/such/file.pt'"),
        (["--resume", "a.pt", "--eval-checkpoint", "b.pt"], "--resume and --eval-checkpoint cannot be used together"),
        (["--learning-starts", "0"], "--learning-starts must be at least --batch-size (128)"),
        (["--n-step", "2000"], "--learning-starts must be at least --batch-size (128) and --n-step (2000), got 1000"),
        (["--learning-rate", "nan"], "--learning-rate must be positive and finite, got nan"),
        (["--num-threads", "100000"], "--num-threads must be at most this machine's"),
        (["--seed", "-3"], "--seed must be in [0,"),
        (["--hidden-sizes", "0"], "--hidden-sizes must be positive widths"),
    ],
    "dqn_atari.py": [
        (["--env-id", "CartPole-v1"], "needs an Atari (ALE) env"),
        (["--env-id", "ALE/NoSuchGame-v5"], "cannot make env 'ALE/NoSuchGame-v5'"),
        (["--env-id", "Pong-v4"], "'Pong-v4' follows neither protocol of this file: use PongNoFrameskip-v4 (DeepMind)"),
        (["--env-id", "MsPacmanNoFrameskip-v0"], "or ALE/MsPacman-v5 (sticky actions)"),
        (["--buffer-size", "10", "--batch-size", "32"], "--buffer-size 10 is too small"),
        (["--buffer-size", "100000000000"], "GB of replay memory, but only"),
        (["--total-timesteps", "-5"], "--total-timesteps must be positive"),
        (["--n-step", "0"], "--n-step must be positive"),
        (["--learning-rate", "0"], "--learning-rate must be positive"),
        (["--seed", "-1"], "--seed must be in [0,"),
        (["--seed", "4294967296"], "--seed must be in [0,"),
        (["--learning-starts", "0"], "--learning-starts must be at least --batch-size (32)"),
        (["--n-step", "50", "--learning-starts", "32"], "and --num-envs × (--n-step + 1) (51), got 32"),
        (["--eval-epsilon", "1.5"], "--eval-epsilon must be in [0, 1]"),
        (["--resume", "a.pt", "--eval-checkpoint", "b.pt"], "cannot be used together"),
        (["--eval-checkpoint", "no/such/file.pt"], "cannot load checkpoint 'no/such/file.pt'"),
    ],
    "sac_minitaur.py": [
        (["--env-id", "CartPole-v1"], "needs a continuous (Box) action space"),
        (["--env-id", "NoSuchEnv-v0"], "cannot make env 'NoSuchEnv-v0'"),
        (["--learning-starts", "10", "--batch-size", "256"], "--learning-starts must be at least --batch-size"),
        (["--num-envs", "4", "--batch-size", "2", "--learning-starts", "2"], "and --num-envs (4), got 2"),
        (["--initial-alpha", "inf"], "--initial-alpha must be positive and finite, got inf"),
        (["--tau", "1.5"], "--tau must be in [0, 1]"),
        (["--total-timesteps", "0"], "--total-timesteps must be positive"),
        (["--seed", "-1"], "--seed must be in [0,"),
        (["--video-length", "-1"], "--video-length must be >= 0"),
        (["--env-id", "Pendulum-v1", "--buffer-size", "100000000000000"], "does not fit in memory"),
        (["--eval-checkpoint", "missing.pt"], "cannot load checkpoint 'missing.pt'"),
        (["--eval-checkpoint", "models/minitaur_sac.pt", "--env-id", "Pendulum-v1"], "whose spaces differ from"),
        (["--resume", "missing.pt"], "cannot load checkpoint 'missing.pt'"),
        (["--resume", "models/minitaur_sac.pt"], "holds no training state"),
        (["--resume", "a.pt", "--eval-checkpoint", "b.pt"], "cannot be used together"),
    ],
}


@pytest.mark.parametrize("script, args, message",
                         [(script, args, message) for script, cases in BAD_INPUTS.items() for args, message in cases])
def test_bad_input_is_one_line_and_exit_2_before_any_run_directory(tmp_path, script, args, message):
    result = run_script(script, *args, "--run-root", str(tmp_path))
    assert_one_line_error(result, message)
    assert "run directory" not in result.stdout and not any(tmp_path.iterdir())


@pytest.mark.parametrize("script", list(BAD_INPUTS))
def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch, script):
    """The env id's "/" flattened, then -2, -3 for the second and third run of that second."""
    module = importlib.import_module(script.removesuffix(".py"))
    monkeypatch.setattr(module.time, "time", lambda: 1_800_000_000.5)
    args = module.Args(env_id="ALE/Pong-v5", run_root=str(tmp_path / "runs"))
    run_dirs = [module.make_run_dir(args) for _ in range(3)]
    name = f"ALE-Pong-v5__{script.removesuffix('.py')}__1__1800000000"
    assert [d.name for d in run_dirs] == [name, f"{name}-2", f"{name}-3"]
    assert all(d.is_dir() for d in run_dirs)


@pytest.mark.parametrize("script", list(BAD_INPUTS))
def test_another_scripts_checkpoint_and_a_run_root_that_is_a_file_are_input_errors(tmp_path, script):
    module = importlib.import_module(script.removesuffix(".py"))
    foreign = tmp_path / "foreign.pt"  # what load_checkpoint looks for in any of the three, with others' arguments
    torch.save({"q_network": {}, "agent": {}, "global_step": 1, "optimizer": {}, "args": {"no_such_flag": 1}}, foreign)
    with pytest.raises(module.InputError, match="holds another script's training state"):
        module.parse_args(["--resume", str(foreign)])
    (tmp_path / "a_file").touch()
    with pytest.raises(module.InputError, match="cannot create a run directory under --run-root"):
        module.make_run_dir(module.Args(run_root=str(tmp_path / "a_file")))


def test_two_runs_started_together_get_two_complete_separate_directories(tmp_path):
    """Same script, seed and second: every name either run could pick for the next minute is taken already, so
    both race for the same suffix; each must end with its own directory, checkpoint, events and summary."""
    now = int(time.time())
    for second in range(now, now + 60):
        (tmp_path / f"CartPole-v1__dqn_cartpole__1__{second}").mkdir()
    command = [sys.executable, str(ROOT / "dqn_cartpole.py"), "--total-timesteps", "600", "--learning-starts", "200",
               "--eval-frequency", "300", "--eval-episodes", "1", "--run-root", str(tmp_path)]
    runs = [subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for run in runs:
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
    run_dirs = sorted(d for d in tmp_path.iterdir() if any(d.iterdir()))
    assert len(run_dirs) == 2 and all("-" in d.name.rsplit("__", 1)[1] for d in run_dirs), run_dirs
    for run_dir in run_dirs:
        assert read_summary(run_dir)["global_step"] == 600 and read_summary(run_dir)["eval_curve"][-1][0] == 600
        assert (run_dir / "dqn_cartpole.pt").exists() and len(list(run_dir.glob("events.out.tfevents.*"))) == 1
