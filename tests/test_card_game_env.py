"""Rules, spaces, seeding and the dynamic-programming solution of the card game."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from card_game_env import DRAW, STOP, CardGameEnv, average_return, final_reward, solve_by_dynamic_programming
from conftest import run_script


def test_env_checker_passes():
    check_env(gym.make("card_game_env:CardGame-v0").unwrapped)  # made by id, so render modes are checked too


def test_registered_id_makes_the_env_from_a_fresh_process():
    env = gym.make("card_game_env:CardGame-v0")
    assert isinstance(env.unwrapped, CardGameEnv)
    assert env.action_space == gym.spaces.Discrete(2)
    assert env.observation_space.shape == (1,)


def test_a_round_starts_at_zero_and_each_draw_adds_a_card_from_1_to_10():
    env = CardGameEnv()
    obs, _ = env.reset(seed=3)
    assert obs.tolist() == [0]
    cards = []
    for _ in range(2000):
        before = env.total
        obs, reward, terminated, truncated, _ = env.step(DRAW)
        cards.append(env.total - before)
        assert not truncated
        if terminated:
            assert env.total >= 21
            assert reward == final_reward(env.total)
            env.reset()
        else:
            assert reward == 0.0 and env.total < 21
    assert set(cards) == set(range(1, 11))


@pytest.mark.parametrize("total, expected", [(0, -21), (13, -8), (20, -1), (21, 0), (22, -21), (30, -21)])
def test_final_reward(total, expected):
    assert final_reward(total) == expected


def test_stopping_ends_the_round_with_sum_minus_21():
    env = CardGameEnv()
    env.reset(seed=0)
    env.total = 17
    obs, reward, terminated, truncated, _ = env.step(STOP)
    assert (obs.tolist(), reward, terminated, truncated) == ([17], -4.0, True, False)


def test_every_step_returns_the_documented_types():
    """bool terminated/truncated, a float reward, int64 observations in the space, whatever the action's
    type (Python int or numpy integer) and on every path: a draw, a stop, a bust."""
    env = gym.make("card_game_env:CardGame-v0")
    env.action_space.seed(0)
    ends = set()
    for episode in range(500):
        obs, info = env.reset(seed=episode)
        assert obs.dtype == np.int64 and obs in env.observation_space and isinstance(info, dict)
        while True:
            action = env.action_space.sample()  # a numpy integer
            obs, reward, terminated, truncated, info = env.step(action if episode % 2 else int(action))
            assert type(reward) is float and type(terminated) is bool and type(truncated) is bool
            assert obs.dtype == np.int64 and obs in env.observation_space and isinstance(info, dict)
            if terminated:
                ends.add("stop" if action == STOP else "bust" if obs[0] > 21 else "21")
                break
    assert ends == {"stop", "bust", "21"}


def test_invalid_action_raises_a_clear_value_error():
    env = CardGameEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid action 2"):
        env.step(2)


def test_same_seed_same_cards():
    def cards(seed):
        env = CardGameEnv()
        env.reset(seed=seed)
        return [env.step(DRAW)[0][0] for _ in range(2)]
    assert cards(7) == cards(7)
    assert any(cards(7) != cards(s) for s in range(8, 20))


def test_render_modes():
    assert "sum of cards: 0" in CardGameEnv(render_mode="ansi").render()
    env = CardGameEnv(render_mode="rgb_array")
    env.reset(seed=0)
    env.step(DRAW)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    with pytest.raises(ValueError):
        CardGameEnv(render_mode="human")


def test_dynamic_programming_solution():
    values, policy = solve_by_dynamic_programming()
    assert policy.tolist() == [DRAW] * 14 + [STOP] * 7  # draw while the sum is <= 13
    assert values[0] == pytest.approx(-5.1415, abs=5e-5)
    assert values[20] == -1.0 and values[13] == pytest.approx(-7.0)


def test_dp_value_matches_simulation():
    env = CardGameEnv()
    env.reset(seed=1)
    values, policy = solve_by_dynamic_programming()
    simulated = average_return(env, lambda obs: int(policy[obs[0]]), episodes=20_000)
    assert simulated == pytest.approx(values[0], abs=0.2)  # 4 standard errors of the mean (about 0.05)


def test_demo_runs():
    result = run_script("card_game_env.py", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "env checker: passed" in result.stdout
    assert "draw while the sum is <= 13; expected return -5.1415" in result.stdout
