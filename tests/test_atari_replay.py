"""dqn_atari's frame-once replay memory against a naive reference that stores whole stacks.

Each step the memory samples must be exactly one that the environment produced, with the n-step return
the reference computes from the whole stacks: (obs, action, R = Σ_{k<h} γ^k r_{t+k}, obs_{t+h}, γ^h or 0),
the window h cut short where a step ends the game or a life. Episodes end by termination, by truncation
(the bootstrap observation is the true last one, not the reset frame) and lose lives (no bootstrap, but
the frames go on); the ring wraps around several times.
"""

from collections import defaultdict

import numpy as np
import pytest

from dqn_atari import STACK, FrameReplayMemory, make_envs

GAMMA = 0.9


class NaiveReference:
    """Every step of every env with its full observation stacks; n-step targets computed the plain way."""

    def __init__(self, num_envs: int):
        self.steps = [[] for _ in range(num_envs)]  # per env: (obs, action, reward, next_obs, no_bootstrap, game_over)
        self.where = defaultdict(list)  # observation bytes -> [(env, index)]

    def add(self, env, obs, action, reward, next_obs, no_bootstrap, game_over):
        self.where[obs.tobytes()].append((env, len(self.steps[env])))
        self.steps[env].append((obs.copy(), action, reward, next_obs.copy(), no_bootstrap, game_over))

    def n_step(self, env, index, n):
        """(action, return, bootstrap observation, discount) of step `index`, or None if its window is
        not complete yet."""
        total = 0.0
        for k in range(n):
            if index + k >= len(self.steps[env]):
                return None
            _, _, reward, next_obs, no_bootstrap, game_over = self.steps[env][index + k]
            total += GAMMA ** k * reward
            if no_bootstrap:
                return self.steps[env][index][1], total, next_obs, 0.0
            if game_over:
                return self.steps[env][index][1], total, next_obs, GAMMA ** (k + 1)
        return self.steps[env][index][1], total, next_obs, GAMMA ** n

    def check(self, batch, newest_per_env: int, n: int):
        """Every sampled step is a real one, among the newest `newest_per_env` of some env, with the
        right n-step return, bootstrap observation and discount."""
        obs, actions, returns, next_obs, discounts = batch
        for i in range(len(actions)):
            candidates = [self.n_step(env, index, n) for env, index in self.where[obs[i].tobytes()]
                          if index >= len(self.steps[env]) - newest_per_env]
            assert candidates, "sampled a step that is not in the memory any more, or never was"
            assert any(c is not None and c[0] == actions[i] and np.isclose(c[1], returns[i])
                       and np.isclose(c[3], discounts[i]) and np.array_equal(c[2], next_obs[i])
                       for c in candidates), "sampled step or its n-step target differs from the real one"
        return {obs[i].tobytes() for i in range(len(actions))}


class SyntheticAtari:
    """Stacks of unique frames, zero-padded at a game's start, like AtariVectorEnv (SAME_STEP reset)."""

    def __init__(self, num_envs: int, seed: int):
        self.rng, self.counter = np.random.default_rng(seed), 0
        self.stacks = np.zeros((num_envs, STACK, 84, 84), np.uint8)
        for env in range(num_envs):
            self._new_game(env)

    def _frame(self):
        self.counter += 1
        frame = np.zeros((84, 84), np.uint8)
        frame[0, :4] = np.frombuffer(np.uint32(self.counter).tobytes(), np.uint8)
        frame[1, 0] = 255  # never all black
        return frame

    def _new_game(self, env):
        self.stacks[env] = 0
        self.stacks[env, -1] = self._frame()

    def step(self):
        """(next_obs, rewards, terminated, truncated, life_lost, final_obs)."""
        n = len(self.stacks)
        terminated = self.rng.random(n) < 0.03
        truncated = ~terminated & (self.rng.random(n) < 0.03)
        life_lost = ~terminated & ~truncated & (self.rng.random(n) < 0.05)
        rewards = self.rng.integers(-1, 2, n).astype(np.float32)
        final = np.zeros_like(self.stacks)
        for env in range(n):
            self.stacks[env] = np.concatenate([self.stacks[env, 1:], self._frame()[None]])
            if terminated[env] or truncated[env]:
                final[env] = self.stacks[env]
                self._new_game(env)
        return self.stacks.copy(), rewards, terminated, truncated, life_lost, final


@pytest.mark.parametrize("num_envs, capacity, n", [(1, 60, 1), (3, 150, 1), (1, 60, 3), (3, 150, 3)])
def test_memory_matches_reference_on_synthetic_games(num_envs, capacity, n):
    env = SyntheticAtari(num_envs, seed=num_envs)
    memory, reference = FrameReplayMemory(capacity, num_envs, seed=0), NaiveReference(num_envs)
    obs = env.stacks.copy()
    memory.start_games(obs)
    rng = np.random.default_rng(1)
    seen = set()
    game_ends = life_losses = truncations = 0
    for step in range(1_000):  # wraps each stream's 50–60 slots many times
        actions = rng.integers(0, 6, num_envs)
        next_obs, rewards, terminated, truncated, life_lost, final = env.step()
        game_over = terminated | truncated
        no_bootstrap = terminated | life_lost
        memory.add(actions, rewards, no_bootstrap, next_obs, final, game_over)
        for e in range(num_envs):
            reference.add(e, obs[e], actions[e], rewards[e], final[e] if game_over[e] else next_obs[e],
                          no_bootstrap[e], game_over[e])
        game_ends += game_over.sum()
        truncations += truncated.sum()
        life_losses += life_lost.sum()
        obs = next_obs
        if step > 100 and step % 50 == 0:
            seen |= reference.check(memory.sample(256, n, GAMMA), memory.slots, n)
    assert game_ends > 20 and truncations > 10 and life_losses > 20
    # sampling reaches (nearly) the whole memory, not only part of it
    assert len(seen) > 0.8 * num_envs * memory.slots


def test_stack_at_a_game_start_is_zero_padded_and_never_mixes_games():
    memory = FrameReplayMemory(40, 1, seed=0)
    env = SyntheticAtari(1, seed=0)
    memory.start_games(env.stacks)
    ends = np.array([True])
    for _ in range(3):  # three one-step games: each step ends a game by termination
        memory.add(np.array([1]), np.array([1.0], np.float32), ends, *env_step_ending_game(env))
    obs, _, _, next_obs, discounts = memory.sample(64, 3, GAMMA)
    assert (discounts == 0).all()
    assert (obs[:, :3] == 0).all() and (obs[:, 3] != 0).any(axis=(1, 2)).all()  # only the game's own frame
    assert (next_obs[:, :2] == 0).all() and (next_obs[:, 2:] != 0).any(axis=(2, 3)).all()


def env_step_ending_game(env: SyntheticAtari):
    env.stacks[0] = np.concatenate([env.stacks[0, 1:], env._frame()[None]])
    final = env.stacks.copy()
    env._new_game(0)
    return env.stacks.copy(), final, np.array([True])


@pytest.mark.parametrize("n", [1, 3])
def test_memory_matches_reference_on_real_pong_frames(n):
    num_envs = 2
    envs = make_envs("ALE/Pong-v5", num_envs)
    memory, reference = FrameReplayMemory(400, num_envs, seed=0), NaiveReference(num_envs)
    obs, info = envs.reset(seed=3)
    memory.start_games(obs)
    rng = np.random.default_rng(0)
    for _ in range(500):
        actions = rng.integers(0, envs.single_action_space.n, num_envs)
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        game_over = terminated | truncated
        final = info.get("final_obs")
        memory.add(actions, np.sign(rewards), terminated, next_obs, final, game_over)
        for e in range(num_envs):
            reference.add(e, obs[e], actions[e], np.sign(rewards[e]), final[e] if game_over[e] else next_obs[e],
                          terminated[e], game_over[e])
        obs = next_obs
    envs.close()
    assert memory.frames.dtype == np.uint8 and memory.frames.shape[2:] == (84, 84)
    for _ in range(5):
        reference.check(memory.sample(128, n, GAMMA), memory.slots, n)


def test_one_million_transitions_fit_in_7_2_gb():
    from dqn_atari import replay_memory_bytes
    assert replay_memory_bytes(1_000_000, 1) <= 7.2e9
    assert replay_memory_bytes(1_000_000, 4) <= 7.2e9
    small = FrameReplayMemory(1_000, 2, seed=0)
    assert sum(getattr(small, name).nbytes for name in small.COLUMNS[:-2]) == replay_memory_bytes(1_000, 2)


def test_a_sampled_batch_belongs_to_the_caller():
    """The next sample() never changes a batch already handed out (no views of reused buffers)."""
    env = SyntheticAtari(2, seed=0)
    memory = FrameReplayMemory(100, 2, seed=0)
    memory.start_games(env.stacks)
    for _ in range(60):
        next_obs, rewards, terminated, truncated, life_lost, final = env.step()
        memory.add(np.zeros(2, np.int64), rewards, terminated | life_lost, next_obs, final, terminated | truncated)
    first = memory.sample(32, 3, GAMMA)
    kept = [column.copy() for column in first]
    memory.sample(32, 3, GAMMA)
    for column, copy in zip(first, kept, strict=True):
        np.testing.assert_array_equal(column, copy)


def test_a_checkpointed_memory_of_several_chunks_comes_back_whole():
    """state_dict compresses the frames in chunks of at most 10,000 rows: every row lands where it was, and the memory
    samples the same batches afterwards (its generator restored with it)."""
    env = SyntheticAtari(3, seed=0)
    memory = FrameReplayMemory(3 * 8_400, 3, seed=0)  # 25,200 frame rows: three chunks of 8,400
    memory.start_games(env.stacks)
    for _ in range(9_000):  # the rings wrap around
        next_obs, rewards, terminated, truncated, life_lost, final = env.step()
        memory.add(np.ones(3, np.int64), rewards, terminated | life_lost, next_obs, final, terminated | truncated)
    memory.frames[...] = np.arange(memory.frames.size // (84 * 84), dtype=np.uint32).reshape(3, -1, 1, 1) % 251
    restored = FrameReplayMemory(3 * 8_400, 3, seed=1)
    restored.load_state_dict(memory.state_dict())
    for name in FrameReplayMemory.COLUMNS:
        np.testing.assert_array_equal(getattr(restored, name), getattr(memory, name), err_msg=name)
    for column, same in zip(memory.sample(64, 3, GAMMA), restored.sample(64, 3, GAMMA), strict=True):
        np.testing.assert_array_equal(column, same)
