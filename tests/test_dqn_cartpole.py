"""End-to-end tests of dqn_cartpole.py, run as a user runs it."""

import pytest
import torch

import dqn_cartpole
from card_game_env import solve_by_dynamic_programming
from conftest import (
    SUMMARY_KEYS,
    assert_one_line_error,
    only_run_dir,
    read_summary,
    read_video,
    register_once,
    run_script,
    scalar_steps,
    scalars,
)
from dqn_cartpole import QNetwork

# Short runs that still take gradient steps (after 100 collected steps) and refresh the target network.
SHORT = ["--learning-starts", "100", "--batch-size", "64", "--target-network-frequency", "100",
         "--eval-frequency", "300", "--eval-episodes", "2"]


def load_q_network(checkpoint_path) -> QNetwork:
    return dqn_cartpole.load_q_network(torch.load(checkpoint_path)["q_network"])


def test_smoke_train_video_save_and_eval_checkpoint(tmp_path):
    result = run_script("dqn_cartpole.py", *SHORT, "--total-timesteps", "600", "--capture-video",
                        "--run-root", str(tmp_path / "train"))
    assert result.returncode == 0, result.stderr
    assert "step 300 | eval " in result.stdout and "step 600 | eval " in result.stdout
    run_dir = only_run_dir(tmp_path / "train")
    assert run_dir.name.startswith("CartPole-v1__dqn_cartpole__1__")
    summary = read_summary(run_dir)
    assert summary.keys() == SUMMARY_KEYS
    assert summary["global_step"] == 600 and summary["eval_episodes"] == 2 and summary["interrupted"] is False
    assert [step for step, _ in summary["eval_curve"]] == [300, 600]
    assert summary["gradient_steps"] == (600 - 100) // 2
    assert list(run_dir.glob("events.out.tfevents.*"))
    videos = run_dir / "videos"
    assert sorted(path.name for path in videos.iterdir()) == ["random-agent.mp4", "step-000000300.mp4",
                                                                "step-000000600.mp4"]
    assert all(read_video(path).frames >= 8 for path in videos.iterdir())  # whole episodes, not lone frames

    checkpoint = run_dir / "dqn_cartpole.pt"
    assert torch.load(checkpoint)["huber_delta"] == 1.0  # CartPole's rewards are 1
    torch.manual_seed(1)  # as the script does: the network it started from
    untrained = QNetwork(4, 2, (128, 128))
    trained = load_q_network(checkpoint).state_dict()
    assert all(a.shape == b.shape for a, b in zip(trained.values(), untrained.state_dict().values(), strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(trained.values(), untrained.state_dict().values(), strict=True))

    result = run_script("dqn_cartpole.py", "--eval-checkpoint", str(checkpoint), "--eval-episodes", "3",
                        "--capture-video", "--run-root", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    eval_dir = only_run_dir(tmp_path / "eval")
    summary = read_summary(eval_dir)
    assert summary.keys() == SUMMARY_KEYS | {"eval_checkpoint"}
    assert summary["eval_episodes"] == 3 and summary["global_step"] == 600
    assert summary["eval_checkpoint"] == str(checkpoint)
    assert sorted(path.name for path in (eval_dir / "videos").iterdir()) == ["agent.mp4", "random-agent.mp4"]
    assert read_video(eval_dir / "videos" / "agent.mp4").frames >= 8


def test_a_model_file_of_only_the_weights_is_evaluated(tmp_path):
    """--eval-checkpoint also takes a model file: a Q-network's weights and its step, with any other keys
    (the layer sizes come from the weights)."""
    torch.manual_seed(0)
    q_network = QNetwork(4, 2, (16, 8))
    path = tmp_path / "model.pt"
    torch.save({"q_network": q_network.state_dict(), "obs_dim": 4, "n_actions": 2, "hidden_sizes": [16, 8],
                "env_id": "CartPole-v1", "global_step": 1234}, path)
    dqn_cartpole.main(dqn_cartpole.Args(eval_checkpoint=str(path), eval_episodes=2, run_root=str(tmp_path / "eval")))
    summary = read_summary(only_run_dir(tmp_path / "eval"))
    expected = dqn_cartpole.evaluate(dqn_cartpole.make_env("CartPole-v1"), q_network, 2,
                                     1 + dqn_cartpole.EVAL_SEED_OFFSET, torch.device("cpu"))
    assert summary["global_step"] == 1234 and summary["eval_curve"] == [[1234, expected.mean()]]


def test_resume_continues_the_run_in_its_directory(tmp_path):
    result = run_script("dqn_cartpole.py", *SHORT, "--total-timesteps", "600", "--run-root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path)
    checkpoint = run_dir / "dqn_cartpole.pt"
    first = read_summary(run_dir)

    for flags, message in [([], "already reached step 600: give a larger --total-timesteps"),
                           (["--total-timesteps", "900", "--gamma", "0.9"], "--gamma cannot change when resuming")]:
        assert_one_line_error(run_script("dqn_cartpole.py", "--resume", str(checkpoint), *flags), message)

    result = run_script("dqn_cartpole.py", "--resume", str(checkpoint), "--total-timesteps", "900")
    assert result.returncode == 0, result.stderr
    assert only_run_dir(tmp_path) == run_dir  # the same run, in place
    resumed = read_summary(run_dir)
    assert resumed["global_step"] == 900 and resumed["gradient_steps"] == (900 - 100) // 2
    assert resumed["eval_curve"][:2] == first["eval_curve"] and [s for s, _ in resumed["eval_curve"]] == [300, 600, 900]
    assert resumed["wall_seconds"] > first["wall_seconds"]  # both sessions
    assert scalar_steps(run_dir, "eval/mean_return") == [300, 600, 900]  # one continued curve


def test_env_id_with_slash_is_flattened_in_the_run_directory(tmp_path):
    register_once("testns/ShortCartPole-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                  max_episode_steps=20)
    dqn_cartpole.main(dqn_cartpole.Args(env_id="testns/ShortCartPole-v0", total_timesteps=200, learning_starts=100,
                                        batch_size=64, eval_frequency=200, eval_episodes=1, run_root=str(tmp_path)))
    run_dir = only_run_dir(tmp_path)
    assert run_dir.name.startswith("testns-ShortCartPole-v0__dqn_cartpole__1__")
    assert read_summary(run_dir)["env_id"] == "testns/ShortCartPole-v0"


def test_same_seed_twice_gives_identical_results_and_a_progress_line(tmp_path):
    summaries, weights = [], []
    for name in ["a", "b"]:
        result = run_script("dqn_cartpole.py", *SHORT, "--total-timesteps", "2000", "--seed", "7",
                            "--run-root", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        progress = [line for line in result.stdout.splitlines() if line.startswith("step 2,000 of 2,000 |")]
        assert len(progress) == 1 and "| last 10 episodes " in progress[0] and "| eval " in progress[0]
        assert "| ε 0.050 |" in progress[0] and "steps/s | ETA 0:00:00" in progress[0]
        run_dir = only_run_dir(tmp_path / name)
        summary = read_summary(run_dir)
        summaries.append({k: summary[k] for k in ["global_step", "gradient_steps", "eval_curve", "eval_std_return"]})
        weights.append(load_q_network(run_dir / "dqn_cartpole.pt").state_dict())
    assert summaries[0] == summaries[1]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_learning_rate_decays_linearly_to_zero(tmp_path):
    result = run_script("dqn_cartpole.py", *SHORT, "--total-timesteps", "3000", "--no-save-model",
                        "--run-root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    logged = scalars(only_run_dir(tmp_path), "charts/learning_rate")
    # gradient step k is taken at environment step 100 + 2k; one point every 100 gradient steps
    assert [step for step, _ in logged] == list(range(300, 3000, 200))
    assert [value for _, value in logged] == pytest.approx([1e-3 * (1 - step / 3000) for step, _ in logged], abs=1e-9)


def test_huber_delta_follows_the_largest_reward(tmp_path):
    """The card game's busts (−21) set δ = 21: a squared loss on its returns, see the docstring."""
    result = run_script("dqn_cartpole.py", "--env-id", "card_game_env:CardGame-v0", "--total-timesteps", "2000",
                        "--eval-frequency", "2000", "--eval-episodes", "5", "--run-root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert torch.load(only_run_dir(tmp_path) / "dqn_cartpole.pt")["huber_delta"] == 21.0


@pytest.mark.slow
def test_cartpole_learning_regression(tmp_path):
    """Seed 1 with the default arguments reaches CartPole-v1's threshold (475) within 50k steps."""
    result = run_script("dqn_cartpole.py", "--seed", "1", "--run-root", str(tmp_path), "--no-save-model")
    assert result.returncode == 0, result.stderr
    assert read_summary(only_run_dir(tmp_path))["eval_mean_return"] >= 475


@pytest.mark.slow
def test_card_game_learns_the_dp_policy(tmp_path):
    result = run_script("dqn_cartpole.py", "--env-id", "card_game_env:CardGame-v0", "--seed", "1",
                        "--run-root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    q_network = load_q_network(only_run_dir(tmp_path) / "dqn_cartpole.pt")
    with torch.no_grad():
        greedy = q_network(torch.arange(21, dtype=torch.float32).unsqueeze(1)).argmax(dim=1)
    _, dp_policy = solve_by_dynamic_programming()
    assert greedy.tolist() == dp_policy.tolist()
