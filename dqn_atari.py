"""DQN on any Atari game (Mnih et al., 2015, "Human-level control through deep RL"), in one file.

The Nature DQN agent: a convolutional Q-network reads a stack of the last four 84×84 grayscale frames
and outputs one Q-value per action. It regresses Q(s, a; θ) toward the TD target of a fixed target
network θ⁻, on minibatches sampled uniformly from a replay memory D of past steps:

    y = Σ_{k<h} γ^k r_{t+k}  +  γ^h · (1 − done) · Q(s_{t+h}, a*; θ⁻)
    a* = argmax_a Q(s_{t+h}, a; θ)      (Double DQN, van Hasselt et al., 2016; plain DQN: argmax over θ⁻)
    L(θ) = E_D [ Huber(y − Q(s_t, a_t; θ)) ]

with h = n steps (`--n-step`, 3 as in Rainbow and Dopamine; Nature DQN has n = 1), or fewer where the
game or a life ends inside the window. Multi-step returns carry a reward back n steps per update instead
of one, and the Double DQN target stops the max over noisy estimates from inflating every Q-value. θ⁻
is a copy of θ refreshed every `target_network_frequency` environment steps. Rewards are clipped to
[−1, 1] for learning only; the logged `charts/episodic_return` is the unclipped score of the whole game.

`done` means "no bootstrap": the game really ended (`terminated`), or, under the DeepMind protocol, a life
was lost (the game goes on, but what follows the lost life does not count toward the value before it). A
time-limit truncation is not done: the target bootstraps from the true last observation.

Protocols. `<Game>NoFrameskip-v4` ids follow the DeepMind protocol (Mnih et al., 2015): up to 30 no-op
actions at the start of a game, a lost life ends the value for learning, no sticky actions; we also press
FIRE on reset in games that need it (OpenAI Baselines' wrappers, CleanRL). `ALE/<Game>-v5` ids follow
their own protocol (Machado et al., 2018, "Revisiting the ALE"): sticky actions (the previous action
repeats with probability 0.25) are the only randomness, so there are no no-op starts, no FIRE on reset and
no life-loss signal. Both repeat each action for 4 frames, take the max over the last two, and cap a game
at 108,000 frames (30 minutes). Other ids (`Pong-v4`, `PongNoFrameskip-v0`, RAM variants) are refused.

Environment. We use ale-py's C++ vector environment (`ale_py.vector_env.AtariVectorEnv`) rather than
gymnasium's `AtariPreprocessing` + `FrameStackObservation`: it does the whole preprocessing in C++ threads
(action repeat with max-pooling, 84×84 grayscale, a 4-frame stack padded with black frames at the start
of a game, no-op starts, FIRE on reset), needs no OpenCV, and steps while Python is busy learning (`send`
now, `recv` later). Videos show the real game in colour: a second env with the same game, seed and
settings but a 210×160 RGB screen plays in lockstep with the evaluated one (the emulator and its
randomness are seeded, so both play the same game), while the agent still acts on the 84×84 stacks.

The replay memory stores each 84×84 frame once, as uint8: 1,000,000 steps take 7.07 GB, where storing
every 4-frame stack would take 28.2 GB (56.5 GB with separate next observations). A sampled stack is
rebuilt from the frames before it, padded with black frames where its game started (exactly as the
environment showed it), so it never mixes two games; the true last frame of every game is stored too, so
a truncated game bootstraps from its real last observation. n-step returns are summed at sampling time.

Defaults and their sources: the Nature CNN, batch 32, γ = 0.99, an update every 4 steps, a 1M-step memory
and ε = 0.05 for evaluation are Nature's; Adam with lr 1e-4 (CleanRL's dqn_atari.py) and ε_Adam = 1.5e-4
(Rainbow, Hessel et al., 2018); the target copied every 1,000 steps, ε from 1 to 0.01 over the first 10 %
of the run and learning from step 80,000 are CleanRL's; n = 3 is Rainbow's; Double DQN is van Hasselt et
al.'s. `--optimizer rmsprop` is Nature's centered RMSProp (lr 2.5e-4, decay 0.95, 0.01 inside the square
root). For a 1M-step run, README gives the recipe that wins at Pong (a smaller memory, earlier learning,
a gradient step every step: four times Nature's).

How the TF-Agents DQN tutorial on Atari (River Raid) maps onto this file:

    TF-Agents                          this file
    ---------------------------------  --------------------------------------------------------------
    suite_atari.load + AtariPreprocessing + FrameStack4
                                       make_envs(): AtariVectorEnv with the same preprocessing in C++
    TimeStep (step_type, reward, obs)  what envs.recv() returns: (obs, reward, terminated, truncated, info)
    QNetwork(conv_layer_params, fc)    QNetwork: Nature CNN, conv 32×8×8/4, 64×4×4/2, 64×3×3/1, 512
    DqnAgent (epsilon_greedy, target_update_period, td_errors_loss_fn=huber, gamma, n_step_update)
                                       td_loss() and the update step in train()
    agent.collect_policy (ε-greedy)    select_actions() with epsilon from linear_schedule()
    agent.policy                       select_actions() with ε = 0.05 (Nature evaluation protocol)
    TFUniformReplayBuffer              FrameReplayMemory (frames stored once)
    DynamicStepDriver                  the `while global_step < ...` loop in train()
    AverageReturnMetric / EpisodeLengthMetric
                                       charts/episodic_return, charts/episodic_length in TensorBoard

Usage:
    python dqn_atari.py --env-id ALE/Pong-v5
    python dqn_atari.py --env-id PongNoFrameskip-v4 --total-timesteps 1000000 --buffer-size 100000 \\
        --learning-starts 20000 --train-frequency 1                  # the 1M-step recipe (README)
    python dqn_atari.py --eval-checkpoint models/pong_dqn.pt --env-id PongNoFrameskip-v4 --capture-video
    python dqn_atari.py --resume runs/.../dqn_atari.pt             # continue a stopped run in place
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import ale_py
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from ale_py.vector_env import AtariVectorEnv
from torch.utils.tensorboard import SummaryWriter

SCRIPT = Path(__file__).stem
EVAL_SEED_OFFSET = 10_000  # evaluation envs get seed + this: never the training env's games
FRAME_SHAPE = (84, 84)
SCREEN_SHAPE = (210, 160)  # the ALE screen, for videos
STACK = 4


@dataclass
class Args:
    env_id: str = "ALE/Pong-v5"
    """an ALE id: ALE/<Game>-v5 (sticky actions) or <Game>NoFrameskip-v4 (DeepMind protocol)"""
    seed: int = 1
    """seed of torch, numpy, the environments and exploration"""
    total_timesteps: int = 10_000_000
    """environment steps (agent decisions, 4 frames each) to train for, over all envs"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the network runs; auto picks cuda when available"""
    num_envs: int = 1
    """environments stepped at once (in C++ threads)"""
    capture_video: bool = False
    """record colour mp4s of the first game of every evaluation, and of a random agent at the end"""
    save_model: bool = True
    """write the checkpoint to the run directory"""
    eval_checkpoint: str | None = None
    """path of a saved checkpoint or model to evaluate instead of training"""
    eval_episodes: int = 10
    """number of games per evaluation"""
    eval_frequency: int = 250_000
    """evaluate every this many environment steps (and at the end)"""
    eval_epsilon: float = 0.05
    """ε of the evaluation policy (Nature protocol)"""
    run_root: str = "runs"
    """folder under which the run directory is created"""
    num_threads: int = 2
    """torch CPU threads for the CNN (use one per core; the emulator's thread shares them)"""

    optimizer: Literal["adam", "rmsprop"] = "adam"
    """adam (lr 1e-4, eps 1.5e-4) or rmsprop (Nature's centered RMSProp: lr 2.5e-4, decay 0.95, 0.01 in the root)"""
    learning_rate: float | None = None
    """overrides the optimizer's default learning rate"""
    buffer_size: int = 1_000_000
    """replay memory capacity in steps (one 84×84 frame each)"""
    batch_size: int = 32
    """steps per gradient step (Nature: 32)"""
    gamma: float = 0.99
    """discount factor γ"""
    n_step: int = 3
    """length of the multi-step return in the TD target (Rainbow and Dopamine use 3; Nature DQN is 1)"""
    double_dqn: bool = True
    """pick the bootstrap action with the online network and value it with the target one (van Hasselt et al.)"""
    learning_starts: int = 80_000
    """environment steps of collection before the first gradient step"""
    train_frequency: int = 4
    """one gradient step every this many environment steps (Nature: 4)"""
    target_network_frequency: int = 1_000
    """copy the online network into the target every this many environment steps"""
    start_e: float = 1.0
    """initial exploration ε"""
    end_e: float = 0.01
    """final exploration ε"""
    exploration_fraction: float = 0.10
    """fraction of total_timesteps over which ε decays linearly (of the first run, when resumed longer)"""
    checkpoint_frequency: int = 500_000
    """write the checkpoint every this many environment steps (and on Ctrl-C or SIGTERM)"""
    checkpoint_minutes: float = 10.0
    """also write the checkpoint every this many minutes of wall-clock"""
    resume: str | None = None
    """continue the run saved in this checkpoint, in its run directory, with its saved arguments"""
    save_buffer: bool = False
    """save the replay memory with each checkpoint, so that --resume need not refill it (compressed: the 0.71 GB
    of a 100,000-step memory take 5 MB on disk for Pong, 24 MB for River Raid)"""


# ---------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------
def atari_settings(env_id: str) -> dict:
    """The game and protocol of an ALE id (see the module docstring): AtariVectorEnv's keyword arguments,
    plus `life_loss_ends_value` for the learner."""
    gym.register_envs(ale_py)
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as e:
        raise InputError(f"unknown env '{env_id}': {e}") from None
    if not str(spec.entry_point).startswith("ale_py"):
        raise InputError(f"{SCRIPT} needs an Atari (ALE) env such as ALE/Pong-v5, got '{env_id}'")
    if spec.kwargs.get("obs_type", "rgb") != "rgb" or spec.kwargs.get("continuous", False):
        raise InputError(f"'{env_id}' is a RAM or continuous-action variant; use the image, discrete id")
    game = {"game": spec.kwargs["game"], "full_action_space": spec.kwargs.get("full_action_space", False),
            "max_num_frames_per_episode": spec.kwargs.get("max_num_frames_per_episode", 108_000)}
    if env_id.startswith("ALE/") and spec.version == 5:  # Machado et al. (2018)
        return {**game, "repeat_action_probability": spec.kwargs.get("repeat_action_probability", 0.25),
                "noop_max": 0, "use_fire_reset": False, "life_loss_ends_value": False}
    if env_id.endswith("NoFrameskip-v4"):  # DeepMind (Mnih et al., 2015)
        return {**game, "repeat_action_probability": 0.0, "noop_max": 30, "use_fire_reset": True,
                "life_loss_ends_value": True}
    name = spec.kwargs["game"].title().replace("_", "")
    raise InputError(f"'{env_id}' follows neither protocol of this file: use {name}NoFrameskip-v4 (DeepMind) "
                     f"or ALE/{name}-v5 (sticky actions)")


def make_envs(env_id: str, num_envs: int, screen: bool = False) -> AtariVectorEnv:
    """num_envs games with the id's preprocessing; a game that ends is reset in the same step and its
    last observation is returned in info["final_obs"]. With screen=True the observations are instead the
    210×160 RGB screen (one frame): the same games, for videos a person can watch."""
    settings = {k: v for k, v in atari_settings(env_id).items() if k != "life_loss_ends_value"}
    image = ({"img_height": SCREEN_SHAPE[0], "img_width": SCREEN_SHAPE[1], "grayscale": False, "stack_num": 1,
              "maxpool": False} if screen else
             {"img_height": FRAME_SHAPE[0], "img_width": FRAME_SHAPE[1], "grayscale": True, "stack_num": STACK,
              "maxpool": True})
    return AtariVectorEnv(**settings, **image, num_envs=num_envs, num_threads=min(num_envs, os.cpu_count()),
                          autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, frameskip=4,
                          reward_clipping=False, episodic_life=False)


# ---------------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------------
class QNetwork(nn.Module):
    """The Nature CNN: uint8 frames in, one Q-value per action out."""

    def __init__(self, n_actions: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(STACK, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 512), nn.ReLU(),
            nn.Linear(512, n_actions),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        # uint8 crosses to the device (4× less data than float); one pass then converts it to float in the
        # channels-last layout (faster convolutions on CPU) and one scales it in place.
        features = self.net[:-1](frames.to(dtype=torch.float32, memory_format=torch.channels_last).div_(255.0))
        # the Q-values in float32 even under bf16 autocast: the gaps between actions' values are small
        with torch.autocast(features.device.type, enabled=False):
            return self.net[-1](features.float())


def bf16_is_fast(device: torch.device) -> bool:
    """Whether the CPU has bfloat16 instructions (AVX512-BF16 or AMX), which make a bf16 update cheaper;
    elsewhere bf16 is emulated and slower, so the update stays in float32 (as it does on CUDA)."""
    try:
        cpu_flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return device.type == "cpu" and ("avx512_bf16" in cpu_flags or "amx_bf16" in cpu_flags)


# ---------------------------------------------------------------------------------------------------
# Replay memory: every frame stored once
# ---------------------------------------------------------------------------------------------------
class FrameReplayMemory:
    """Uniform replay of Atari steps storing each 84×84 frame once.

    Each environment writes its own stream (a ring of `capacity // num_envs` slots). Slot t of a stream
    holds the newest frame of the observation at step t, the action taken there, the clipped reward,
    `no_bootstrap` (the game ended or a life was lost: nothing after it counts toward this step's value),
    `game_over` (the game ended, by termination or time limit) and how many earlier frames of the same
    game precede it (0–3). The observation at t is frames t−3..t with the frames from before its game
    replaced by black ones, which is exactly the stack the environment showed. When a game ends, its true
    last frame takes one extra slot (no action is taken from it) before the next game's first frame.

    A sampled step t comes with its n-step return: the window t..t+h−1 has h = n steps, or fewer where a
    step in it ends the game or a life, and the bootstrap observation is the one at t+h. A step can be
    sampled once that observation is written; the oldest three slots of a stream cannot, because the
    frames before them have been overwritten.
    """

    COLUMNS = ["frames", "actions", "rewards", "no_bootstrap", "game_over", "history", "sampleable", "newest",
               "filled"]

    def __init__(self, capacity: int, num_envs: int, seed: int):
        self.num_envs, self.slots = num_envs, capacity // num_envs
        shape = (num_envs, self.slots)
        self.frames = np.zeros(shape + FRAME_SHAPE, np.uint8)
        self.actions = np.zeros(shape, np.uint8)
        self.rewards = np.zeros(shape, np.float32)
        self.no_bootstrap = np.zeros(shape, np.bool_)
        self.game_over = np.zeros(shape, np.bool_)
        self.history = np.zeros(shape, np.uint8)  # earlier frames of the same game before this one, up to 3
        self.sampleable = np.zeros(shape, np.bool_)  # action and next frame known, the frames before it kept
        self.newest = np.full(num_envs, -1)  # slot of each stream's newest frame
        self.filled = np.zeros(num_envs, np.int64)  # slots written so far in each stream, up to `slots`
        self.rng = np.random.default_rng(seed)

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self.COLUMNS[:-2])

    def _write_frame(self, env: int, frame: np.ndarray, history: int) -> None:
        slot = (self.newest[env] + 1) % self.slots
        self.frames[env, slot], self.history[env, slot] = frame, history
        self.sampleable[env, slot] = False  # until its action and next frame are known
        # the three slots after it are now the oldest: the frames before them are gone
        self.sampleable[env, (slot + np.arange(1, STACK)) % self.slots] = False
        self.newest[env] = slot
        self.filled[env] = min(self.filled[env] + 1, self.slots)

    def start_games(self, first_observations: np.ndarray, envs=None) -> None:
        """Store the first frame of a new game for each env in `envs` (all by default). A game still under
        way in a stream (a resumed run starts new games) ends there as if truncated: its last step
        bootstraps from its newest frame, and no n-step window runs past it."""
        for env in range(self.num_envs) if envs is None else envs:
            newest = self.newest[env]
            if self.filled[env] > 1 and self.history[env, newest] > 0 and not self.game_over[env, newest - 1]:
                self.game_over[env, newest - 1] = True
            self._write_frame(env, first_observations[env, -1], history=0)

    def add(self, actions, rewards, no_bootstrap, next_observations, final_observations, game_over) -> None:
        """Record one step of every env. `next_observations` are what `step` returned (a new game's first
        observation where `game_over`); `final_observations` hold the true last observation of ended games."""
        for env in range(self.num_envs):
            slot = self.newest[env]
            self.actions[env, slot], self.rewards[env, slot] = actions[env], rewards[env]
            self.no_bootstrap[env, slot], self.game_over[env, slot] = no_bootstrap[env], game_over[env]
            next_frame = final_observations[env, -1] if game_over[env] else next_observations[env, -1]
            self._write_frame(env, next_frame, history=min(int(self.history[env, slot]) + 1, STACK - 1))
            self.sampleable[env, slot] = True
            if game_over[env]:
                self.start_games(next_observations, [env])

    def _stacks(self, env: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """The observations whose newest frame is at (env, slot), black before their game started."""
        offsets = np.arange(-(STACK - 1), 1)  # -3..0
        stacks = self.frames[env[:, None], (slot[:, None] + offsets) % self.slots]
        before_game = -offsets[None, :] > self.history[env, slot][:, None]
        stacks[before_game] = 0
        return stacks

    def _windows(self, env: np.ndarray, slot: np.ndarray, n_step: int) -> tuple[np.ndarray, np.ndarray]:
        """For steps at (env, slot): their n-step windows' slots (batch, n) and which of them count, i.e.
        come before any step that ends the game or a life (the first always counts)."""
        window = (slot[:, None] + np.arange(n_step)) % self.slots
        ends = self.no_bootstrap[env[:, None], window] | self.game_over[env[:, None], window]
        counts = np.ones_like(ends)
        counts[:, 1:] = ~np.logical_or.accumulate(ends[:, :-1], axis=1)
        return window, counts

    def sample(self, batch_size: int, n_step: int = 1, gamma: float = 0.99):
        """(obs, actions, returns, next_obs, discounts) numpy arrays of batch_size uniformly drawn steps:
        returns = Σ_{k<h} γ^k r_{t+k}, next_obs = the observation at t+h, discounts = γ^h, or 0 when the
        window ended the game or a life (no bootstrap). The TD target is returns + discounts · V(next_obs).

        Draws among the written slots and redraws the few that cannot be sampled (the newest n, the oldest
        three, the last frame of each game): cheaper than listing the sampleable ones every time."""
        if self.filled.max() < 2:  # cheap: no stream has a frame after its first yet
            raise RuntimeError("the replay memory holds no complete step yet")
        env = self.rng.integers(0, self.num_envs, batch_size)
        slot = self.rng.integers(0, self.filled[env])
        while True:
            window, counts = self._windows(env, slot, n_step)
            horizon = counts.sum(axis=1)
            # the bootstrap frame at t+h must be written: t+h at most the newest slot (values of the window
            # past the newest slot are stale, but they only matter where this check fails)
            ok = self.sampleable[env, slot] & ((self.newest[env] - slot) % self.slots >= horizon)
            if ok.all():
                break
            env[~ok] = self.rng.integers(0, self.num_envs, int((~ok).sum()))
            slot[~ok] = self.rng.integers(0, self.filled[env[~ok]])
        returns = (self.rewards[env[:, None], window] * counts * gamma ** np.arange(n_step)).sum(axis=1)
        last = (slot + horizon - 1) % self.slots
        discounts = np.where(self.no_bootstrap[env, last], 0.0, gamma ** horizon)
        return (self._stacks(env, slot), self.actions[env, slot].astype(np.int64), returns.astype(np.float32),
                self._stacks(env, (slot + horizon) % self.slots), discounts.astype(np.float32))

    def __len__(self) -> int:
        return int(self.sampleable.sum())


# ---------------------------------------------------------------------------------------------------
# Update: the TD loss and the optimizers
# ---------------------------------------------------------------------------------------------------
def td_loss(q_network: QNetwork, target_network: QNetwork, batch: list[torch.Tensor],
            double_dqn: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Huber(y − Q(s, a; θ)) with the n-step target y = R + discount · Q(s', a*; θ⁻), where a* is the target
    network's own argmax, or the online network's with double_dqn; also returns Q(s, a; θ) for logging."""
    obs, actions, returns, next_obs, discounts = batch
    with torch.no_grad():
        next_q = target_network(next_obs)
        best = (q_network(next_obs) if double_dqn else next_q).argmax(dim=1, keepdim=True)
        td_target = returns + discounts * next_q.gather(1, best).squeeze(1)
    q_taken = q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
    return F.huber_loss(q_taken, td_target), q_taken


class NatureRMSprop(torch.optim.Optimizer):
    """Centered RMSProp as in the Nature DQN code: θ ← θ − lr · g / √(E[g²] − E[g]² + ε).

    ε sits inside the square root (torch's RMSprop adds it outside). Nature's gradient g is the sum over the
    minibatch, ours the mean (B times smaller), so its ε = 0.01 is ε = 0.01 / B² here: the same update."""

    def __init__(self, params, lr: float, decay: float, eps: float):
        super().__init__(params, {"lr": lr, "decay": decay, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, decay, eps = group["lr"], group["decay"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["square_avg"], state["grad_avg"] = torch.zeros_like(p), torch.zeros_like(p)
                square_avg, grad_avg = state["square_avg"], state["grad_avg"]
                square_avg.mul_(decay).addcmul_(p.grad, p.grad, value=1 - decay)
                grad_avg.mul_(decay).add_(p.grad, alpha=1 - decay)
                p.addcdiv_(p.grad, (square_avg - grad_avg * grad_avg + eps).sqrt_(), value=-lr)


def make_optimizer(args: Args, q_network: QNetwork) -> torch.optim.Optimizer:
    if args.optimizer == "rmsprop":
        return NatureRMSprop(q_network.parameters(), lr=args.learning_rate or 2.5e-4, decay=0.95,
                             eps=0.01 / args.batch_size ** 2)
    # fused: one kernel for all parameters
    return torch.optim.Adam(q_network.parameters(), lr=args.learning_rate or 1e-4, eps=1.5e-4, fused=True)


# ---------------------------------------------------------------------------------------------------
# Exploration schedule and policy
# ---------------------------------------------------------------------------------------------------
def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Linear interpolation from start (t = 0) to end (t >= duration)."""
    return start + (end - start) * min(t / duration, 1.0)


def select_actions(q_network: QNetwork, observations: np.ndarray, epsilon: float, rng: np.random.Generator,
                   n_actions: int, device: torch.device) -> np.ndarray:
    """ε-greedy actions for a batch of observations: the collect policy, or with ε = 0.05 the evaluation one."""
    explore = rng.random(len(observations)) < epsilon
    actions = rng.integers(0, n_actions, len(observations))
    if not explore.all():  # the network is only asked when some env acts greedily
        with torch.no_grad():
            greedy = q_network(torch.from_numpy(observations).to(device)).argmax(dim=1).cpu().numpy()
        actions = np.where(explore, actions, greedy)
    return actions


# ---------------------------------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------------------------------
@dataclass
class Progress:
    """The counters of a run, saved in its checkpoint so that a resumed run continues them."""
    global_step: int = 0
    gradient_steps: int = 0
    exploration_steps: int = 1  # ε reaches end_e here: fixed when the run starts, kept when resumed longer
    eval_curve: list = field(default_factory=list)  # [step, mean score] of every evaluation
    train_seconds: float = 0.0  # of the earlier sessions of this run


def train(args: Args, run_dir: Path, device: torch.device) -> dict:
    envs = make_envs(args.env_id, args.num_envs)
    n_actions = int(envs.single_action_space.n)
    life_loss_ends_value = atari_settings(args.env_id)["life_loss_ends_value"]
    print(f"{args.env_id}: actions {dict(enumerate(a.name for a in envs.ale.get_action_set()))}; "
          f"observation {envs.single_observation_space}")
    memory = make_memory(args)
    q_network = QNetwork(n_actions).to(device, memory_format=torch.channels_last)
    target_network = QNetwork(n_actions).to(device, memory_format=torch.channels_last)
    target_network.load_state_dict(q_network.state_dict())
    optimizer = make_optimizer(args, q_network)
    rng = np.random.default_rng(args.seed)  # exploration
    progress = Progress(exploration_steps=max(1, int(args.exploration_fraction * args.total_timesteps)))
    if args.resume:
        restore_checkpoint(args, q_network, target_network, optimizer, memory, rng, progress, n_actions, device)
    learner = (q_network, target_network, optimizer, memory, rng, progress, n_actions)
    bf16 = bf16_is_fast(device)
    print(f"run directory: {run_dir}  (device: {device}{', bf16 update' if bf16 else ''})", flush=True)  # the run is under way from here

    # a resumed run goes on in the same TensorBoard run and hides what was logged after its checkpoint
    writer = SummaryWriter(str(run_dir), purge_step=progress.global_step + 1 if args.resume else None)
    if not args.resume:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
            f"|{k}|{v}|" for k, v in asdict(args).items()))
    # after a resume without a saved memory, learning waits until it holds learning_starts steps again
    start_step = progress.global_step
    learning_resumes_at = start_step + (args.learning_starts if len(memory) == 0 and start_step else 0)
    recent_scores = collections.deque(maxlen=10)  # the last 10 games' scores, for the progress line
    eval_scores = np.zeros(0)
    num_envs = args.num_envs
    observations, info = envs.reset(seed=args.seed + start_step)  # a resumed run starts new games
    memory.start_games(observations)
    lives, scores, lengths = info["lives"].copy(), np.zeros(num_envs), np.zeros(num_envs, np.int64)
    start_time = last_save = time.perf_counter()
    last_report = (start_step, start_time)  # the progress line's rate is the recent one: see below
    while progress.global_step < args.total_timesteps and not STOP:
        global_step = progress.global_step
        epsilon = linear_schedule(args.start_e, args.end_e, progress.exploration_steps, global_step)
        actions = select_actions(q_network, observations, epsilon, rng, n_actions, device)
        envs.send(actions)  # the emulators step in their own threads while we learn below
        global_step = progress.global_step = global_step + num_envs

        learning = global_step > max(args.learning_starts, learning_resumes_at)
        updates_due = global_step // args.train_frequency - (global_step - num_envs) // args.train_frequency
        for _ in range(updates_due if learning else 0):
            batch = [torch.from_numpy(x).to(device, non_blocking=True)
                     for x in memory.sample(args.batch_size, args.n_step, args.gamma)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss, q_taken = td_loss(q_network, target_network, batch, args.double_dqn)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            progress.gradient_steps += 1
            if progress.gradient_steps % 250 == 0:
                writer.add_scalar("losses/td_loss", loss.item(), global_step)
                writer.add_scalar("losses/q_values", q_taken.mean().item(), global_step)
        if crossed(global_step, num_envs, args.target_network_frequency):
            target_network.load_state_dict(q_network.state_dict())

        next_observations, rewards, terminated, truncated, info = envs.recv()
        game_over = terminated | truncated
        life_lost = (info["lives"] < lives) & ~game_over
        no_bootstrap = terminated | (life_lost if life_loss_ends_value else False)
        memory.add(actions, np.sign(rewards), no_bootstrap, next_observations, info.get("final_obs"), game_over)
        lives = info["lives"].copy()
        scores += rewards
        lengths += 1
        for env in np.flatnonzero(game_over):
            recent_scores.append(float(scores[env]))
            writer.add_scalar("charts/episodic_return", scores[env], global_step)
            writer.add_scalar("charts/episodic_length", lengths[env], global_step)
            scores[env], lengths[env] = 0.0, 0
        observations = next_observations

        if crossed(global_step, num_envs, 10_000):
            # steps/s since the previous line, not since the start: the ε-random steps before learning
            # starts run many times faster and would make the ETA of a long run hours too short
            now = time.perf_counter()
            sps = (global_step - last_report[0]) / (now - last_report[1])
            last_report = (global_step, now)
            writer.add_scalar("charts/SPS", (global_step - start_step) / (now - start_time), global_step)
            writer.add_scalar("charts/epsilon", epsilon, global_step)
            recent = f"{np.mean(recent_scores):7.1f}" if recent_scores else "      –"
            print(f"step {global_step:>10,} of {args.total_timesteps:,} | last 10 games {recent} | "
                  f"ε {epsilon:.3f} | SPS {sps:,.0f} | ETA {format_duration((args.total_timesteps - global_step) / sps)}",
                  flush=True)
        if crossed(global_step, num_envs, args.eval_frequency) or global_step >= args.total_timesteps:
            video = run_dir / "videos" / f"step-{global_step:09d}.mp4" if args.capture_video else None
            scores_now = evaluate(q_network, args.env_id, args.eval_episodes, args.eval_epsilon,
                                  args.seed + EVAL_SEED_OFFSET, device, video)
            if scores_now is not None:  # None: a stop was asked for during the evaluation
                eval_scores = scores_now
                progress.eval_curve.append([global_step, float(eval_scores.mean())])
                writer.add_scalar("eval/mean_return", eval_scores.mean(), global_step)
                print(f"step {global_step:>10,} | eval score {eval_scores.mean():7.2f} ± {eval_scores.std():.2f} "
                      f"over {len(eval_scores)} games", flush=True)
        if (crossed(global_step, num_envs, args.checkpoint_frequency)
                or time.perf_counter() - last_save > 60 * args.checkpoint_minutes):
            save_checkpoint(args, run_dir, learner, start_time)
            last_save = time.perf_counter()

    if STOP:
        print(f"\nstopped by {signal.Signals(STOP.signal).name} at step {progress.global_step:,}: "
              f"saving what was learned", flush=True)
    session_seconds = time.perf_counter() - start_time
    save_checkpoint(args, run_dir, learner, start_time)
    if args.capture_video and not STOP:
        evaluate(q_network, args.env_id, 1, 1.0, args.seed + EVAL_SEED_OFFSET, device,
                 run_dir / "videos" / "random-agent.mp4")
    writer.close()
    envs.close()
    return {"global_step": progress.global_step, "sps": (progress.global_step - start_step) / session_seconds,
            "train_seconds": progress.train_seconds + session_seconds, "eval_returns": eval_scores,
            "eval_curve": progress.eval_curve, "gradient_steps": progress.gradient_steps,
            "replay_memory_bytes": memory.nbytes, "interrupted": bool(STOP)}


def crossed(step: int, increment: int, period: int) -> bool:
    """Whether going from step − increment to step passed a multiple of period."""
    return step // period > (step - increment) // period


def format_duration(seconds: float) -> str:
    """Seconds as h:mm:ss, for the ETA."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ---------------------------------------------------------------------------------------------------
# Evaluation and video
# ---------------------------------------------------------------------------------------------------
def evaluate(q_network: QNetwork, env_id: str, episodes: int, epsilon: float, seed: int, device: torch.device,
             video_path: Path | None = None) -> np.ndarray | None:
    """Unclipped scores of `episodes` whole games on separate envs (one per game, stepped together), or
    None if a stop was asked for meanwhile. With video_path, the first game is also written as a colour
    mp4: a screen env plays the same game in lockstep (same seed and actions) while the agent acts on
    the usual 84×84 stacks."""
    envs = make_envs(env_id, episodes)
    rng = np.random.default_rng(seed)
    observations, _ = envs.reset(seed=seed)
    if video_path is not None:
        screen_env, video = make_envs(env_id, 1, screen=True), VideoWriter(video_path)
        video.add(screen_env.reset(seed=seed)[0][0, -1])
    scores, finished = np.zeros(episodes), np.zeros(episodes, np.bool_)
    while not finished.all() and not STOP:
        actions = select_actions(q_network, observations, epsilon, rng, envs.single_action_space.n, device)
        observations, rewards, terminated, truncated, info = envs.step(actions)
        if video_path is not None and not finished[0]:
            screen, screen_reward, screen_terminated, screen_truncated, screen_info = screen_env.step(actions[:1])
            if (screen_reward[0], screen_terminated[0]) != (rewards[0], terminated[0]):
                raise RuntimeError("the screen env went out of step with the evaluated game")
            ended = screen_terminated[0] or screen_truncated[0]
            video.add(screen_info["final_obs"][0, -1] if ended else screen[0, -1])
        scores += np.where(finished, 0.0, rewards)
        finished |= terminated | truncated
    envs.close()
    if video_path is not None:
        screen_env.close()
        video.close()
    return None if STOP else scores


class VideoWriter:
    """An mp4 of RGB screens, scaled up 3× so that they can be watched, written frame by frame (a long game
    is tens of thousands of screens). 15 decisions per second is real time: 60 frames / 4 per decision."""

    SCALE = 3

    def __init__(self, path: Path):
        from moviepy.video.io.ffmpeg_writer import FFMPEG_VideoWriter

        path.parent.mkdir(parents=True, exist_ok=True)
        height, width = SCREEN_SHAPE
        self.writer = FFMPEG_VideoWriter(str(path), (width * self.SCALE, height * self.SCALE), fps=15)

    def add(self, screen: np.ndarray) -> None:
        self.writer.write_frame(screen.repeat(self.SCALE, axis=0).repeat(self.SCALE, axis=1))

    def close(self) -> None:
        self.writer.close()


def evaluate_checkpoint(args: Args, run_dir: Path, device: torch.device) -> dict:
    """Play a saved checkpoint, or a model file holding only `q_network`, `n_actions` and `env_id`."""
    checkpoint = load_checkpoint(args.eval_checkpoint, device)
    envs = make_envs(args.env_id, 1)
    n_actions = int(envs.single_action_space.n)
    envs.close()
    if n_actions != checkpoint["n_actions"]:
        raise InputError(f"checkpoint was trained on '{checkpoint['env_id']}' ({checkpoint['n_actions']} actions); "
                         f"'{args.env_id}' has {n_actions}")
    q_network = QNetwork(n_actions).to(device, memory_format=torch.channels_last)
    q_network.load_state_dict(checkpoint["q_network"])
    videos = run_dir / "videos" if args.capture_video else None
    scores = evaluate(q_network, args.env_id, args.eval_episodes, args.eval_epsilon, args.seed + EVAL_SEED_OFFSET,
                      device, videos / "agent.mp4" if videos else None)
    if scores is None:
        raise InputError("evaluation stopped before its games ended")
    if videos:
        evaluate(q_network, args.env_id, 1, 1.0, args.seed + EVAL_SEED_OFFSET, device, videos / "random-agent.mp4")
    print(f"evaluation of {args.eval_checkpoint} on {args.env_id}: {scores.mean():.2f} ± {scores.std():.2f} "
          f"over {len(scores)} games (ε = {args.eval_epsilon})")
    step = checkpoint.get("progress", {}).get("global_step", checkpoint.get("global_step", 0))
    return {"global_step": step, "sps": 0.0, "eval_returns": scores, "eval_curve": [[step, float(scores.mean())]],
            "eval_checkpoint": args.eval_checkpoint}


# ---------------------------------------------------------------------------------------------------
# Plumbing: input checks, stopping, checkpoints and resume, run directory, summary
# ---------------------------------------------------------------------------------------------------
class InputError(Exception):
    """Bad user input: reported as one line and a non-zero exit, without a traceback."""


def check_args(args: Args) -> None:
    positive = ["total_timesteps", "num_envs", "eval_episodes", "eval_frequency", "buffer_size", "batch_size",
                "n_step", "train_frequency", "target_network_frequency", "num_threads", "checkpoint_frequency",
                "checkpoint_minutes"]
    for name in positive:
        if getattr(args, name) <= 0:
            raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.seed < 2**31 - EVAL_SEED_OFFSET - 1000:  # ALE seeds are 32-bit, evaluation adds an offset
        raise InputError(f"--seed must be in [0, {2**31 - EVAL_SEED_OFFSET - 1000}), got {args.seed}")
    if args.learning_rate is not None and args.learning_rate <= 0:
        raise InputError(f"--learning-rate must be positive, got {args.learning_rate}")
    if args.learning_starts < args.batch_size:  # the memory must hold a batch before the first update
        raise InputError(f"--learning-starts must be at least --batch-size ({args.batch_size}), "
                         f"got {args.learning_starts}")
    # each stream needs room for a whole stack and an n-step window besides what is sampled
    if args.buffer_size < args.num_envs * (STACK + args.n_step + 1) or args.batch_size > args.buffer_size:
        raise InputError(f"--buffer-size {args.buffer_size} is too small for --num-envs {args.num_envs}, "
                         f"--n-step {args.n_step} and --batch-size {args.batch_size}")
    for name in ["gamma", "start_e", "end_e", "eval_epsilon"]:
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise InputError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if not 0.0 < args.exploration_fraction <= 1.0:
        raise InputError(f"--exploration-fraction must be in (0, 1], got {args.exploration_fraction}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA device is available")
    atari_settings(args.env_id)  # a bad id is refused before anything is created


def make_memory(args: Args) -> FrameReplayMemory:
    """The replay memory, refused up front when it would not fit in the available memory."""
    needed, available = replay_memory_bytes(args.buffer_size, args.num_envs), available_memory_bytes()
    if needed > available:
        raise InputError(f"--buffer-size {args.buffer_size:,} needs {needed / 1e9:.2f} GB of replay memory, "
                         f"but only {available / 1e9:.2f} GB is available")
    memory = FrameReplayMemory(args.buffer_size, args.num_envs, args.seed)
    print(f"replay memory: {args.buffer_size:,} steps, {memory.nbytes / 1e9:.2f} GB", flush=True)
    return memory


def replay_memory_bytes(buffer_size: int, num_envs: int) -> int:
    """Bytes FrameReplayMemory allocates: one frame plus 9 bytes of bookkeeping per slot."""
    return (buffer_size // num_envs) * num_envs * (FRAME_SHAPE[0] * FRAME_SHAPE[1] + 9)


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping), else free pages."""
    try:
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM (docker stop, systemd, SLURM, Ray) ask training to stop at the next safe
    point: the step under way finishes, the checkpoint and summary are saved, and the process exits with
    128 + the signal's number. A second signal stops the process at once."""

    def __init__(self):
        self.signal = None

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signum
        signal.signal(signum, signal.SIG_DFL)

    def __bool__(self) -> bool:
        return self.signal is not None


STOP = StopRequest()


def save_checkpoint(args: Args, run_dir: Path, learner: tuple, session_start: float) -> None:
    """Everything needed to continue the run exactly, written atomically (a kill during the write leaves
    the previous checkpoint whole); with --save-buffer, the replay memory too, beside it."""
    if not args.save_model:
        return
    q_network, target_network, optimizer, memory, rng, progress, n_actions = learner
    path = run_dir / f"{SCRIPT}.pt"
    train_seconds = progress.train_seconds + time.perf_counter() - session_start
    if args.save_buffer:  # first, so that a checkpoint never points at an older memory than its own
        write_atomically(path.with_suffix(".memory.npz"), lambda f: np.savez_compressed(
            f, step=progress.global_step, **{name: getattr(memory, name) for name in memory.COLUMNS}))
    write_atomically(path, lambda f: torch.save({
        "q_network": q_network.state_dict(), "target_network": target_network.state_dict(),
        "optimizer": optimizer.state_dict(), "progress": {**asdict(progress), "train_seconds": train_seconds},
        "rng": rng.bit_generator.state, "memory_rng": memory.rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(), "n_actions": n_actions, "env_id": args.env_id, "args": asdict(args)}, f))


def write_atomically(path: Path, write) -> None:
    """write(file) into a temporary file beside path, then rename it over path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def load_checkpoint(path: str, device: torch.device | str = "cpu") -> dict:
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # a missing, truncated or foreign file: torch.load raises many kinds
        raise InputError(f"cannot load checkpoint '{path}': {type(e).__name__}: {e}") from None
    if not isinstance(checkpoint, dict) or "q_network" not in checkpoint or "n_actions" not in checkpoint:
        raise InputError(f"'{path}' is not a {SCRIPT} checkpoint")
    return checkpoint


def restore_checkpoint(args: Args, q_network, target_network, optimizer, memory, rng, progress, n_actions,
                       device) -> None:
    """Load the networks, optimizer, counters and random generators of --resume, and its replay memory
    when one was saved with it at the same step (else the memory is refilled before learning goes on)."""
    checkpoint = load_checkpoint(args.resume, device)
    if checkpoint["n_actions"] != n_actions or "optimizer" not in checkpoint:
        raise InputError(f"--resume {args.resume} is not a training checkpoint of '{args.env_id}'")
    q_network.load_state_dict(checkpoint["q_network"])
    target_network.load_state_dict(checkpoint["target_network"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    for name, value in checkpoint["progress"].items():
        setattr(progress, name, value)
    rng.bit_generator.state = checkpoint["rng"]
    memory.rng.bit_generator.state = checkpoint["memory_rng"]
    torch.set_rng_state(checkpoint["torch_rng"])
    memory_path = Path(args.resume).with_suffix(".memory.npz")
    restored = memory_path.exists() and load_memory(memory, memory_path, progress.global_step)
    print(f"resumed {args.resume} at step {progress.global_step:,} (replay memory "
          f"{'restored' if restored else 'refilled before learning continues'})", flush=True)


def load_memory(memory: FrameReplayMemory, path: Path, step: int) -> bool:
    """Fill `memory` from a saved one; False when it was saved at another step than the checkpoint."""
    try:
        with np.load(path) as saved:
            if int(saved["step"]) != step:
                print(f"note: {path} was saved at step {int(saved['step']):,}, not {step:,}: not used")
                return False
            for name in memory.COLUMNS:
                if saved[name].shape != getattr(memory, name).shape:
                    raise InputError(f"the replay memory in {path} has shape {saved[name].shape} for {name}, "
                                     f"this run's has {getattr(memory, name).shape}")
                getattr(memory, name)[...] = saved[name]
    except InputError:
        raise
    except Exception as e:  # a truncated or foreign file
        raise InputError(f"cannot load the replay memory '{path}': {type(e).__name__}: {e}") from None
    return True


# flags that may differ from the saved ones when a run is resumed: they change neither what was learned
# nor what the rest of the run learns (a longer --total-timesteps keeps the saved ε schedule)
SAFE_TO_CHANGE_ON_RESUME = {"total_timesteps", "device", "num_threads", "capture_video", "save_model",
                            "eval_episodes", "eval_frequency", "checkpoint_frequency", "checkpoint_minutes",
                            "save_buffer", "run_root", "resume"}


def parse_args(argv: list[str] | None = None) -> Args:
    """The command line; with --resume, the checkpoint's saved arguments are the defaults, and only flags
    that are safe to change may differ from them."""
    args = tyro.cli(Args, args=argv)
    if not args.resume:
        return args
    if args.eval_checkpoint:
        raise InputError("--resume and --eval-checkpoint cannot be used together")
    checkpoint = load_checkpoint(args.resume)
    if "progress" not in checkpoint:
        raise InputError(f"--resume {args.resume} holds no training state (a model file can only be evaluated)")
    known = {f.name for f in fields(Args)}
    saved = Args(**{k: v for k, v in checkpoint["args"].items() if k in known})
    args = tyro.cli(Args, args=argv, default=Args(**{**asdict(saved), "resume": args.resume}))
    for name in sorted(known - SAFE_TO_CHANGE_ON_RESUME):
        if getattr(args, name) != getattr(saved, name):
            raise InputError(f"--{name.replace('_', '-')} cannot change when resuming (the run was saved with "
                             f"{getattr(saved, name)!r}); only {', '.join(sorted(SAFE_TO_CHANGE_ON_RESUME))} can")
    step = checkpoint["progress"]["global_step"]
    if args.total_timesteps <= step:
        raise InputError(f"the run in {args.resume} already reached step {step:,}: give a larger "
                         f"--total-timesteps to continue it")
    return args


def main(args: Args) -> None:
    check_args(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.num_threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if args.resume:  # the same run goes on in its own directory
        run_dir = Path(args.resume).resolve().parent
    else:
        run_dir = Path(args.run_root) / f"{args.env_id.replace('/', '-')}__{SCRIPT}__{args.seed}__{int(time.time())}"
    start = time.perf_counter()
    result = evaluate_checkpoint(args, run_dir, device) if args.eval_checkpoint else train(args, run_dir, device)
    eval_returns, wall_seconds = result.pop("eval_returns"), result.pop("train_seconds", None)
    summary = {"env_id": args.env_id, "seed": args.seed, **result,
               "wall_seconds": wall_seconds or time.perf_counter() - start,  # of all sessions of a resumed run
               # None when stopped before the first evaluation
               "eval_mean_return": float(eval_returns.mean()) if len(eval_returns) else None,
               "eval_std_return": float(eval_returns.std()) if len(eval_returns) else None,
               "eval_episodes": len(eval_returns)}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {json.dumps(summary)}")


if __name__ == "__main__":
    STOP.install()
    try:
        main(parse_args())
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(128 + STOP.signal if STOP else 0)
