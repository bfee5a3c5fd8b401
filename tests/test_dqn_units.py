"""Unit tests of dqn_cartpole's hard parts: the replay buffer, the ε schedule, terminated vs truncated,
the loss and the target update, checkpoints."""

import numpy as np
import pytest
import torch

import dqn_cartpole
from conftest import register_once
from dqn_cartpole import Args, QNetwork, ReplayBuffer, linear_schedule

CPU = torch.device("cpu")
GAMMA = 0.9


def make_buffer(capacity: int, n_step: int = 1) -> ReplayBuffer:
    return ReplayBuffer(capacity, obs_dim=2, n_step=n_step, gamma=GAMMA, seed=0)


def stored(buffer: ReplayBuffer) -> list[tuple]:
    """The transitions in storage order: (obs[0], action, return, next_obs[0], discount)."""
    order = [(buffer.position - buffer.size + k) % buffer.capacity for k in range(buffer.size)]
    return [(buffer.obs[i, 0], buffer.actions[i], buffer.returns[i], buffer.next_obs[i, 0], buffer.discounts[i])
            for i in order]


def play(buffer: ReplayBuffer, rewards: list[float], end: str, first_obs: int = 0) -> None:
    """Feed one episode whose step t goes from obs t to obs t+1 with rewards[t], ending as `end` says."""
    for t, reward in enumerate(rewards):
        last = t == len(rewards) - 1
        buffer.add(np.array([first_obs + t, 0]), t % 2, reward, np.array([first_obs + t + 1, 0]),
                   terminated=last and end == "terminated", truncated=last and end == "truncated")


def filled_buffer(capacity: int, n: int) -> ReplayBuffer:
    """One-step transitions: transition i has obs (i, -i), action i % 3, reward i, next_obs (i+1, -i-1),
    and ends a terminated episode when i % 5 == 4."""
    buffer = make_buffer(capacity)
    for i in range(n):
        buffer.add(np.array([i, -i]), i % 3, float(i), np.array([i + 1, -i - 1]), i % 5 == 4, False)
    return buffer


def test_sample_shapes_and_dtypes():
    obs, actions, returns, next_obs, discounts = filled_buffer(100, 20).sample(8)
    assert obs.shape == next_obs.shape == (8, 2) and obs.dtype == next_obs.dtype == np.float32
    assert actions.shape == (8,) and actions.dtype == np.int64
    assert returns.shape == discounts.shape == (8,)
    assert returns.dtype == discounts.dtype == np.float32


def test_sampled_transitions_are_whole_stored_transitions():
    obs, actions, returns, next_obs, discounts = filled_buffer(100, 20).sample(256)
    i = obs[:, 0].astype(int)
    assert set(i) <= set(range(20)) and len(set(i)) > 10
    np.testing.assert_array_equal(obs[:, 1], -i)
    np.testing.assert_array_equal(actions, i % 3)
    np.testing.assert_array_equal(returns, i)
    np.testing.assert_array_equal(next_obs, np.stack([i + 1, -i - 1], axis=1))
    np.testing.assert_allclose(discounts, np.where(i % 5 == 4, 0.0, GAMMA))


def test_a_sampled_batch_is_the_callers_and_no_later_sample_or_add_changes_it():
    buffer = filled_buffer(10, 10)
    batch = buffer.sample(64)
    kept = [column.copy() for column in batch]
    buffer.sample(64)
    for i in range(10, 30):  # overwrites every stored transition
        buffer.add(np.array([i, -i]), 0, float(i), np.array([i + 1, -i - 1]), False, False)
    buffer.sample(64)
    for column, copy in zip(batch, kept, strict=True):
        np.testing.assert_array_equal(column, copy)


def test_wrap_around_keeps_only_the_newest_capacity_transitions():
    buffer = filled_buffer(capacity=10, n=25)
    assert buffer.size == 10 and buffer.position == 5
    assert [t[0] for t in stored(buffer)] == list(range(15, 25))
    assert set(buffer.sample(512)[0][:, 0].astype(int)) == set(range(15, 25))


def test_sampling_only_reads_filled_slots():
    buffer = filled_buffer(capacity=1000, n=3)
    obs, _, _, next_obs, _ = buffer.sample(64)
    assert set(obs[:, 0].astype(int)) <= {0, 1, 2}
    # an empty slot holds obs 0 too, but next_obs 0: a stored transition's next_obs is its obs + 1
    np.testing.assert_array_equal(next_obs[:, 0], obs[:, 0] + 1)


def test_same_seed_same_batches():
    a, b = filled_buffer(50, 50), filled_buffer(50, 50)
    for _ in range(3):
        for x, y in zip(a.sample(8), b.sample(8), strict=True):
            np.testing.assert_array_equal(x, y)


def test_buffer_state_dict_round_trip_continues_the_same_samples():
    a = filled_buffer(capacity=10, n=25)
    a.sample(8)
    b = make_buffer(10)
    b.load_state_dict(a.state_dict())
    assert stored(b) == stored(a) and (b.position, b.size) == (a.position, a.size)
    for x, y in zip(a.sample(8), b.sample(8), strict=True):
        np.testing.assert_array_equal(x, y)


def test_one_step_terminated_stops_the_bootstrap_and_truncated_does_not():
    buffer = make_buffer(10)
    play(buffer, [1.0, 2.0], end="terminated")
    play(buffer, [3.0, 4.0], end="truncated", first_obs=100)
    assert stored(buffer) == [(0, 0, 1.0, 1, pytest.approx(GAMMA)), (1, 1, 2.0, 2, 0.0),
                              (100, 0, 3.0, 101, pytest.approx(GAMMA)), (101, 1, 4.0, 102, pytest.approx(GAMMA))]


def test_n_step_returns_inside_an_episode_and_at_a_termination():
    buffer = make_buffer(10, n_step=3)
    play(buffer, [1.0, 2.0, 4.0, 8.0], end="terminated")
    g = GAMMA
    assert stored(buffer) == [
        (0, 0, pytest.approx(1 + g * 2 + g * g * 4), 3, pytest.approx(g ** 3)),  # bootstraps from obs 3
        (1, 1, pytest.approx(2 + g * 4 + g * g * 8), 4, 0.0),                 # the episode ended inside
        (2, 0, pytest.approx(4 + g * 8), 4, 0.0),
        (3, 1, pytest.approx(8.0), 4, 0.0),
    ]
    assert not buffer.pending


def test_n_step_truncation_bootstraps_from_the_true_last_observation():
    buffer = make_buffer(10, n_step=3)
    play(buffer, [1.0, 1.0], end="truncated")
    play(buffer, [5.0], end="terminated", first_obs=50)  # the next episode does not mix into the first
    g = GAMMA
    assert stored(buffer) == [(0, 0, pytest.approx(1 + g), 2, pytest.approx(g ** 2)),
                              (1, 1, pytest.approx(1.0), 2, pytest.approx(g)),
                              (50, 0, 5.0, 51, 0.0)]


@pytest.mark.parametrize("t, expected", [(0, 1.0), (50, 0.525), (100, 0.05), (10_000, 0.05)])
def test_linear_schedule(t, expected):
    assert linear_schedule(1.0, 0.05, 100, t) == pytest.approx(expected)


@pytest.fixture
def recorded_steps(record_adds, tmp_path):
    """Run the real training loop for a few hundred steps and return what it handed to the buffer: the arguments
    of each add(), by name."""
    def run(env_id: str) -> list[dict]:
        steps = record_adds(dqn_cartpole, "ReplayBuffer")
        args = Args(env_id=env_id, total_timesteps=300, learning_starts=128, eval_frequency=300, eval_episodes=1,
                    save_model=False, run_root=str(tmp_path))
        dqn_cartpole.train(args, CPU)
        return steps
    return run


def test_loop_reports_truncation_with_the_true_last_observation(recorded_steps):
    # CartPole cut by a time limit after 5 steps: never falls
    register_once("ShortCartPole-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv", max_episode_steps=5)
    steps = recorded_steps("ShortCartPole-v0")
    assert len(steps) == 300
    for k, step in enumerate(steps):
        obs, next_obs, truncated = step["obs"], step["next_obs"], step["truncated"]
        assert not step["terminated"] and truncated == (k % 5 == 4)
        assert np.abs(next_obs - obs).max() < 0.5  # one physics step on, never a reset state
        if truncated and k + 1 < len(steps):
            assert not np.array_equal(next_obs, steps[k + 1]["obs"]), "the reset obs leaked into next_obs"
        elif k + 1 < len(steps):
            np.testing.assert_array_equal(next_obs, steps[k + 1]["obs"])


def test_loop_reports_termination(recorded_steps):
    steps = recorded_steps("card_game_env:CardGame-v0")
    ends = [s for s in steps if s["terminated"]]
    assert ends, "no round ended"
    for step in ends:
        total = step["next_obs"][0]
        assert not step["truncated"] and (step["action"] == 1 or total >= 21)
        assert step["reward"] == (total - 21 if total <= 21 else -21)
    assert all(s["reward"] == 0.0 for s in steps if not s["terminated"])


def test_soft_update_moves_the_target_by_tau_toward_the_online_network():
    torch.manual_seed(0)
    online, target = dqn_cartpole.QNetwork(3, 2, (4,)), dqn_cartpole.QNetwork(3, 2, (4,))
    before = [p.clone() for p in target.parameters()]
    dqn_cartpole.soft_update(target, online, tau=0.25)
    for new, old, theta in zip(target.parameters(), before, online.parameters(), strict=True):
        torch.testing.assert_close(new, 0.25 * theta + 0.75 * old)
    dqn_cartpole.soft_update(target, online, tau=1.0)  # τ = 1: a hard copy
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters(), strict=True))


@pytest.mark.parametrize("delta, expected", [(1.0, [5.0 - 0.5, 3.05 - 0.5, 2.0 - 0.5]),
                                             (21.0, [0.5 * 5.0 ** 2, 0.5 * 3.05 ** 2, 0.5 * 2.0 ** 2])])
def test_td_loss_uses_the_huber_delta_it_is_given(delta, expected):
    """TD errors of 5, 3.05 and −2: linear beyond δ = 1 (CartPole), still quadratic under δ = 21 (the card game).
    The target is y = R + discount · max_a Q(s', a; θ⁻), from the target network, which gets no gradient."""
    q_network, target_network = dqn_cartpole.QNetwork(1, 2, (4,)), dqn_cartpole.QNetwork(1, 2, (4,))
    with torch.no_grad():  # constant Q-values, whatever the observation: online (2, 1), target (3, 5)
        for network, values in [(q_network, [2.0, 1.0]), (target_network, [3.0, 5.0])]:
            network.net[-1].weight.zero_()
            network.net[-1].bias.copy_(torch.tensor(values))
    obs = torch.randn(3, 1)
    actions, returns = torch.tensor([0, 1, 1]), torch.tensor([2.5, 0.0, -1.0])
    discounts = torch.tensor([0.9, 0.81, 0.0])  # γ^n of each transition; 0: it terminated
    loss, q_taken = dqn_cartpole.td_loss(q_network, target_network, [obs, actions, returns, obs, discounts], delta)
    # y = R + discount · max(3, 5) = 7, 4.05, −1, less Q(s, a) = 2, 1, 1: TD errors 5, 3.05, −2
    assert q_taken.tolist() == [2.0, 1.0, 1.0]
    assert loss.item() == pytest.approx(sum(expected) / 3)
    loss.backward()
    assert all(p.grad is None for p in target_network.parameters())
    assert all(p.grad is not None for p in q_network.net[-1].parameters())


def assert_same(a, b, where: str = "checkpoint") -> None:
    """Equal nested dicts/lists of tensors, arrays and plain values."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{k}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


def fresh_state(args: Args) -> dqn_cartpole.TrainState:
    """A TrainState as train() builds it before its first step."""
    q_network, target_network = QNetwork(1, 2, args.hidden_sizes), QNetwork(1, 2, args.hidden_sizes)
    return dqn_cartpole.TrainState(args, q_network, target_network,
                                   torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, fused=True),
                                   ReplayBuffer(args.buffer_size, 1, args.n_step, args.gamma, args.seed),
                                   np.random.default_rng(args.seed))


def test_a_checkpoint_restores_every_part_of_the_state(tmp_path):
    """Train on the card game (δ grows to 21), then restore its checkpoint into a fresh state and save
    that again: the two checkpoints are the same, field by field (networks, Adam's moments, the replay
    buffer and its generator, ε's generator, δ, the counters, the evaluation curve)."""
    args = Args(env_id="card_game_env:CardGame-v0", total_timesteps=600, learning_starts=128, eval_frequency=300,
                eval_episodes=2, run_root=str(tmp_path / "run"))
    run_dir, _ = dqn_cartpole.train(args, CPU)
    saved = dqn_cartpole.load_checkpoint(str(run_dir / "dqn_cartpole.pt"))
    assert saved["huber_delta"] == 21.0 and saved["global_step"] == 600 and saved["buffer"]["size"] > 500
    assert [step for step, _ in saved["eval_curve"]] == [300, 600] and saved["gradient_steps"] == (600 - 128) // 2

    state = fresh_state(args)
    dqn_cartpole.restore(state, saved)
    assert state.huber_delta == 21.0 and state.global_step == 600
    (tmp_path / "again").mkdir()
    dqn_cartpole.save_checkpoint(state, tmp_path / "again")
    assert_same(saved, dqn_cartpole.load_checkpoint(str(tmp_path / "again" / "dqn_cartpole.pt")))
