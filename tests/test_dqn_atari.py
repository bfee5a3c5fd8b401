"""dqn_atari.py end to end (short Pong runs), resume, its protocols and preprocessing, and its bad-input errors."""

import collections
import copy
import re
import shutil
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import dqn_atari
from conftest import (
    ROOT,
    RandomLengthEnv,
    assert_one_line_error,
    only_run_dir,
    read_summary,
    read_video,
    register_once,
    run_script,
    scalar_steps,
    scalars,
)

SHORT = ["--buffer-size", "2000", "--learning-starts", "200", "--target-network-frequency", "100",
         "--eval-frequency", "400", "--eval-episodes", "1", "--num-threads", "1"]


# under pytest-xdist the tests using trained_run go to one worker, which trains it once
shares_trained_run = pytest.mark.xdist_group("trained_run")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 400-step Pong run with colour videos, learning from step 200."""
    root = tmp_path_factory.mktemp("train")
    result = run_script("dqn_atari.py", "--env-id", "ALE/Pong-v5", "--total-timesteps", "400", *SHORT,
                        "--capture-video", "--run-root", str(root))
    assert result.returncode == 0, result.stderr
    return result, only_run_dir(root)


@shares_trained_run
def test_smoke_train_eval_colour_videos_and_checkpoint(trained_run, tmp_path):
    result, run_dir = trained_run
    assert "(ALE/Pong-v5, 6 actions, device: cpu" in result.stdout
    assert run_dir.name.startswith("ALE-Pong-v5__dqn_atari__1__")
    summary = read_summary(run_dir)
    assert summary["global_step"] == 400 and summary["gradient_steps"] == 400 - 200  # one per step from 200
    assert summary["eval_episodes"] == 1 and summary["eval_curve"] == [[400, summary["eval_mean_return"]]]
    assert scalar_steps(run_dir, "eval/mean_return") == [400]
    checkpoint = torch.load(run_dir / "dqn_atari.pt", weights_only=True)  # the replay memory in it, compressed
    memory = dqn_atari.FrameReplayMemory(2000, 1, seed=0)
    memory.load_state_dict(checkpoint["memory"])
    assert len(memory) > 390 and memory.frames.any()
    assert (run_dir / "dqn_atari.pt").stat().st_size < 30e6 < memory.frames.nbytes + 26e6
    torch.manual_seed(1)  # as main() does: the network training started from
    untrained, trained = dqn_atari.QNetwork(6).state_dict(), checkpoint["q_network"]
    assert trained.keys() == untrained.keys()
    assert all(trained[k].shape == untrained[k].shape and not torch.equal(trained[k], untrained[k]) for k in trained)
    for name in ["step-000000400.mp4", "random-agent.mp4"]:  # the real screen in colour, scaled 3×
        clip = read_video(run_dir / "videos" / name, frame_at=1.0)
        assert clip.size == [480, 630] and clip.frames > 100  # a whole game of Pong
        assert np.abs(clip.frame[..., 0].astype(int) - clip.frame[..., 2]).mean() > 20  # not gray

    result = run_script("dqn_atari.py", "--env-id", "ALE/Pong-v5", "--eval-checkpoint", str(run_dir / "dqn_atari.pt"),
                        "--eval-episodes", "1", "--run-root", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    evaluated = read_summary(only_run_dir(tmp_path / "eval"))
    assert evaluated["global_step"] == 400 and evaluated["eval_episodes"] == 1
    # the same weights, evaluation seed and games: the run's own evaluation, reproduced exactly
    assert evaluated["eval_mean_return"] == summary["eval_mean_return"]



def test_several_envs_step_together_and_learn_every_train_frequency_steps(tmp_path):
    """Three envs, a gradient step every 4 environment steps counted over all of them, from step 150: the steps
    run 3, 6, ..., 300, the updates are the multiples of 4 in (150, 300], the evaluations fall on 150 and 300."""
    result = run_script("dqn_atari.py", "--env-id", "ALE/Pong-v5", "--num-envs", "3", "--train-frequency", "4",
                        "--total-timesteps", "300", "--learning-starts", "150", "--eval-frequency", "150",
                        "--buffer-size", "3000", "--eval-episodes", "1", "--num-threads", "1",
                        "--run-root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    summary = read_summary(only_run_dir(tmp_path))
    assert summary["global_step"] == 300 and summary["gradient_steps"] == 300 // 4 - 150 // 4
    assert [step for step, _ in summary["eval_curve"]] == [150, 300]

def resume(run_dir, *args):
    return run_script("dqn_atari.py", "--resume", str(run_dir / "dqn_atari.pt"), *args)


@shares_trained_run
def test_resume_continues_the_same_run_in_its_directory(trained_run, tmp_path):
    _, original = trained_run
    first = read_summary(original)
    run_dir = tmp_path / "run"
    shutil.copytree(original, run_dir)
    result = resume(run_dir, "--total-timesteps", "600")  # the saved flags are the defaults
    assert result.returncode == 0, result.stderr
    assert f"run directory: {run_dir}" in result.stdout and not (tmp_path / "runs").exists()
    summary = read_summary(run_dir)
    assert summary["global_step"] == 600 and summary["env_id"] == "ALE/Pong-v5"
    assert [step for step, _ in summary["eval_curve"]] == [400, 600]
    assert summary["eval_curve"][0] == first["eval_curve"][0]
    assert summary["wall_seconds"] > first["wall_seconds"]  # both sessions
    assert scalar_steps(run_dir, "eval/mean_return") == [400, 600]  # one TensorBoard run, continued
    saved, resumed = (torch.load(d / "dqn_atari.pt", weights_only=True) for d in (original, run_dir))
    assert resumed["global_step"] == 600
    # the replay memory came back with the checkpoint, all of it: learning goes straight on, one gradient step a
    # step, and moves the saved weights on
    line = re.search(r"^resumed .* at step ([\d,]+) \(([\d,]+) steps in replay\)$", result.stdout, re.MULTILINE)
    assert line and line[1] == "400", result.stdout
    assert int(line[2].replace(",", "")) == int(saved["memory"]["sampleable"].sum()) > 0
    assert summary["gradient_steps"] == first["gradient_steps"] + 200
    assert all(not torch.equal(resumed["q_network"][k], saved["q_network"][k]) for k in saved["q_network"])


@shares_trained_run
def test_resume_refuses_unsafe_flags_and_bad_files(trained_run, tmp_path):
    _, run_dir = trained_run
    checkpoint = run_dir / "dqn_atari.pt"
    truncated, foreign, model = tmp_path / "truncated.pt", tmp_path / "foreign.pt", ROOT / "models" / "pong_dqn.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    torch.save({"actor": {}}, foreign)
    cases = [
        (["--resume", str(checkpoint), "--total-timesteps", "600", "--buffer-size", "3000"],
         "--buffer-size cannot change when resuming (the run was saved with 2000)"),
        (["--resume", str(checkpoint), "--total-timesteps", "600", "--env-id", "ALE/Breakout-v5"],
         "--env-id cannot change when resuming"),
        (["--resume", str(checkpoint)], "already reached step 400: give a larger --total-timesteps"),
        (["--resume", str(truncated)], f"cannot load checkpoint '{truncated}'"),
        (["--resume", str(foreign)], "is not a dqn_atari checkpoint"),
        (["--resume", str(model)], "holds no training state (a model file can only be evaluated)"),
    ]
    for args, message in cases:
        assert_one_line_error(run_script("dqn_atari.py", *args), message)


def test_the_progress_line_of_a_resumed_run_shows_its_latest_evaluation(tmp_path, capsys):
    state = SimpleNamespace(args=dqn_atari.Args(total_timesteps=40_000, run_root=str(tmp_path)), global_step=20_000,
                            train_seconds=100.0, eval_curve=[[10_000, -20.5], [20_000, -19.0]])
    run = dqn_atari.Run(state, "cpu")
    run.progress(30_000, collections.deque([-20.0, -19.0]), 0.5)
    run.writer.close()
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"step 30,000 of 40,000 \| last 10 episodes  -19\.5 \| eval  -19\.00 at 20,000 \| ε 0\.500 \| "
                        r"[\d,]+ steps/s \| ETA \d+:\d\d:\d\d", line), line


@pytest.fixture
def record_training(record_adds, monkeypatch, tmp_path):
    """record_training(env_id, steps): train that long (no learning, no evaluation) and return what the loop
    stored at every step: FrameReplayMemory.add's arguments by name (rewards, no_bootstrap, game_over,
    next_observations, final_observations, ...)."""
    monkeypatch.setattr(dqn_atari, "evaluate", lambda *a, **k: np.zeros(1))  # not under test here

    def record(env_id, total_timesteps):
        steps = record_adds(dqn_atari, "FrameReplayMemory")
        args = dqn_atari.Args(env_id=env_id, total_timesteps=total_timesteps, buffer_size=3000, learning_starts=3000,
                              eval_frequency=10**9, eval_episodes=1, save_model=False, device="cpu",
                              run_root=str(tmp_path))
        dqn_atari.train(args, torch.device("cpu"))
        return steps
    return record


def test_life_loss_ends_the_value_for_learning_but_the_game_goes_on_and_scores_are_unclipped(record_training, tmp_path):
    steps = record_training("MsPacmanNoFrameskip-v4", 1500)
    observations = np.array([s["next_observations"][0] for s in steps])
    assert observations.shape[1:] == (4, 84, 84) and observations.dtype == np.uint8
    life_losses = [k for k, s in enumerate(steps[:-1]) if s["no_bootstrap"][0] and not s["game_over"][0]]
    assert life_losses, "no life was lost in 1,499 steps of MsPacman"  # the last step has no next one to check
    for k in life_losses:  # the game went on: the next observation continues the same stack
        np.testing.assert_array_equal(observations[k][1:], observations[k + 1][:3])
    assert all(set(np.unique(s["rewards"])) <= {-1.0, 0.0, 1.0} for s in steps)  # learning: clipped

    first_game_end = next(k for k, s in enumerate(steps) if s["game_over"][0])
    clipped_score = sum(s["rewards"][0] for s in steps[: first_game_end + 1])
    _, logged = scalars(only_run_dir(tmp_path), "charts/episodic_return")[0]
    assert logged % 10 == 0 and logged >= 10 * clipped_score > 0  # pellets score 10 each: the real score


def test_sticky_action_ids_have_no_life_loss_signal(record_training, tmp_path):
    steps = record_training("ALE/MsPacman-v5", 1500)
    assert any(s["game_over"][0] for s in steps), "no game ended"
    assert all(not s["no_bootstrap"][0] or s["game_over"][0] for s in steps)  # only a game's end stops the value


def test_a_truncated_game_stores_its_true_last_observation(record_training):
    """A real Pong game cut by its frame limit: the memory gets the last observation, not the next game's."""
    register_once("ALE/PongShort-v5", entry_point="ale_py.env:AtariEnv",
                  kwargs={"game": "pong", "repeat_action_probability": 0.25, "max_num_frames_per_episode": 400})
    steps = record_training("ALE/PongShort-v5", 600)
    truncations = [k for k, s in enumerate(steps) if s["game_over"][0] and not s["no_bootstrap"][0]]
    assert len(truncations) >= 2  # 400 frames = 100 steps a game
    for k in truncations:
        previous, final = steps[k - 1]["next_observations"][0], steps[k]["final_observations"][0]
        first = steps[k]["next_observations"][0]
        np.testing.assert_array_equal(final[:3], previous[1:])  # the stack goes on to its true last frame
        assert (first[:3] == 0).all() and not np.array_equal(final, first)  # the new game starts black


@pytest.mark.parametrize("env_id", ["ALE/Pong-v5", "BreakoutNoFrameskip-v4"])
def test_the_colour_video_does_not_change_what_the_agent_sees(env_id, tmp_path):
    """The screen env only watches: the agent's games, observations and scores are those without a video."""
    q_network = dqn_atari.QNetwork(int(dqn_atari.make_envs(env_id, 1).single_action_space.n))
    seen = {}
    original = dqn_atari.select_actions

    def recording(q, observations, *args):
        seen.setdefault(key, []).append(observations.copy())
        return original(q, observations, *args)

    dqn_atari.select_actions = recording
    try:
        scores = {}
        for key, video in [("plain", None), ("video", tmp_path / "game.mp4")]:
            scores[key] = dqn_atari.evaluate(q_network, env_id, 2, 0.5, 3, torch.device("cpu"), video)
    finally:
        dqn_atari.select_actions = original
    np.testing.assert_array_equal(scores["plain"], scores["video"])
    assert len(seen["plain"]) == len(seen["video"]) > 50
    assert all(np.array_equal(a, b) for a, b in zip(seen["plain"], seen["video"], strict=True))
    assert read_video(tmp_path / "game.mp4").size == [480, 630]


def test_games_played_side_by_side_are_each_scored_until_their_own_end(monkeypatch):
    frames = gym.spaces.Box(0, 255, (dqn_atari.STACK, *dqn_atari.FRAME_SHAPE), np.uint8)
    actions = gym.spaces.Discrete(6)
    monkeypatch.setattr(dqn_atari, "make_envs", lambda env_id, n: gym.vector.SyncVectorEnv(
        [lambda: RandomLengthEnv(frames, actions)] * n, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP))
    lengths = RandomLengthEnv.lengths(range(5, 11))
    assert len(set(lengths)) > 2  # games that end apart, some terminated and some truncated
    scores = dqn_atari.evaluate(dqn_atari.QNetwork(6), "test/RandomLength", 6, 0.5, 5, torch.device("cpu"))
    assert scores.tolist() == lengths


def test_protocols_of_the_two_id_families():
    v5, v4 = dqn_atari.atari_settings("ALE/Pong-v5"), dqn_atari.atari_settings("PongNoFrameskip-v4")
    assert (v5["repeat_action_probability"], v5["noop_max"], v5["use_fire_reset"], v5["life_loss_ends_value"]) \
        == (0.25, 0, False, False)
    assert (v4["repeat_action_probability"], v4["noop_max"], v4["use_fire_reset"], v4["life_loss_ends_value"]) \
        == (0.0, 30, True, True)


def test_q_values_stay_float32_under_bf16_autocast():
    """The update may run under bf16 autocast; the Q-values that the TD error and argmax compare do not."""
    frames = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dqn_atari.QNetwork(6)(frames).dtype == torch.float32


def test_frames_are_prepared_as_pixels_over_255_in_the_update_dtype_and_channels_last():
    """td_loss prepares each batch once and hands the result to the networks: it must be what the networks
    would compute from the uint8 frames themselves."""
    torch.manual_seed(0)
    network, frames = dqn_atari.QNetwork(6), torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    for dtype in (torch.float32, torch.bfloat16):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16), torch.no_grad():
            prepared = dqn_atari.QNetwork.prepare(frames)
            assert prepared.dtype == dtype and prepared.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(prepared, (frames.float() / 255.0).to(dtype))
            assert torch.equal(network(prepared), network(frames))


def test_a_target_network_held_in_bf16_computes_what_autocast_would():
    """Under the bf16 update, train() keeps the target network's layers before the Q-values in bf16 instead
    of letting autocast cast them at every step: the same Q-values to the bit, still in float32."""
    torch.manual_seed(0)
    network = dqn_atari.QNetwork(6)
    held = copy.deepcopy(network)
    held.net[:-1].to(torch.bfloat16)
    frames = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        cast_each_time, from_held = network(frames), held(frames)
    assert from_held.dtype == torch.float32 and torch.equal(from_held, cast_each_time)
    held.load_state_dict(network.state_dict())  # the target refresh casts as it copies
    assert held.net[0].weight.dtype == torch.bfloat16


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


def test_the_benchmarks_merged_forward_pass_computes_the_same_update():
    """benchmarks/tools/update_cost.py times a td_loss reading s and s′ in one online pass: it must be the same
    loss and gradient as dqn_atari's, or its timing compares two different updates."""
    from benchmarks.tools.update_cost import merged_td_loss

    torch.manual_seed(0)
    q_network, target_network = dqn_atari.QNetwork(6), dqn_atari.QNetwork(6)
    frames = lambda: torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8)  # noqa: E731
    batch = [frames(), torch.randint(0, 6, (8,)), torch.randn(8), frames(), torch.full((8,), 0.97)]
    gradients = []
    for td_loss in (dqn_atari.td_loss, merged_td_loss):
        q_network.zero_grad()
        loss, _ = td_loss(q_network, target_network, batch, True)
        loss.backward()
        gradients.append((loss.item(), [p.grad.clone() for p in q_network.parameters()]))
    (loss, grads), (merged_loss, merged_grads) = gradients
    assert merged_loss == pytest.approx(loss, rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(grads, merged_grads, strict=True))


# greedy, their first evaluation game: Pong won 21-0 (a random agent scores about −20), River Raid 6,060
# points (a random agent: 1,640 ± 417)
@pytest.mark.parametrize(("model", "env_id", "at_least"), [("pong_dqn.pt", "PongNoFrameskip-v4", 10),
                                                          ("riverraid_dqn.pt", "RiverraidNoFrameskip-v4", 3000)])
def test_the_committed_models_play_and_beat_a_random_agent(model, env_id, at_least, tmp_path):
    """The models README offers still load into this file's network and play far better than chance."""
    result = run_script("dqn_atari.py", "--eval-checkpoint", str(ROOT / "models" / model), "--env-id", env_id,
                        "--eval-episodes", "1", "--eval-epsilon", "0", "--run-root", str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr
    assert read_summary(only_run_dir(tmp_path))["eval_mean_return"] >= at_least


def test_the_defaults_are_the_recipe_the_results_describe():
    """benchmarks/RESULTS.md's default-recipe runs used exactly these: change one and they no longer apply."""
    recipe = {"env_id": "PongNoFrameskip-v4", "learning_rate": 1e-4, "buffer_size": 100_000, "batch_size": 32,
              "gamma": 0.99, "n_step": 3, "double_dqn": True, "learning_starts": 20_000, "train_frequency": 1,
              "target_network_frequency": 1_000, "start_e": 1.0, "end_e": 0.01, "exploration_steps": 100_000,
              "num_envs": 1, "total_timesteps": 300_000, "eval_episodes": 10, "eval_frequency": 25_000,
              "eval_epsilon": 0.05}
    args = dqn_atari.Args()
    assert {name: getattr(args, name) for name in recipe} == recipe
