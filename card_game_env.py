"""Writing your own environment: the card game of the TF-Agents Environments tutorial, for gymnasium.

The game: an infinite deck of cards valued 1 to 10, each equally likely. The observation is the sum of
the cards drawn so far (0 at the start). Action 0 draws a card, action 1 ends the round. The episode ends
when the agent stops or the sum reaches 21 or more. The only reward comes at the end: `sum − 21` when
the sum is at most 21 (so 0 for exactly 21), and −21 for going bust.

How the tutorial's pieces map onto gymnasium:

    TF-Agents (PyEnvironment)            gymnasium (this file)
    -----------------------------------  ------------------------------------------------------------
    action_spec / observation_spec       action_space = Discrete(2), observation_space = Box(0, 30, (1,))
    _reset() -> ts.restart(obs)          reset(seed=...) -> (obs, info)
    _step() -> ts.transition / termination
                                         step(action) -> (obs, reward, terminated, truncated, info)
    TimeStep.step_type == LAST           terminated=True (the game really ended; never truncated)
    utils.validate_py_environment        gymnasium.utils.env_checker.check_env
    tf_py_environment.TFPyEnvironment    not needed: PyTorch agents consume numpy directly

The env is registered as `CardGame-v0`, so `gymnasium.make("card_game_env:CardGame-v0")` imports this
module and builds it, which is how `python dqn_cartpole.py --env-id card_game_env:CardGame-v0` uses it.

`python card_game_env.py` walks through the tutorial: it checks the env, plays the fixed policy "draw
three cards, then stop", measures a random policy, and solves the game exactly by dynamic programming
(optimal policy: draw while the sum is at most 13, expected return −5.1415).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

DRAW, STOP = 0, 1
TARGET = 21
CARD_VALUES = np.arange(1, 11)
MAX_SUM = TARGET - 1 + CARD_VALUES.max()  # the largest reachable sum: draw a 10 on 20


def final_reward(total: int) -> int:
    """Reward when the round ends with cards summing to `total`."""
    return total - TARGET if total <= TARGET else -TARGET


class CardGameEnv(gym.Env):
    """Draw cards (action 0) or stop (action 1); get as close to 21 as possible without going over."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 2}

    def __init__(self, render_mode: str | None = None):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.spaces.Box(0, MAX_SUM, shape=(1,), dtype=np.int64)
        self.total = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.total], dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # seeds self.np_random, the only source of randomness
        self.total = 0
        return self._obs(), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r}: expected 0 (draw a card) or 1 (stop)")
        if action == DRAW:
            self.total += int(self.np_random.integers(1, 11))
        terminated = bool(action == STOP or self.total >= TARGET)  # a Python bool, also for a numpy action
        reward = float(final_reward(self.total)) if terminated else 0.0
        return self._obs(), reward, terminated, False, {}

    def render(self):
        if self.render_mode == "ansi":
            return f"sum of cards: {self.total}\n"
        if self.render_mode == "rgb_array":
            # A bar of the current sum on a scale of 0..MAX_SUM, with a red mark at 21.
            height, width = 64, 8 * (MAX_SUM + 1)
            image = np.full((height, width, 3), 255, np.uint8)
            image[16:48, : 8 * self.total] = (40, 120, 220) if self.total <= TARGET else (200, 40, 40)
            image[:, 8 * TARGET : 8 * TARGET + 2] = (220, 0, 0)
            return image
        return None


if "CardGame-v0" not in gym.registry:
    gym.register(id="CardGame-v0", entry_point=CardGameEnv)


def solve_by_dynamic_programming() -> tuple[np.ndarray, np.ndarray]:
    """Exact optimal values and policy for every sum 0..20 (undiscounted).

    V(s) = max( final_reward(s),  mean_c V'(s + c) ) where V'(t) = final_reward(t) for t >= 21 (the game
    ends) and V(t) otherwise. Sums only grow, so one sweep from high to low sums is exact.
    Returns (values, policy) indexed by sum, with policy[s] in {DRAW, STOP}.
    """
    values = np.array([final_reward(s) for s in range(MAX_SUM + 1)], dtype=np.float64)
    policy = np.full(TARGET, STOP)
    for s in range(TARGET - 1, -1, -1):
        draw_value = values[s + CARD_VALUES].mean()
        if draw_value > final_reward(s):
            values[s], policy[s] = draw_value, DRAW
    return values[:TARGET], policy


def average_return(env: gym.Env, policy, episodes: int) -> float:
    """Mean undiscounted return of `policy(obs) -> action` over `episodes` episodes."""
    total = 0.0
    for _ in range(episodes):
        obs, _ = env.reset()
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += reward
            done = terminated or truncated
    return total / episodes


def main() -> None:
    from gymnasium.utils.env_checker import check_env

    env = gym.make("CardGame-v0")
    check_env(env.unwrapped)
    print("gymnasium's env checker: passed")
    print(f"action space: {env.action_space}   observation space: {env.observation_space}")

    print("\nfixed policy: draw 3 cards, then stop")
    obs, _ = env.reset(seed=0)
    print(f"  reset -> sum {obs[0]}")
    for action in [DRAW, DRAW, DRAW, STOP]:
        obs, reward, terminated, truncated, _ = env.step(action)
        print(f"  {'draw' if action == DRAW else 'stop'} -> sum {obs[0]:2d}, reward {reward:5.1f}, "
              f"terminated {terminated}")
        if terminated:
            break

    env.action_space.seed(0)
    random_return = average_return(env, lambda obs: env.action_space.sample(), episodes=10_000)
    print(f"\nrandom policy: average return {random_return:.3f} over 10,000 episodes")

    values, policy = solve_by_dynamic_programming()
    print("\noptimal policy by dynamic programming (sum: action, value):")
    for s in range(TARGET):
        print(f"  {s:2d}: {'draw' if policy[s] == DRAW else 'stop'}  {values[s]:8.4f}")
    threshold = max(s for s in range(TARGET) if policy[s] == DRAW)
    print(f"draw while the sum is <= {threshold}; expected return {values[0]:.4f}")
    simulated = average_return(env, lambda obs: int(policy[obs[0]]), episodes=20_000)
    print(f"simulated optimal policy: average return {simulated:.3f} over 20,000 episodes")


if __name__ == "__main__":
    main()
