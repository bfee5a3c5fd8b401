"""Helpers shared by the tests: run a script as a user would, find its run directory and read what the run
wrote there (summary, TensorBoard scalars, videos); register a test env; record what a training loop stores."""

import copy
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import pytest
from moviepy import VideoFileClip
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent
# what every script's summary.json holds after training (an evaluation's adds "eval_checkpoint")
SUMMARY_KEYS = {"env_id", "seed", "global_step", "gradient_steps", "sps", "wall_seconds", "eval_curve",
                "eval_mean_return", "eval_std_return", "eval_episodes", "interrupted"}


def run_script(script: str, *args: str, cwd: Path = ROOT, timeout: float = 300,
               env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """`python script args...` with the project root importable (as when run from a checkout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SDL_VIDEODRIVER": "dummy", **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def only_run_dir(run_root: Path) -> Path:
    """The single run directory a script created under run_root."""
    run_dirs = [p for p in run_root.iterdir() if p.is_dir()]
    assert len(run_dirs) == 1, run_dirs
    return run_dirs[0]


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every point of a TensorBoard scalar the run logged."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def scalar_steps(run_dir: Path, tag: str) -> list[int]:
    return [step for step, _ in scalars(run_dir, tag)]


def read_video(path: Path, frame_at: float | None = None) -> SimpleNamespace:
    """An mp4's size ([width, height]), its number of frames and, given frame_at, its frame at that time (s)."""
    with VideoFileClip(str(path)) as clip:
        return SimpleNamespace(size=clip.size, frames=round(clip.duration * clip.fps),
                               frame=None if frame_at is None else clip.get_frame(frame_at))


def register_once(env_id: str, **kwargs) -> None:
    """gym.register(env_id, ...) unless an earlier test in this process did."""
    if env_id not in gym.registry:
        gym.register(env_id, **kwargs)


class RandomLengthEnv(gym.Env):
    """A reward of 1 per step for an episode of 1 to 9 steps drawn at reset, ending in termination when the length
    is even and truncation when odd: a game's score is its length, and games run side by side end apart."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, render_mode=None):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.length = 0, int(self.np_random.integers(1, 10))
        return self.observation_space.sample() * 0, {}

    def step(self, action):
        self.t += 1
        end = self.t == self.length
        return self.observation_space.sample() * 0, 1.0, end and self.length % 2 == 0, end and self.length % 2 == 1, {}

    @classmethod
    def lengths(cls, seeds) -> list[int]:
        """The episode lengths the first reset with each seed draws."""
        env, lengths = cls(gym.spaces.Discrete(1), gym.spaces.Discrete(1)), []
        for seed in seeds:
            env.reset(seed=seed)
            lengths.append(env.length)
        return lengths


@pytest.fixture
def record_adds(monkeypatch):
    """record_adds(module, "ReplayBuffer") replaces that class in module by a subclass whose add() keeps a copy of
    its arguments, by name, in the list it returns (one dict per call), then stores them as before."""
    def record(module, class_name: str) -> list[dict]:
        stored, calls = getattr(module, class_name), []
        signature = inspect.signature(stored.add)

        class Recording(stored):
            def add(self, *args, **kwargs):
                bound = signature.bind(self, *args, **kwargs)
                call = {}
                for name, value in list(bound.arguments.items())[1:]:  # not self
                    kind = signature.parameters[name].kind
                    call.update(value if kind is inspect.Parameter.VAR_KEYWORD else {name: value})
                calls.append(copy.deepcopy(call))
                super().add(*args, **kwargs)

        monkeypatch.setattr(module, class_name, Recording)
        return calls
    return record


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    """The script refused its input as it should: exit status 2, one `error:` line holding message, no traceback."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
