"""dqn_atari.py end to end (a short Pong run), its preprocessing, and its bad-input errors."""


import numpy as np
import pytest
import torch
from moviepy import VideoFileClip
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import dqn_atari
from conftest import only_run_dir, read_summary, run_script

SHORT = ["--buffer-size", "2000", "--learning-starts", "200", "--target-network-frequency", "100",
         "--eval-frequency", "400", "--eval-episodes", "1", "--checkpoint-frequency", "200"]


def test_smoke_train_eval_video_checkpoint_and_resume(tmp_path):
    result = run_script("dqn_atari.py", "--env-id", "ALE/Pong-v5", "--total-timesteps", "400", *SHORT,
                        "--capture-video", "--save-buffer", "--run-root", str(tmp_path / "train"))
    assert result.returncode == 0, result.stderr
    assert "replay memory: 2,000 transitions" in result.stdout
    assert "actions {0: 'NOOP', 1: 'FIRE'" in result.stdout and "(4, 84, 84), uint8" in result.stdout
    run_dir = only_run_dir(tmp_path / "train")
    assert run_dir.name.startswith("ALE-Pong-v5__dqn_atari__1__")
    summary = read_summary(run_dir)
    assert summary["global_step"] == 400 and summary["gradient_steps"] == (400 - 200) // 4
    assert summary["eval_episodes"] == 1 and -21 <= summary["eval_mean_return"] <= 21
    assert summary["replay_memory_bytes"] == 2000 * (84 * 84 + 9)
    assert list(run_dir.glob("events.out.tfevents.*"))
    with VideoFileClip(str(next((run_dir / "videos").glob("*.mp4")))) as clip:
        assert clip.duration * clip.fps > 100  # a whole game of Pong, hundreds of frames

    checkpoint = run_dir / "dqn_atari.pt"

    def resume(name: str) -> dict:
        result = run_script("dqn_atari.py", "--env-id", "ALE/Pong-v5", "--total-timesteps", "600", *SHORT,
                            "--resume", str(checkpoint), "--run-root", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        assert "resumed" in result.stdout and "at step 400" in result.stdout
        saved = torch.load(only_run_dir(tmp_path / name) / "dqn_atari.pt", weights_only=False)
        assert saved["global_step"] == 600
        return read_summary(only_run_dir(tmp_path / name))

    # with the saved replay memory, learning goes straight on: one gradient step every 4 steps
    assert resume("with_memory")["gradient_steps"] == summary["gradient_steps"] + (600 - 400) // 4
    # without it, the memory is refilled (200 steps) first: no gradient steps in steps 401–600
    checkpoint.with_suffix(".memory.npz").unlink()
    assert resume("refilled")["gradient_steps"] == summary["gradient_steps"]

    result = run_script("dqn_atari.py", "--env-id", "ALE/Pong-v5", "--eval-checkpoint", str(checkpoint),
                        "--eval-episodes", "1", "--run-root", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    evaluated = read_summary(only_run_dir(tmp_path / "eval"))
    assert evaluated["global_step"] == 400 and evaluated["eval_episodes"] == 1


class RecordingMemory(dqn_atari.FrameReplayMemory):
    steps: list = []

    def add(self, actions, rewards, no_bootstrap, next_observations, final_observations, game_over):
        RecordingMemory.steps.append((rewards.copy(), no_bootstrap.copy(), game_over.copy(), next_observations.copy()))
        super().add(actions, rewards, no_bootstrap, next_observations, final_observations, game_over)


def test_life_loss_is_terminal_for_learning_but_the_game_goes_on_and_scores_are_unclipped(monkeypatch, tmp_path):
    RecordingMemory.steps = []
    monkeypatch.setattr(dqn_atari, "FrameReplayMemory", RecordingMemory)
    args = dqn_atari.Args(env_id="ALE/MsPacman-v5", total_timesteps=1500, buffer_size=3000, learning_starts=3000,
                          eval_frequency=10**9, eval_episodes=1, save_model=False, device="cpu")
    monkeypatch.setattr(dqn_atari, "evaluate", lambda *a, **k: np.zeros(1))  # not under test here
    dqn_atari.train(args, tmp_path, torch.device("cpu"))

    observations = np.array([s[3][0] for s in RecordingMemory.steps])
    assert observations.shape[1:] == (4, 84, 84) and observations.dtype == np.uint8
    life_losses = [k for k, (_, ends, over, _) in enumerate(RecordingMemory.steps) if ends[0] and not over[0]]
    assert life_losses, "no life was lost in 1,500 steps of MsPacman"
    for k in life_losses:  # the game went on: the next observation continues the same stack
        np.testing.assert_array_equal(observations[k][1:], observations[k + 1][:3])
    assert all(set(np.unique(s[0])) <= {-1.0, 0.0, 1.0} for s in RecordingMemory.steps)  # learning: clipped

    first_game_end = next(k for k, s in enumerate(RecordingMemory.steps) if s[2][0])
    clipped_score = sum(s[0][0] for s in RecordingMemory.steps[: first_game_end + 1])
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    logged = events.Scalars("charts/episodic_return")[0].value
    assert logged % 10 == 0 and logged >= 10 * clipped_score > 0  # pellets score 10 each: the real score


@pytest.mark.parametrize("args, message", [
    (["--env-id", "CartPole-v1"], "needs an Atari (ALE) env"),
    (["--env-id", "ALE/NoSuchGame-v5"], "unknown env 'ALE/NoSuchGame-v5'"),
    (["--buffer-size", "10", "--batch-size", "32"], "--buffer-size 10 is too small"),
    (["--buffer-size", "100000000000"], "GB of replay memory, but only"),
    (["--total-timesteps", "-5"], "--total-timesteps must be positive"),
    (["--learning-starts", "0"], "--learning-starts must be at least --batch-size (32)"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, args, message):
    result = run_script("dqn_atari.py", *args, "--run-root", str(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


@pytest.mark.parametrize("name, lr, expected", [
    ("adam", None, (torch.optim.Adam, {"lr": 1e-4, "eps": 1.5e-4})),
    ("rmsprop", None, (torch.optim.RMSprop, {"lr": 2.5e-4, "alpha": 0.95, "eps": 0.01, "centered": True})),
    ("rmsprop", 1e-3, (torch.optim.RMSprop, {"lr": 1e-3})),
])
def test_optimizer_defaults(name, lr, expected):
    optimizer = dqn_atari.make_optimizer(dqn_atari.Args(optimizer=name, learning_rate=lr), dqn_atari.QNetwork(6))
    kind, settings = expected
    assert isinstance(optimizer, kind)
    for key, value in settings.items():
        assert optimizer.param_groups[0][key] == value, key


@pytest.mark.parametrize("double_dqn", [False, True])
def test_td_loss_bootstraps_from_the_target_network_with_the_sampled_discount(double_dqn):
    q_network, target_network = dqn_atari.QNetwork(2), dqn_atari.QNetwork(2)
    with torch.no_grad():  # constant Q-values, whatever the frames: online (2, 1), target (3, 5)
        for network, values in [(q_network, [2.0, 1.0]), (target_network, [3.0, 5.0])]:
            network.net[-1].weight.zero_()
            network.net[-1].bias.copy_(torch.tensor(values))
    frames = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    actions, returns = torch.tensor([0, 1, 1]), torch.tensor([1.0, 0.0, -1.0])
    discounts = torch.tensor([0.9, 0.81, 0.0])  # γ^h of each window; 0: it ended the game or a life
    loss, q_taken = dqn_atari.td_loss(q_network, target_network, [frames, actions, returns, frames, discounts],
                                      double_dqn)
    # Double DQN values the online network's choice (action 0) with the target network: 3, not max = 5
    bootstrap = 3.0 if double_dqn else 5.0
    targets = torch.tensor([1.0 + 0.9 * bootstrap, 0.81 * bootstrap, -1.0])
    assert q_taken.tolist() == [2.0, 1.0, 1.0]
    assert loss.item() == pytest.approx(torch.nn.functional.huber_loss(q_taken, targets).item())
    loss.backward()
    assert all(p.grad is None for p in target_network.parameters())
