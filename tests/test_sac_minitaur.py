"""sac_minitaur.py: the gymnasium Minitaur, the SAC pieces, end-to-end runs, bad input, and learning."""

import collections
import copy
import importlib.util
import math
import re
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import sac_minitaur
from conftest import (
    ROOT,
    SUMMARY_KEYS,
    RandomLengthEnv,
    assert_one_line_error,
    only_run_dir,
    read_summary,
    read_video,
    register_once,
    run_script,
)

# pybullet has wheels for Python 3.11 only: without it the Minitaur's own tests are skipped, SAC's are not
needs_pybullet = pytest.mark.skipif(importlib.util.find_spec("pybullet") is None, reason="pybullet is not installed")


# ---------------------------------------------------------------------------------------------------
# The Minitaur environment
# ---------------------------------------------------------------------------------------------------
@pytest.fixture
def minitaur():
    env = gym.make("sac_minitaur:MinitaurBulletEnv-v0")
    yield env
    env.close()



@needs_pybullet
def test_minitaur_spaces_and_env_checker(minitaur):
    assert minitaur.observation_space.shape == (28,) and minitaur.observation_space.dtype == np.float32
    assert minitaur.action_space == gym.spaces.Box(-1.0, 1.0, (8,), np.float32)
    assert minitaur.spec.max_episode_steps == 1000 and minitaur.spec.reward_threshold == 15.0
    high = minitaur.observation_space.high
    assert np.allclose(high[:8], math.pi + 0.01) and np.allclose(high[24:], 1.01)
    check_env(minitaur.unwrapped, skip_render_check=True)


@needs_pybullet
def test_minitaur_with_zero_actions_stands_until_truncation(minitaur):
    obs, _ = minitaur.reset(seed=0)
    assert obs in minitaur.observation_space
    total, steps = 0.0, 0
    while True:
        obs, reward, terminated, truncated, _ = minitaur.step(np.zeros(8, np.float32))
        total, steps = total + reward, steps + 1
        if terminated or truncated:
            break
    assert truncated and not terminated and steps == 1000
    assert abs(total) < 0.05  # no walking, a little energy spent holding the pose


@needs_pybullet
def test_minitaur_that_falls_terminates(minitaur):
    minitaur.reset(seed=0)
    env = minitaur.unwrapped
    on_its_side = env.bullet.getQuaternionFromEuler([math.pi / 2, 0, 0])
    env.bullet.resetBasePositionAndOrientation(env.robot.quadruped, [0, 0, 0.3], on_its_side)
    _, _, terminated, truncated, _ = minitaur.step(np.zeros(8, np.float32))
    assert terminated and not truncated


def rollout(seed: int, steps: int = 50) -> np.ndarray:
    env = gym.make("sac_minitaur:MinitaurBulletEnv-v0")
    observations = [env.reset(seed=seed)[0]]
    actions = np.random.default_rng(123).uniform(-1, 1, (steps, 8))
    observations += [env.step(action)[0] for action in actions]
    env.close()
    return np.array(observations)


@needs_pybullet
def test_minitaur_same_seed_same_trajectory_and_seeded_randomisation():
    assert np.array_equal(rollout(seed=7), rollout(seed=7))
    assert not np.allclose(rollout(seed=7), rollout(seed=8))  # another seed: other masses, friction, voltage


@needs_pybullet
def test_minitaur_randomises_the_robot_at_every_reset(minitaur):
    masses = []
    for seed in [0, None, None]:
        minitaur.reset(seed=seed)
        env = minitaur.unwrapped
        masses.append(env.bullet.getDynamicsInfo(env.robot.quadruped, -1)[0])
    urdf_mass = env.robot.GetBaseMassFromURDF()
    assert len(set(masses)) == 3 and all(0.8 * urdf_mass <= m <= 1.2 * urdf_mass for m in masses)


@needs_pybullet
def test_minitaur_returns_the_documented_types_on_every_path(minitaur):
    """bool terminated/truncated, a float reward, float32 observations in the space: while walking, at a
    fall, and at the time limit (other people's checkers are stricter than gymnasium's)."""
    env, rng = minitaur.unwrapped, np.random.default_rng(0)
    ends = set()
    for episode in range(3):
        obs, info = minitaur.reset(seed=episode)
        assert obs.dtype == np.float32 and obs in minitaur.observation_space and isinstance(info, dict)
        for step in range(1000):
            if episode == 1 and step == 20:  # knock it over
                on_its_side = env.bullet.getQuaternionFromEuler([math.pi / 2, 0, 0])
                env.bullet.resetBasePositionAndOrientation(env.robot.quadruped, [0, 0, 0.3], on_its_side)
            action = np.zeros(8, np.float32) if episode == 2 else rng.uniform(-1, 1, 8).astype(np.float32)
            obs, reward, terminated, truncated, info = minitaur.step(action)
            assert type(reward) is float and type(terminated) is bool and type(truncated) is bool
            assert obs.dtype == np.float32 and obs.shape == (28,) and isinstance(info, dict)
            if terminated or truncated:
                ends.add("terminated" if terminated else "truncated")
                break
    assert ends == {"terminated", "truncated"}


@needs_pybullet
def test_minitaur_rejects_out_of_range_actions_and_renders_headless():
    env = gym.make("sac_minitaur:MinitaurBulletEnv-v0", render_mode="rgb_array")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="8 values in \\[-1, 1\\]"):
        env.step(np.full(8, 1.5, np.float32))
    frame = env.render()
    assert frame.shape == (360, 480, 3) and frame.dtype == np.uint8 and frame.std() > 0
    env.close()


# ---------------------------------------------------------------------------------------------------
# SAC pieces
# ---------------------------------------------------------------------------------------------------
CPU = torch.device("cpu")
# action bounds whose scales, 2 and 1.5, do not multiply to 1: log π's term for the scale shows
LOW, HIGH = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 3.0])
BOUNDED = gym.spaces.Box(LOW.numpy(), HIGH.numpy())


def test_actor_log_prob_matches_the_squashed_gaussian_density():
    """log π(a|s) of a = center + scale · tanh(u), u ~ N(μ, σ), by the change of variables: the bounds' scales
    multiply to 3, so leaving out their log-determinant, log 3, would show."""
    torch.manual_seed(0)
    actor = sac_minitaur.Actor(3, BOUNDED, (16,), sac_minitaur.ObservationNormalizer(3))
    obs = torch.randn(64, 3)
    torch.manual_seed(1)
    actions, log_prob = actor.sample(obs)
    mean, log_std = actor.net(actor.normalizer(obs)).chunk(2, dim=-1)
    log_std = log_std.clamp(actor.LOG_STD_MIN, actor.LOG_STD_MAX)
    torch.manual_seed(1)
    u = mean + log_std.exp() * torch.randn(mean.shape)  # the same draw: the action before the squash
    distributions = torch.distributions
    squash = distributions.ComposeTransform([distributions.TanhTransform(),
                                             distributions.AffineTransform((HIGH + LOW) / 2, (HIGH - LOW) / 2)])
    torch.testing.assert_close(actions, squash(u))
    expected = distributions.Normal(mean, log_std.exp()).log_prob(u) - squash.log_abs_det_jacobian(u, actions)
    torch.testing.assert_close(log_prob, expected.sum(-1))
    assert torch.all((actions >= LOW) & (actions <= HIGH))
    greedy = actor.greedy(obs)
    torch.testing.assert_close(greedy, squash(mean))


def test_twin_critics_share_no_parameters_and_start_different():
    critic = sac_minitaur.TwinCritic(3, 2, (16, 16), sac_minitaur.ObservationNormalizer(3))
    q1_storage = {p.data_ptr() for p in critic.q1.parameters()}
    q2_storage = {p.data_ptr() for p in critic.q2.parameters()}
    assert q1_storage and q2_storage and not q1_storage & q2_storage
    q = critic(torch.randn(5, 3), torch.randn(5, 2))
    assert q.shape == (2, 5) and not torch.allclose(q[0], q[1])
    agent = sac_minitaur.SacAgent(3, gym.spaces.Box(-1.0, 1.0, (2,), np.float32), sac_minitaur.Args(hidden_sizes=(8,)))
    targets = {p.data_ptr() for p in agent.target_critic.parameters()}
    assert not targets & {p.data_ptr() for p in agent.critic.parameters()}  # a copy, not the same tensors


def test_soft_td_target_takes_the_smaller_target_critic_and_stops_at_termination():
    rewards, terminated = torch.tensor([1.0, 1.0, -1.0]), torch.tensor([0.0, 1.0, 0.0])
    next_q = torch.tensor([[5.0, 5.0, -2.0],    # Q̄_1(s', ã')
                           [3.0, 9.0, -4.0]])   # Q̄_2(s', ã')
    next_log_prob, alpha, gamma = torch.tensor([-1.0, -1.0, 2.0]), torch.tensor(0.5), 0.9
    target = sac_minitaur.soft_td_target(rewards, terminated, next_q, next_log_prob, alpha, gamma)
    expected = [1.0 + 0.9 * (3.0 + 0.5), 1.0, -1.0 + 0.9 * (-4.0 - 1.0)]  # min, −α log π, no bootstrap if terminated
    torch.testing.assert_close(target, torch.tensor(expected))


@pytest.mark.parametrize("entropy_vs_target, alpha_moves", [("below", "up"), ("above", "down")])
def test_temperature_step_moves_alpha_toward_the_target_entropy(entropy_vs_target, alpha_moves):
    target_entropy = -2.0
    log_prob = torch.full((64,), 3.0 if entropy_vs_target == "below" else -5.0)  # entropy −log π: −3 or 5
    log_alpha = torch.nn.Parameter(torch.tensor(math.log(0.1)))
    optimizer = torch.optim.SGD([log_alpha], lr=0.01)
    sac_minitaur.temperature_loss(log_alpha, log_prob, target_entropy).backward()
    optimizer.step()
    moved_up = log_alpha.item() > math.log(0.1)
    assert moved_up == (alpha_moves == "up")


def test_an_update_changes_actor_critics_targets_and_alpha_and_the_targets_follow_by_tau():
    torch.manual_seed(0)
    args = sac_minitaur.Args(hidden_sizes=(16,), tau=0.25)
    agent = sac_minitaur.SacAgent(3, gym.spaces.Box(-1.0, 1.0, (2,), np.float32), args)
    before = {name: value.clone() for name, value in agent.state_dict().items()}
    batch = [torch.randn(32, 3), torch.rand(32, 2) * 2 - 1, torch.randn(32), torch.randn(32, 3),
             (torch.rand(32) < 0.2).float()]
    losses = agent.update(*batch)
    assert set(losses) == {"critic_loss", "actor_loss", "q_values", "alpha", "entropy"}
    after = agent.state_dict()
    for prefix in ["actor.net", "critic.q1", "critic.q2", "log_alpha"]:
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)), prefix
    for name, target in agent.target_critic.named_parameters():  # φ̄ ← τφ + (1 − τ)φ̄, after the critic step
        expected = 0.25 * after[f"critic.{name}"] + 0.75 * before[f"target_critic.{name}"]
        torch.testing.assert_close(target, expected)


def test_an_update_is_the_three_steps_of_sac_each_with_its_own_adam():
    """update() against SAC written out (see the module docstring): three Adams (actor, critics, log α); the
    critics regress onto the soft Bellman target, then the actor follows min_i Q_i of the updated critics (only
    the actor's Adam steps: the critics do not move), then α on the detached log π, then φ̄ moves by τ. Over
    several updates: Adam's moments and step counts of each part come into it."""
    torch.manual_seed(0)
    args = sac_minitaur.Args(hidden_sizes=(16,), tau=0.25, gamma=0.9)
    agent = sac_minitaur.SacAgent(3, BOUNDED, args)
    agent.normalizer.update(np.random.default_rng(0).normal(2.0, 3.0, (50, 3)))  # statistics other than 0 and 1
    reference = copy.deepcopy(agent)
    # fused as in SacAgent; log α's Adam is not, and still gives the same bits
    actor_adam, critic_adam = (torch.optim.Adam(part.parameters(), lr=args.learning_rate, fused=True)
                               for part in (reference.actor, reference.critic))
    alpha_adam = torch.optim.Adam([reference.log_alpha], lr=args.learning_rate)

    def step(adam, loss):
        adam.zero_grad()
        loss.backward()
        adam.step()

    def reference_update(obs, actions, rewards, next_obs, terminated):
        alpha = reference.log_alpha.exp().detach()
        with torch.no_grad():
            next_actions, next_log_prob = reference.actor.sample(next_obs)  # the draws in update()'s order
            target = sac_minitaur.soft_td_target(rewards, terminated, reference.target_critic(next_obs, next_actions),
                                                 next_log_prob, alpha, args.gamma)
        q1, q2 = reference.critic(obs, actions)
        critic_loss = ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()
        step(critic_adam, critic_loss)
        new_actions, log_prob = reference.actor.sample(obs)
        actor_loss = (alpha * log_prob - torch.minimum(*reference.critic(obs, new_actions))).mean()
        step(actor_adam, actor_loss)
        step(alpha_adam, sac_minitaur.temperature_loss(reference.log_alpha, log_prob.detach(), -2.0))  # H̄ = −|A|
        with torch.no_grad():  # φ̄ + τ(φ − φ̄): τφ + (1 − τ)φ̄ would round differently
            for target_param, param in zip(reference.target_critic.parameters(), reference.critic.parameters(),
                                           strict=True):
                target_param.add_(args.tau * (param - target_param))
        return critic_loss, actor_loss

    for k in range(4):
        batch = [torch.randn(32, 3) * 3 + 2, LOW + (HIGH - LOW) * torch.rand(32, 2), torch.randn(32),
                 torch.randn(32, 3) * 3 + 2, (torch.rand(32) < 0.3).float()]
        torch.manual_seed(k)
        losses = agent.update(*batch)
        torch.manual_seed(k)
        critic_loss, actor_loss = reference_update(*batch)
        assert losses["critic_loss"].item() == critic_loss.item() and losses["actor_loss"].item() == actor_loss.item()
    updated, expected = agent.state_dict(), reference.state_dict()
    assert updated.keys() == expected.keys()
    assert [name for name in updated if not torch.equal(updated[name], expected[name])] == []


def test_running_normalizer_matches_the_statistics_of_everything_seen():
    rng = np.random.default_rng(0)
    normalizer = sac_minitaur.ObservationNormalizer(3)
    seen = [rng.normal([5.0, -3.0, 100.0], [1.0, 0.1, 30.0], (n, 3)) for n in [1, 7, 50, 2]]
    for batch in seen:
        normalizer.update(batch)
    everything = np.concatenate(seen)
    np.testing.assert_allclose(normalizer.mean.numpy(), everything.mean(0), rtol=1e-9)
    np.testing.assert_allclose(normalizer.var.numpy(), everything.var(0), rtol=1e-9)
    out = normalizer(torch.as_tensor(everything, dtype=torch.float32))
    np.testing.assert_allclose(out.mean(0).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(0, unbiased=False).numpy(), 1.0, atol=1e-3)


def add_numbered(buffer: sac_minitaur.ReplayBuffer, first: int, n: int) -> None:
    """n transitions whose every field holds its number (next_obs: the number + 1)."""
    ids = np.arange(first, first + n, dtype=np.float32)
    buffer.add(obs=np.stack([ids, ids], 1), actions=ids[:, None], rewards=ids, next_obs=np.stack([ids, ids], 1) + 1,
               terminated=ids % 2)


def test_replay_buffer_wraps_around_and_round_trips():
    buffer = sac_minitaur.ReplayBuffer(5, 2, 1, seed=0, device=CPU)
    for start in range(0, 8, 2):  # 8 transitions, two at a time, into 5 slots
        add_numbered(buffer, start, 2)
    assert buffer.size == 5 and buffer.position == 3
    assert sorted(buffer.columns["rewards"]) == [3, 4, 5, 6, 7]  # the oldest three were overwritten
    obs, actions, rewards, next_obs, terminated = buffer.sample(4)
    assert rewards.shape == (4,) and obs.shape == (4, 2) and actions.shape == (4, 1)
    assert torch.equal(obs[:, 0], rewards) and torch.equal(next_obs[:, 0], rewards + 1)
    assert torch.equal(terminated, rewards % 2) and torch.equal(actions[:, 0], rewards)
    copy = sac_minitaur.ReplayBuffer(5, 2, 1, seed=1, device=CPU)
    copy.load_state_dict(buffer.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(buffer.sample(4), copy.sample(4), strict=True))


def test_a_sampled_batch_belongs_to_the_caller():
    """Neither the next sample() nor new transitions overwriting the buffer change a batch already drawn."""
    buffer = sac_minitaur.ReplayBuffer(50, 2, 1, seed=0, device=CPU)
    add_numbered(buffer, 0, 50)
    batch = buffer.sample(16)
    kept = [t.clone() for t in batch]
    buffer.sample(16)
    add_numbered(buffer, 1000, 50)  # every slot overwritten
    assert all(torch.equal(a, b) for a, b in zip(batch, kept, strict=True))
    assert torch.all(buffer.sample(16)[2] >= 1000)


class CountingEnv(gym.Env):
    """obs = [t, episode]; terminates after 3 steps in even episodes, truncates after 4 in odd ones."""

    observation_space = gym.spaces.Box(-1e6, 1e6, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, render_mode=None):
        self.episode = -1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.episode = 0, self.episode + 1
        return np.array([0, self.episode], np.float32), {}

    def step(self, action):
        self.t += 1
        odd = self.episode % 2 == 1
        return (np.array([self.t, self.episode], np.float32), 1.0, not odd and self.t == 3, odd and self.t == 4, {})


def test_replay_stores_the_true_final_observation_when_the_vector_env_autoresets(record_adds, monkeypatch,
                                                                                 tmp_path):
    register_once("test/Counting-v0", entry_point=CountingEnv)
    args = sac_minitaur.Args(env_id="test/Counting-v0", total_timesteps=30, learning_starts=256, batch_size=256,
                             num_envs=2, eval_frequency=10**6, save_model=False, run_root=str(tmp_path))
    stored = record_adds(sac_minitaur, "ReplayBuffer")
    monkeypatch.setattr(sac_minitaur, "evaluate", lambda *a, **k: np.zeros(1))
    sac_minitaur.train(args, CPU)
    ends = 0
    for added in stored:
        for env in range(2):
            obs, next_obs, terminated = added["obs"][env], added["next_obs"][env], added["terminated"][env]
            # the stored next observation always continues the same episode: one step later, never a reset
            assert next_obs[1] == obs[1] and next_obs[0] == obs[0] + 1
            assert terminated == (obs[1] % 2 == 0 and next_obs[0] == 3)  # a truncation is not terminal
            ends += next_obs[0] in (3, 4) and (next_obs[0] == 3) == (obs[1] % 2 == 0)
    assert ends >= 8


# ---------------------------------------------------------------------------------------------------
# Plumbing
# ---------------------------------------------------------------------------------------------------
def test_evaluation_episodes_side_by_side_are_each_scored_until_their_own_end():
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    register_once("test/RandomLength-v0", entry_point=RandomLengthEnv, kwargs={
        "observation_space": gym.spaces.Box(-1.0, 1.0, (3,), np.float32), "action_space": action_space})
    lengths = RandomLengthEnv.lengths(range(5, 11))
    assert len(set(lengths)) > 2  # episodes that end apart, some terminated and some truncated
    actor = sac_minitaur.Actor(3, action_space, (8,), sac_minitaur.ObservationNormalizer(3))
    assert sac_minitaur.evaluate(actor, "test/RandomLength-v0", 6, 5, CPU).tolist() == lengths


def test_an_env_with_float64_observations_trains(monkeypatch, tmp_path):
    """As gymnasium's MuJoCo envs have: the policy is asked in float32 while collecting as when evaluating."""
    register_once("test/Float64-v0", entry_point=RandomLengthEnv, kwargs={
        "observation_space": gym.spaces.Box(-1.0, 1.0, (3,), np.float64),
        "action_space": gym.spaces.Box(-1.0, 1.0, (1,), np.float32)})
    args = sac_minitaur.Args(env_id="test/Float64-v0", total_timesteps=40, learning_starts=16, batch_size=16,
                             eval_frequency=10**6, eval_episodes=2, save_model=False, run_root=str(tmp_path))
    _, summary = sac_minitaur.train(args, CPU)
    assert summary["gradient_steps"] == 24 and len(summary["eval_curve"]) == 1


def test_progress_line(tmp_path, capsys):
    state = SimpleNamespace(args=sac_minitaur.Args(total_timesteps=300_000, run_root=str(tmp_path)),
                            global_step=100_000, train_seconds=0.0, eval_curve=[[100_000, 17.2]])
    run = sac_minitaur.Run(state, "cpu")
    run.progress(120_000, collections.deque([15.3, 15.3]))
    state.eval_curve.clear()
    run.progress(122_500, collections.deque())
    run.writer.close()
    first, second = capsys.readouterr().out.splitlines()[-2:]
    assert re.fullmatch(r"step 120,000 of 300,000 \| last 10 episodes   15\.3 \| eval   17\.20 at 100,000 \| "
                        r"[\d,]+ steps/s \| ETA \d+:\d\d:\d\d", first), first
    assert second.startswith("step 122,500 of 300,000 | last 10 episodes      – | eval      – | "), second


# ---------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------
def alpha_of(checkpoint: Path) -> float:
    return torch.load(checkpoint, weights_only=False)["agent"]["log_alpha"].exp().item()


def tuned(alpha: float) -> bool:
    """Whether the temperature moved away from its initial value (--initial-alpha 0.01) by some updates."""
    return abs(math.log(alpha / 0.01)) > 1e-3  # never updated: exactly 0.01


# small networks, a gradient step of the default batch from step 300 on: seed 1 learns Pendulum by 2,400 steps
PENDULUM_SHORT = ["--env-id", "Pendulum-v1", "--learning-starts", "300", "--hidden-sizes", "64", "64",
                  "--eval-frequency", "600", "--eval-episodes", "3"]
# what this run's curve passes: about −1,300 to −1,600 at step 600, before learning (and all along without
# learning, as with a broken update: −1,100 to −1,200); after the resume to 3,000 steps, the best evaluation of
# seeds 1, 2 and 3 is −122, −165 and −166
PENDULUM_UNTRAINED_BELOW, PENDULUM_LEARNT_ABOVE = -1_000, -600


def test_pendulum_smoke_train_video_checkpoint_eval_and_resume_in_place(tmp_path):
    result = run_script("sac_minitaur.py", *PENDULUM_SHORT, "--total-timesteps", "2400", "--capture-video",
                        "--run-root", str(tmp_path / "train"))
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path / "train")
    assert run_dir.name.startswith("Pendulum-v1__sac_minitaur__1__")
    summary = read_summary(run_dir)
    assert set(summary) == SUMMARY_KEYS
    assert summary["global_step"] == 2400 and summary["gradient_steps"] == 2100 and not summary["interrupted"]
    assert [step for step, _ in summary["eval_curve"]] == [600, 1200, 1800, 2400] and summary["eval_episodes"] == 3
    assert list(run_dir.glob("events.out.tfevents.*"))
    videos = sorted((run_dir / "videos").iterdir())
    evaluations = [f"step-{step:09d}.mp4" for step in (600, 1200, 1800, 2400)]
    assert [path.name for path in videos] == ["random-agent.mp4", *evaluations]
    assert all(read_video(path).frames >= 190 for path in videos)  # one whole 200-step episode

    checkpoint = run_dir / "sac_minitaur.pt"
    saved = torch.load(checkpoint, weights_only=False)
    assert set(saved) == {"args", "agent", "optimizer", "buffer", "rng", "global_step", "gradient_steps",
                          "eval_curve", "train_seconds", "torch_rng"}
    assert saved["agent"]["normalizer.count"] == 2400  # the observation statistics travel with the networks
    assert saved["buffer"]["size"] == 2400 and tuned(alpha_of(checkpoint))
    result = run_script("sac_minitaur.py", "--resume", str(checkpoint), "--total-timesteps", "3000")
    assert result.returncode == 0, result.stderr
    assert "resumed" in result.stdout and "at step 2,400 (2,400 transitions in replay)" in result.stdout
    assert "step 2,500 of 3,000 | last 10 episodes" in result.stdout
    resumed = read_summary(run_dir)  # the same run directory, the same summary, continued
    assert resumed["global_step"] == 3000 and resumed["gradient_steps"] == 2700  # learning went straight on
    assert [step for step, _ in resumed["eval_curve"]] == [600, 1200, 1800, 2400, 3000]
    assert resumed["eval_curve"][:4] == summary["eval_curve"]
    assert resumed["wall_seconds"] > summary["wall_seconds"]
    curve = [mean for _, mean in resumed["eval_curve"]]
    assert curve[0] < PENDULUM_UNTRAINED_BELOW and max(curve) > PENDULUM_LEARNT_ABOVE, curve  # it learnt

    result = run_script("sac_minitaur.py", "--env-id", "Pendulum-v1", "--eval-checkpoint", str(checkpoint),
                        "--eval-episodes", "3", "--run-root", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    evaluated = read_summary(only_run_dir(tmp_path / "eval"))
    assert evaluated["global_step"] == 3000 and evaluated["gradient_steps"] == 2700
    assert evaluated["eval_episodes"] == 3 and evaluated["eval_checkpoint"] == str(checkpoint)
    assert evaluated["eval_mean_return"] == pytest.approx(resumed["eval_mean_return"])  # the same greedy episodes

    for args, message in [(["--total-timesteps", "3300", "--gamma", "0.9"], "--gamma cannot change when resuming"),
                          (["--total-timesteps", "3000"], "already reached step 3,000")]:
        assert_one_line_error(run_script("sac_minitaur.py", "--resume", str(checkpoint), *args), message)


def test_two_envs_collect_together_and_take_a_gradient_step_each(tmp_path):
    """Two worker envs: the steps run 2, 4, ..., 600, and past learning_starts every loop takes one gradient step per
    env; both envs' transitions reach the buffer."""
    result = run_script("sac_minitaur.py", *PENDULUM_SHORT, "--num-envs", "2", "--total-timesteps", "600",
                        "--run-root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path)
    summary = read_summary(run_dir)
    assert summary["global_step"] == 600 and summary["gradient_steps"] == 600 - 300
    assert [step for step, _ in summary["eval_curve"]] == [600]
    saved = torch.load(run_dir / "sac_minitaur.pt", weights_only=True)
    assert saved["buffer"]["size"] == 600

@needs_pybullet
def test_minitaur_smoke_train_eval_checkpoint_and_resume(tmp_path):
    short = ["--learning-starts", "256", "--eval-frequency", "400", "--eval-episodes", "1", "--num-envs", "2",
             "--hidden-sizes", "64", "64", "--buffer-size", "5000"]
    result = run_script("sac_minitaur.py", *short, "--total-timesteps", "400", "--run-root", str(tmp_path / "train"))
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path / "train")
    assert run_dir.name.startswith("MinitaurBulletEnv-v0__sac_minitaur__1__")
    summary = read_summary(run_dir)
    assert summary["global_step"] == 400 and summary["gradient_steps"] == 400 - 256
    assert summary["eval_episodes"] == 1 and tuned(alpha_of(run_dir / "sac_minitaur.pt"))
    result = run_script("sac_minitaur.py", "--total-timesteps", "600", "--resume", str(run_dir / "sac_minitaur.pt"))
    assert result.returncode == 0, result.stderr
    assert read_summary(run_dir)["gradient_steps"] == 600 - 256

    result = run_script("sac_minitaur.py", "--eval-checkpoint", str(run_dir / "sac_minitaur.pt"), "--eval-episodes",
                        "2", "--capture-video", "--video-length", "30", "--run-root", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    eval_dir = only_run_dir(tmp_path / "eval")
    assert read_summary(eval_dir)["global_step"] == 600 and read_summary(eval_dir)["eval_episodes"] == 2
    assert sorted(path.name for path in (eval_dir / "videos").iterdir()) == ["agent.mp4", "random-agent.mp4"]
    assert 25 <= read_video(eval_dir / "videos" / "agent.mp4").frames <= 31  # the first 30 frames of a greedy episode


def test_without_pybullet_the_minitaur_says_how_to_get_it_in_one_line(tmp_path):
    """As on Python 3.12+, where requirements.txt leaves pybullet out: a stand-in that cannot be imported."""
    stand_in = "raise ModuleNotFoundError(\"No module named 'pybullet'\", name='pybullet')\n"
    (tmp_path / "pybullet.py").write_text(stand_in)
    result = run_script("sac_minitaur.py", "--run-root", str(tmp_path / "runs"),
                        env_extra={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == ("error: 'MinitaurBulletEnv-v0' needs pybullet: `pip install pybullet==3.2.7` "
                                     "(on Python 3.12 and later it builds from source in a few minutes, with a C++ "
                                     "compiler and the Python headers)")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_pendulum_learns_within_5k_steps(tmp_path):
    """Learning regression (seed 1): the greedy policy reaches −250 within 5,000 steps."""
    result = run_script("sac_minitaur.py", "--env-id", "Pendulum-v1", "--seed", "1", "--total-timesteps", "5000",
                        "--learning-starts", "1000", "--eval-frequency", "1000", "--eval-episodes", "10",
                        "--no-save-model", "--run-root", str(tmp_path), timeout=900)
    assert result.returncode == 0, result.stderr
    curve = read_summary(only_run_dir(tmp_path))["eval_curve"]
    assert curve[0][1] < -600, curve  # at step 1,000, before the first update, it is bad: the test can fail
    assert max(mean for _, mean in curve) >= -250, curve


@needs_pybullet
def test_the_committed_minitaur_model_walks(tmp_path):
    """models/minitaur_sac.pt (README offers it) still loads into this file's actor and moves forward."""
    result = run_script("sac_minitaur.py", "--eval-checkpoint", str(ROOT / "models" / "minitaur_sac.pt"),
                        "--eval-episodes", "2", "--run-root", str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr
    summary = read_summary(only_run_dir(tmp_path))
    assert summary["global_step"] == 300_000 and summary["eval_curve"] == [[300_000, summary["eval_mean_return"]]]
    assert summary["eval_mean_return"] >= 5  # it averages 24.7 over 10 episodes; standing still scores about 0
