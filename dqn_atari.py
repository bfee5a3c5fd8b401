"""DQN on any Atari game (Mnih et al., 2015, "Human-level control through deep RL"), in one file.

A convolutional Q-network reads the last four 84×84 grayscale frames and outputs one Q-value per action. It
regresses Q(s, a; θ) toward the TD target of a target network θ⁻ (a copy of θ refreshed every
`target_network_frequency` steps), on minibatches drawn uniformly from a replay memory D of past steps:

    y = Σ_{k<h} γ^k r_{t+k}  +  γ^h · (1 − done) · Q(s_{t+h}, a*; θ⁻)
    a* = argmax_a Q(s_{t+h}, a; θ)      (Double DQN, van Hasselt et al., 2016; plain DQN: argmax over θ⁻)
    L(θ) = E_D [ Huber(y − Q(s_t, a_t; θ)) ]

with h = n steps, or fewer where the game or a life ends inside the window: multi-step returns carry a
reward back n steps per update instead of one, and the Double DQN target keeps the max over noisy estimates
from inflating every Q-value. Rewards are clipped to [−1, 1] for learning only; the logged score is the
game's own. `done` is "no bootstrap": the game really ended (`terminated`) or, under the DeepMind protocol,
a life was lost. A time-limit truncation is not done: the target bootstraps from the true last observation.

Protocols. `<Game>NoFrameskip-v4` ids follow DeepMind's (Mnih et al., 2015): up to 30 no-ops at the start of
a game, a lost life ends the value for learning, FIRE pressed on reset where a game needs it (OpenAI
Baselines). `ALE/<Game>-v5` ids follow Machado et al. (2018): sticky actions (the previous action repeats
with probability 0.25) are the only randomness. Both repeat each action for 4 frames, max-pool the last two
and cap a game at 108,000 frames.

The defaults (each attributed in Args) learn a game in a few hundred thousand steps rather than Nature's
millions: a gradient step on every environment step from step 20,000, a 100,000-step memory, ε decaying over
the first 100,000 steps. Where the CPU has bfloat16 instructions (AVX512-BF16 or AMX) the update runs under
bf16 autocast, the Q-values still in float32.

    TF-Agents (DQN tutorial)               this file
    -------------------------------------  -------------------------------------------------------------
    suite_atari.load, AtariPreprocessing   make_envs(): AtariVectorEnv, the same preprocessing in C++
    QNetwork(conv_layer_params, fc)        QNetwork: conv 32×8×8/4, 64×4×4/2, 64×3×3/1, dense 512
    DqnAgent (loss, gamma, n_step_update,  td_loss() and the update in train()
      target_update_period)
    collect_policy / policy                select_actions() with ε from linear_schedule() / --eval-epsilon
    TFUniformReplayBuffer                  FrameReplayMemory (frames stored once)
    DynamicStepDriver                      the `while` loop in train()

Usage:
    python dqn_atari.py --env-id PongNoFrameskip-v4
    python dqn_atari.py --eval-checkpoint models/pong_dqn.pt --env-id PongNoFrameskip-v4 --capture-video
    python dqn_atari.py --resume runs/<run>/dqn_atari.pt --total-timesteps 1000000   # continue in place
"""

import collections
import copy
import itertools
import json
import math
import os
import signal
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
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
LOG_EVERY = 100  # gradient steps between two TensorBoard points of the losses
PROGRESS_EVERY = 10_000  # environment steps between two progress lines


@dataclass
class Args:
    env_id: str = "PongNoFrameskip-v4"
    """an ALE id: <Game>NoFrameskip-v4 (DeepMind protocol) or ALE/<Game>-v5 (sticky actions)"""
    learning_rate: float = 1e-4
    """Adam's learning rate (CleanRL's dqn_atari.py); Adam's ε is Rainbow's 1.5e-4"""
    buffer_size: int = 100_000
    """replay memory capacity in steps, one 84×84 frame each (Nature: 1,000,000)"""
    batch_size: int = 32
    """steps per gradient step (Nature)"""
    gamma: float = 0.99
    """discount factor γ (Nature)"""
    n_step: int = 3
    """length of the multi-step return in the TD target (Rainbow, Hessel et al., 2018; 1: Nature DQN)"""
    double_dqn: bool = True
    """pick the bootstrap action with the online network and value it with the target one"""
    learning_starts: int = 20_000
    """environment steps of collection before the first gradient step (Nature: 50,000)"""
    train_frequency: int = 1
    """one gradient step every this many environment steps (Nature: 4)"""
    target_network_frequency: int = 1_000
    """copy the online network into the target every this many environment steps (CleanRL; Nature: 10,000 updates)"""
    start_e: float = 1.0
    """initial exploration ε"""
    end_e: float = 0.01
    """final exploration ε (CleanRL; Nature: 0.1)"""
    exploration_steps: int = 100_000
    """steps over which ε decays linearly from start_e to end_e (Nature's "final exploration frame": 1,000,000)"""
    num_envs: int = 1
    """environments stepped at once, in C++ threads"""

    seed: int = 1
    """seed of torch, the environments, exploration and replay sampling"""
    total_timesteps: int = 300_000
    """environment steps (agent decisions, 4 frames each) to train for, over all envs"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the network runs; auto picks cuda when available"""
    num_threads: int = 2
    """torch CPU threads (one per core; the emulator's thread shares them)"""
    capture_video: bool = False
    """record colour mp4s to the run's videos/: the first game of every evaluation (step-N.mp4) and a random
    agent's (random-agent.mp4); with --eval-checkpoint, agent.mp4 and random-agent.mp4"""
    save_model: bool = True
    """write the checkpoint to the run directory (after every evaluation, at the end and when stopped)"""
    eval_checkpoint: str | None = None
    """path of a saved checkpoint or model to evaluate (at ε = --eval-epsilon, on --env-id) instead of training"""
    eval_episodes: int = 10
    """games per evaluation"""
    eval_frequency: int = 25_000
    """evaluate every this many environment steps (and at the end)"""
    eval_epsilon: float = 0.05
    """ε of the evaluation policy (Nature protocol)"""
    resume: str | None = None
    """continue the run saved in this checkpoint, in its run directory, with its saved arguments and replay"""
    run_root: str = "runs"
    """folder under which the run directory is created"""


# ---- Environment ---------------------------------------------------------------------------------
def atari_settings(env_id: str) -> dict:
    """The game and protocol of an ALE id: AtariVectorEnv's keyword arguments, plus `life_loss_ends_value`."""
    gym.register_envs(ale_py)
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as e:
        raise InputError(f"cannot make env '{env_id}': {e}") from None
    if not str(spec.entry_point).startswith("ale_py"):
        raise InputError(f"{SCRIPT} needs an Atari (ALE) env such as PongNoFrameskip-v4, got '{env_id}'")
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
    """num_envs games with the id's preprocessing; a game that ends is reset in the same step, its last
    observation in info["final_obs"]. With screen=True, the observation is the 210×160 colour screen instead."""
    settings = {k: v for k, v in atari_settings(env_id).items() if k != "life_loss_ends_value"}
    image = ({"img_height": SCREEN_SHAPE[0], "img_width": SCREEN_SHAPE[1], "grayscale": False, "stack_num": 1,
              "maxpool": False} if screen else
             {"img_height": FRAME_SHAPE[0], "img_width": FRAME_SHAPE[1], "grayscale": True, "stack_num": STACK,
              "maxpool": True})
    return AtariVectorEnv(**settings, **image, num_envs=num_envs, num_threads=min(num_envs, os.cpu_count()),
                          autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, frameskip=4,
                          reward_clipping=False, episodic_life=False)


# ---- Network -------------------------------------------------------------------------------------
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
        """Q-values of uint8 frame stacks, or of stacks already through `prepare`."""
        features = self.net[:-1](self.prepare(frames) if frames.dtype == torch.uint8 else frames)
        with torch.autocast(frames.device.type, enabled=False):  # Q-values in float32, also under bf16:
            return self.net[-1](features.float())  # the gaps between actions' values are small

    @staticmethod
    def prepare(frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (4× less data than float to move to the device) in [0, 1], in the convolutions' dtype (bf16
        under autocast) and channels-last (faster convolutions on CPU); converting before the layout change is
        cheaper than both at once."""
        device = frames.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
        return frames.to(dtype).div_(255.0).contiguous(memory_format=torch.channels_last)


def bf16_is_fast(device: torch.device) -> bool:
    """Whether the CPU has bfloat16 instructions (AVX512-BF16 or AMX), which make a bf16 update cheaper;
    elsewhere bf16 is emulated and slower, so the update stays in float32 (as it does on CUDA)."""
    try:
        cpu_flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return device.type == "cpu" and ("avx512_bf16" in cpu_flags or "amx_bf16" in cpu_flags)


# ---- Replay memory: every frame stored once ------------------------------------------------------
class FrameReplayMemory:
    """Uniform replay of Atari steps storing each 84×84 frame once.

    Each env writes its own stream (a ring of `capacity // num_envs` slots). Slot t holds the newest frame of
    the observation at step t, the action taken there, the clipped reward, `no_bootstrap` (the game ended or
    a life was lost), `game_over` (the game ended, by termination or time limit) and how many earlier frames
    of the same game precede it (0–3): the observation at t is frames t−3..t, black before its game began.
    When a game ends, its true last frame takes one extra slot (no action is taken from it).

    A sampled step t comes with its n-step return: the window t..t+h−1 has h = n steps, or fewer where a step
    in it ends the game or a life, and the bootstrap observation is the one at t+h. A step can be sampled
    once that observation is written; the oldest three slots of a stream cannot, their earlier frames gone.
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

    def _write_frame(self, env: int, frame: np.ndarray, history: int) -> None:
        slot = (self.newest[env] + 1) % self.slots
        self.frames[env, slot], self.history[env, slot] = frame, history
        self.sampleable[env, slot] = False  # until its action and next frame are known
        self.sampleable[env, (slot + np.arange(1, STACK)) % self.slots] = False  # now the oldest: frames gone
        self.newest[env] = slot
        self.filled[env] = min(self.filled[env] + 1, self.slots)

    def start_games(self, first_observations: np.ndarray, envs=None) -> None:
        """Store the first frame of a new game for each env in `envs` (all by default). A game still under way
        in a stream (a resumed run starts new games) ends there as if truncated."""
        for env in range(self.num_envs) if envs is None else envs:
            newest = self.newest[env]
            if self.filled[env] > 1 and self.history[env, newest] > 0:
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
        stacks = self.frames[env[:, None], (slot[:, None] + offsets) % self.slots]  # a new array: the caller's
        stacks[-offsets[None, :] > self.history[env, slot][:, None]] = 0
        return stacks

    def sample(self, batch_size: int, n_step: int, gamma: float) -> list[np.ndarray]:
        """[obs, actions, returns, next_obs, discounts] of batch_size uniformly drawn steps: returns =
        Σ_{k<h} γ^k r_{t+k}, next_obs = the observation at t+h, discounts = γ^h, or 0 when the window ended the
        game or a life. Draws among the written slots and redraws the few that cannot be sampled."""
        env = self.rng.integers(0, self.num_envs, batch_size)
        slot = self.rng.integers(0, self.filled[env])
        while True:
            window = (slot[:, None] + np.arange(n_step)) % self.slots
            ends = self.no_bootstrap[env[:, None], window] | self.game_over[env[:, None], window]
            counts = np.ones_like(ends)  # which steps of the window count: those before any end (the first always)
            counts[:, 1:] = ~np.logical_or.accumulate(ends[:, :-1], axis=1)
            horizon = counts.sum(axis=1)
            # the bootstrap frame at t+h must be written already: t+h at most the newest slot
            ok = self.sampleable[env, slot] & ((self.newest[env] - slot) % self.slots >= horizon)
            if ok.all():
                break
            env[~ok] = self.rng.integers(0, self.num_envs, int((~ok).sum()))
            slot[~ok] = self.rng.integers(0, self.filled[env[~ok]])
        returns = (self.rewards[env[:, None], window] * counts * gamma ** np.arange(n_step)).sum(axis=1)
        discounts = np.where(self.no_bootstrap[env, (slot + horizon - 1) % self.slots], 0.0, gamma ** horizon)
        return [self._stacks(env, slot), self.actions[env, slot].astype(np.int64), returns.astype(np.float32),
                self._stacks(env, (slot + horizon) % self.slots), discounts.astype(np.float32)]

    def __len__(self) -> int:
        return int(self.sampleable.sum())

    def state_dict(self) -> dict:
        """The memory for a checkpoint: the columns as tensors (a checkpoint then loads with torch.load's
        weights_only), the frames zlib-compressed in chunks (a screen is mostly background)."""
        flat = self.frames.reshape(-1, FRAME_SHAPE[0] * FRAME_SHAPE[1])
        return {**{name: torch.from_numpy(getattr(self, name)) for name in self.COLUMNS[1:]},
                "rng": self.rng.bit_generator.state,
                "frames": [zlib.compress(chunk, 1) for chunk in np.array_split(flat, len(flat) // 10_000 + 1)]}

    def load_state_dict(self, state: dict) -> None:
        for name in self.COLUMNS[1:]:
            getattr(self, name)[...] = state[name].numpy()
        self.rng.bit_generator.state = state["rng"]
        flat, row = self.frames.reshape(-1, FRAME_SHAPE[0] * FRAME_SHAPE[1]), 0
        for chunk in state["frames"]:
            frames = np.frombuffer(zlib.decompress(chunk), np.uint8).reshape(-1, flat.shape[1])
            flat[row:row + len(frames)], row = frames, row + len(frames)


# ---- Loss and policy -----------------------------------------------------------------------------
def td_loss(q_network: QNetwork, target_network: QNetwork, batch: list[torch.Tensor],
            double_dqn: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Huber(y − Q(s, a; θ)) with the n-step target y = R + discount · Q(s', a*; θ⁻), where a* is the target
    network's own argmax, or the online network's with double_dqn; also returns Q(s, a; θ) for logging."""
    obs, actions, returns, next_obs, discounts = batch
    obs, next_obs = q_network.prepare(obs), q_network.prepare(next_obs)  # once each, though next_obs is used twice
    with torch.no_grad():
        next_q = target_network(next_obs)
        best = (q_network(next_obs) if double_dqn else next_q).argmax(dim=1, keepdim=True)
        td_target = returns + discounts * next_q.gather(1, best).squeeze(1)
    q_taken = q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
    return F.huber_loss(q_taken, td_target), q_taken


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Linear interpolation from start (t = 0) to end (t >= duration)."""
    return start + (end - start) * min(t / duration, 1.0)


def select_actions(q_network: QNetwork, observations: np.ndarray, epsilon: float, rng: np.random.Generator,
                   n_actions: int, device: torch.device) -> np.ndarray:
    """ε-greedy actions for a batch of observations: the collect policy, or at --eval-epsilon the evaluation one."""
    explore = rng.random(len(observations)) < epsilon
    actions = rng.integers(0, n_actions, len(observations))
    if not explore.all():  # the network is only asked when some env acts greedily
        with torch.no_grad():
            greedy = q_network(torch.from_numpy(observations).to(device)).argmax(dim=1).cpu().numpy()
        actions = np.where(explore, actions, greedy)
    return actions


# ---- Training loop -------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Everything a checkpoint holds: what the run needs to continue exactly where it stopped."""
    args: Args
    q_network: QNetwork
    target_network: QNetwork
    optimizer: torch.optim.Optimizer
    memory: FrameReplayMemory
    rng: np.random.Generator  # exploration
    global_step: int = 0
    gradient_steps: int = 0
    eval_curve: list = field(default_factory=list)  # [step, mean score] of every evaluation
    train_seconds: float = 0.0  # up to the last checkpoint, over all sessions of the run


def train(args: Args, device: torch.device) -> tuple[Path, dict]:
    envs = make_envs(args.env_id, args.num_envs)
    n_actions = int(envs.single_action_space.n)
    life_loss_ends_value = atari_settings(args.env_id)["life_loss_ends_value"]
    q_network = QNetwork(n_actions).to(device, memory_format=torch.channels_last)
    state = TrainState(args, q_network, copy.deepcopy(q_network),
                       torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, eps=1.5e-4, fused=True),
                       FrameReplayMemory(args.buffer_size, args.num_envs, args.seed), np.random.default_rng(args.seed))
    if args.resume:
        restore(state, load_checkpoint(args.resume))
        print(f"resumed {args.resume} at step {state.global_step:,} ({len(state.memory):,} steps in replay)")
    bf16 = bf16_is_fast(device)
    if bf16:  # the target network runs only under autocast: its layers before the Q-values are held in bf16 rather
        state.target_network.net[:-1].to(torch.bfloat16)  # than cast at every step (the same numbers)
    run = Run(state, f"{args.env_id}, {n_actions} actions, device: {device}{', bf16 update' * bf16}")
    game_scores, game_lengths = np.zeros(args.num_envs), np.zeros(args.num_envs, np.int64)  # the games in play
    recent_scores = collections.deque(maxlen=10)

    # a resumed run starts new games, seeded apart from the first session's and from the evaluation's
    seed = args.seed + 2 * EVAL_SEED_OFFSET + state.global_step if args.resume else args.seed
    observations, info = envs.reset(seed=seed)
    state.memory.start_games(observations)
    lives = info["lives"].copy()
    while state.global_step < args.total_timesteps and not STOP:
        # act: ε-greedy; the emulators step in their own threads while we learn below
        epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_steps, state.global_step)
        actions = select_actions(q_network, observations, epsilon, state.rng, n_actions, device)
        envs.send(actions)
        state.global_step += args.num_envs
        step = state.global_step

        # learn: a gradient step every train_frequency environment steps, once the memory holds enough
        updates = step // args.train_frequency - (step - args.num_envs) // args.train_frequency
        for _ in range(updates if step > args.learning_starts else 0):
            batch = [torch.from_numpy(x).to(device) for x in state.memory.sample(args.batch_size, args.n_step,
                                                                                 args.gamma)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss, q_taken = td_loss(q_network, state.target_network, batch, args.double_dqn)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.optimizer.step()
            state.gradient_steps += 1
            if state.gradient_steps % LOG_EVERY == 0:
                run.log(step, {"losses/td_loss": loss.item(), "losses/q_values": q_taken.mean().item()})
        if step % args.target_network_frequency < args.num_envs:
            state.target_network.load_state_dict(q_network.state_dict())

        # store: rewards clipped for learning; a lost life ends the value, not the game (DeepMind protocol)
        next_observations, rewards, terminated, truncated, info = envs.recv()
        game_over = terminated | truncated
        life_lost = (info["lives"] < lives) & ~game_over
        no_bootstrap = terminated | (life_lost & life_loss_ends_value)
        state.memory.add(actions, np.sign(rewards), no_bootstrap, next_observations, info.get("final_obs"), game_over)
        lives = info["lives"].copy()
        observations = next_observations

        game_scores += rewards
        game_lengths += 1
        for env in np.flatnonzero(game_over):
            recent_scores.append(float(game_scores[env]))
            run.log(step, {"charts/episodic_return": game_scores[env], "charts/episodic_length": game_lengths[env]})
            game_scores[env], game_lengths[env] = 0.0, 0

        if step % PROGRESS_EVERY < args.num_envs:
            run.progress(step, recent_scores, epsilon)
        if step % args.eval_frequency < args.num_envs or step >= args.total_timesteps:
            video = run.dir / "videos" / f"step-{step:09d}.mp4" if args.capture_video else None
            scores = evaluate(q_network, args.env_id, args.eval_episodes, args.eval_epsilon,
                              args.seed + EVAL_SEED_OFFSET, device, video)
            if scores is not None:  # None: a stop was asked for during the evaluation
                run.evaluated(step, scores)  # to the curve, TensorBoard and the console; the checkpoint

    result = run.finish()  # saves a stopped run
    if args.capture_video and not STOP:
        evaluate(q_network, args.env_id, 1, 1.0, args.seed + EVAL_SEED_OFFSET, device,
                 run.dir / "videos" / "random-agent.mp4")
    envs.close()
    return run.dir, result


# ---- Evaluation and video ------------------------------------------------------------------------
def evaluate(q_network: QNetwork, env_id: str, episodes: int, epsilon: float, seed: int, device: torch.device,
             video_path: Path | None = None) -> np.ndarray | None:
    """Real scores of `episodes` whole games on separate envs (one per game, stepped together), or None if a
    stop was asked for meanwhile. With video_path, the first game is also written as a colour mp4: a screen
    env plays the same game in lockstep (same seed and actions) while the agent acts on its 84×84 stacks."""
    envs = make_envs(env_id, episodes)
    rng = np.random.default_rng(seed)
    observations, _ = envs.reset(seed=seed)
    if video_path is not None:  # colour screens 3× the ALE's; 15 decisions per second is real time
        from moviepy.video.io.ffmpeg_writer import FFMPEG_VideoWriter

        video_path.parent.mkdir(parents=True, exist_ok=True)
        video = FFMPEG_VideoWriter(str(video_path), (3 * SCREEN_SHAPE[1], 3 * SCREEN_SHAPE[0]), fps=15)
        screen_env = make_envs(env_id, 1, screen=True)
        video.write_frame(screen_env.reset(seed=seed)[0][0, -1].repeat(3, axis=0).repeat(3, axis=1))
    scores, finished = np.zeros(episodes), np.zeros(episodes, np.bool_)
    while not finished.all() and not STOP:
        actions = select_actions(q_network, observations, epsilon, rng, envs.single_action_space.n, device)
        observations, rewards, terminated, truncated, _ = envs.step(actions)
        if video_path is not None and not finished[0]:
            screen, _, screen_terminated, screen_truncated, screen_info = screen_env.step(actions[:1])
            screen = screen_info["final_obs"] if screen_terminated[0] or screen_truncated[0] else screen
            video.write_frame(screen[0, -1].repeat(3, axis=0).repeat(3, axis=1))
        scores += np.where(finished, 0.0, rewards)
        finished |= terminated | truncated
    envs.close()
    if video_path is not None:
        screen_env.close()
        video.close()
    return None if STOP else scores


def evaluate_checkpoint(args: Args, device: torch.device) -> tuple[Path, dict]:
    """--eval-checkpoint: games of a saved Q-network on --env-id at ε = --eval-epsilon, from a training checkpoint
    or from a model file (a `q_network` and a `global_step`)."""
    start = time.perf_counter()
    checkpoint = load_checkpoint(args.eval_checkpoint)
    probe = make_envs(args.env_id, 1)
    n_actions = int(probe.single_action_space.n)
    probe.close()
    q_network = QNetwork(n_actions).to(device, memory_format=torch.channels_last)
    try:
        q_network.load_state_dict(checkpoint["q_network"])
    except RuntimeError:  # another network's weights, or another game's number of actions
        raise InputError(f"'{args.eval_checkpoint}' holds no {SCRIPT} Q-network for the {n_actions} actions of "
                         f"'{args.env_id}'") from None
    run_dir = make_run_dir(args)
    print(f"run directory: {run_dir}  (evaluating {args.eval_checkpoint}, device: {device})", flush=True)
    videos = run_dir / "videos" if args.capture_video else None
    scores = evaluate(q_network, args.env_id, args.eval_episodes, args.eval_epsilon, args.seed + EVAL_SEED_OFFSET,
                      device, videos / "agent.mp4" if videos else None)
    scores = np.zeros(0) if scores is None else scores  # stopped by a signal
    if len(scores):
        print(f"eval of {args.eval_checkpoint} on {args.env_id}: {scores.mean():.2f} ± {scores.std():.2f} "
              f"over {len(scores)} episodes (ε = {args.eval_epsilon})")
    if videos and not STOP:
        evaluate(q_network, args.env_id, 1, 1.0, args.seed + EVAL_SEED_OFFSET, device, videos / "random-agent.mp4")
    step = checkpoint["global_step"]
    return run_dir, {"global_step": step, "gradient_steps": checkpoint.get("gradient_steps"), "sps": 0.0,
                     "wall_seconds": time.perf_counter() - start, "eval_returns": scores,
                     "eval_curve": [[step, float(scores.mean())]] if len(scores) else [],
                     "interrupted": bool(STOP), "eval_checkpoint": args.eval_checkpoint}


# ---- main() --------------------------------------------------------------------------------------
def main(args: Args) -> None:
    check_args(args)
    torch.manual_seed(args.seed)  # every other generator is a seeded np.random.Generator or env
    torch.set_num_threads(args.num_threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    run_dir, result = evaluate_checkpoint(args, device) if args.eval_checkpoint else train(args, device)
    eval_returns = result.pop("eval_returns")
    summary = {"env_id": args.env_id, "seed": args.seed, **result,
               # None when stopped before the first evaluation
               "eval_mean_return": float(eval_returns.mean()) if len(eval_returns) else None,
               "eval_std_return": float(eval_returns.std()) if len(eval_returns) else None,
               "eval_episodes": len(eval_returns)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {json.dumps(summary)}")


# ===================================================================================================
# Plumbing: input checks, stop signals, checkpoints and resume, run directory, progress line.
# Nothing below is reinforcement learning: a first reading can stop here.
# ===================================================================================================
class InputError(Exception):
    """Bad user input: reported as one `error:` line and exit status 2, without a traceback."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_args(args: Args) -> None:
    positive = ["learning_rate", "buffer_size", "batch_size", "n_step", "train_frequency", "target_network_frequency",
                "exploration_steps", "num_envs", "total_timesteps", "num_threads", "eval_episodes", "eval_frequency"]
    for name in positive:
        if not 0 < getattr(args, name) < math.inf:  # also refuses nan
            raise InputError(f"{flag(name)} must be positive and finite, got {getattr(args, name)}")
    if args.num_threads > os.cpu_count():
        raise InputError(f"--num-threads must be at most this machine's {os.cpu_count()} CPUs, got {args.num_threads}")
    for name in ["gamma", "start_e", "end_e", "eval_epsilon"]:
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise InputError(f"{flag(name)} must be in [0, 1], got {getattr(args, name)}")
    if not 0 <= args.seed < 2**30:  # room for what is added to it (evaluation's offset, envs, a resumed run's step)
        raise InputError(f"--seed must be in [0, {2**30:,}), got {args.seed}")
    # a step can be drawn once its n-step window is stored: each stream must hold one at the first update
    if args.learning_starts < max(args.batch_size, args.num_envs * (args.n_step + 1)):
        raise InputError(f"--learning-starts must be at least --batch-size ({args.batch_size}) and --num-envs × "
                         f"(--n-step + 1) ({args.num_envs * (args.n_step + 1)}), got {args.learning_starts}")
    # each stream needs room for a whole stack and an n-step window besides what is sampled
    if args.buffer_size < args.num_envs * (STACK + args.n_step + 1) or args.batch_size > args.buffer_size:
        raise InputError(f"--buffer-size {args.buffer_size} is too small for --num-envs {args.num_envs}, "
                         f"--n-step {args.n_step} and --batch-size {args.batch_size}")
    needed, available = replay_memory_bytes(args.buffer_size, args.num_envs), available_memory_bytes()
    if needed > available and not args.eval_checkpoint:
        raise InputError(f"--buffer-size {args.buffer_size:,} needs {needed / 1e9:.2f} GB of replay memory, "
                         f"but only {available / 1e9:.2f} GB is available")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA device is available")
    if args.resume and args.eval_checkpoint:
        raise InputError("--resume and --eval-checkpoint cannot be used together")
    atari_settings(args.env_id)  # a bad id is refused before anything is created


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


STOP: list[int] = []  # the stop signals received


def request_stop(signum, frame) -> None:
    """Ctrl-C (SIGINT) and SIGTERM ask training to stop after the step under way: the checkpoint and summary are
    saved and the process exits with 128 + the signal's number. A second signal stops the process at once."""
    STOP.append(signum)
    signal.signal(signum, signal.SIG_DFL)


def save_checkpoint(state: TrainState, run_dir: Path) -> None:
    """Every field of the state (networks, optimizer, replay memory, generators, counters) and torch's
    generator, in <run_dir>/<script>.pt, written atomically; nothing with --no-save-model."""
    if not state.args.save_model:
        return
    checkpoint = {"torch_rng": torch.get_rng_state()}
    for name in (f.name for f in fields(state)):
        value = getattr(state, name)
        if hasattr(value, "state_dict"):
            value = value.state_dict()
        elif isinstance(value, np.random.Generator):
            value = value.bit_generator.state
        elif isinstance(value, Args):
            value = asdict(value)
        checkpoint[name] = value
    write_atomically(run_dir / f"{SCRIPT}.pt", lambda f: torch.save(checkpoint, f))


def load_checkpoint(path: str) -> dict:
    """A checkpoint (or a model file: a `q_network` and a `global_step`) of this script, on the CPU."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # runs no code from the file
    except Exception as e:  # a missing, truncated or foreign file: torch.load raises many kinds
        raise InputError(f"cannot load checkpoint '{path}': {type(e).__name__}: {' '.join(str(e).split())}") from None
    if not isinstance(checkpoint, dict) or not {"q_network", "global_step"} <= checkpoint.keys():
        raise InputError(f"'{path}' is not a {SCRIPT} checkpoint")
    return checkpoint


def restore(state: TrainState, checkpoint: dict) -> None:
    """The inverse of save_checkpoint (the arguments excepted: parse_args took them from the checkpoint)."""
    for name in (f.name for f in fields(state) if f.name != "args"):
        value = getattr(state, name)
        if hasattr(value, "load_state_dict"):
            value.load_state_dict(checkpoint[name])
        elif isinstance(value, np.random.Generator):
            value.bit_generator.state = checkpoint[name]
        else:
            setattr(state, name, checkpoint[name])
    torch.set_rng_state(checkpoint["torch_rng"])


def write_atomically(path: Path, write) -> None:
    """write(file) into a temporary file beside path, then rename it over path: a kill during the write
    leaves the previous file whole."""
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


# flags that change nothing learnt: a resumed run may give them other values than the saved ones
SAFE_TO_CHANGE_ON_RESUME = {"total_timesteps", "device", "num_threads", "capture_video", "save_model",
                            "eval_episodes", "eval_epsilon", "eval_frequency", "run_root", "resume"}


def parse_args(argv: list[str] | None = None) -> Args:
    """The command line; with --resume, the checkpoint's saved arguments are the defaults, and only the
    flags above may differ from them."""
    args = tyro.cli(Args, args=argv)
    if not args.resume or args.eval_checkpoint:  # check_args refuses both together
        return args
    checkpoint = load_checkpoint(args.resume)
    if "optimizer" not in checkpoint:
        raise InputError(f"--resume {args.resume} holds no training state (a model file can only be evaluated)")
    try:
        saved = Args(**{**checkpoint["args"], "resume": args.resume})
    except (KeyError, TypeError):  # no arguments, or ones this script does not have: another script's checkpoint
        raise InputError(f"--resume {args.resume} holds another script's training state, not {SCRIPT}'s") from None
    args = tyro.cli(Args, args=argv, default=saved)
    safe = ", ".join(map(flag, sorted(SAFE_TO_CHANGE_ON_RESUME)))
    for name in sorted({f.name for f in fields(Args)} - SAFE_TO_CHANGE_ON_RESUME):
        if getattr(args, name) != getattr(saved, name):
            raise InputError(f"{flag(name)} cannot change when resuming (the run was saved with "
                             f"{getattr(saved, name)!r}); only {safe} can")
    if args.total_timesteps <= checkpoint["global_step"]:
        raise InputError(f"the run in {args.resume} already reached step {checkpoint['global_step']:,}: "
                         f"give a larger --total-timesteps to continue it")
    return args


def make_run_dir(args: Args) -> Path:
    """A new directory {run_root}/{env_id}__{script}__{seed}__{unix time}, made atomically: a run started in
    the same second as another gets -2 (-3, ...) appended, so two runs never share a directory."""
    name = f"{args.env_id.replace('/', '-')}__{SCRIPT}__{args.seed}__{int(time.time())}"
    for attempt in itertools.count(1):
        run_dir = Path(args.run_root) / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
        except OSError as e:  # --run-root is a file, or not writable
            raise InputError(f"cannot create a run directory under --run-root {args.run_root}: {e.strerror}") from None


class Run:
    """A training run's directory, TensorBoard writer, progress line and clock. A resumed run goes on in its own
    directory and TensorBoard run, replacing what was logged after its checkpoint; its arguments (a new
    --total-timesteps, say) are logged at the step it resumes at."""

    def __init__(self, state: TrainState, detail: str):
        args, self.state = state.args, state
        self.dir = Path(args.resume).parent if args.resume else make_run_dir(args)  # the input is checked: it begins
        print(f"run directory: {self.dir}  ({detail})", flush=True)
        self.writer = SummaryWriter(str(self.dir), purge_step=state.global_step + 1 if args.resume else None)
        table = "\n".join(f"|{name}|{value}|" for name, value in asdict(args).items())
        self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table, state.global_step)
        self.start_step, self.earlier_seconds, self.start = state.global_step, state.train_seconds, time.perf_counter()
        self.last_line, self.eval_returns = (state.global_step, self.start), np.zeros(0)

    def log(self, step: int, scalars: dict) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def progress(self, step: int, recent_returns, epsilon: float) -> None:
        """`step 120,000 of 300,000 | last 10 games 12.4 | eval 15.20 at 100,000 | ε 0.010 | 49 steps/s | ETA 1:01:13`.
        Steps/s (also to TensorBoard) and the ETA come from the steps since the previous line, not since the start,
        which the fast steps before learning starts would skew."""
        now, total, curve = time.perf_counter(), self.state.args.total_timesteps, self.state.eval_curve
        sps = (step - self.last_line[0]) / (now - self.last_line[1])
        self.last_line = (step, now)
        recent = f"{np.mean(recent_returns):6.1f}" if recent_returns else f"{'–':>6}"
        evaluated = f"{curve[-1][1]:7.2f} at {curve[-1][0]:,}" if curve else f"{'–':>6}"
        print(f"step {step:,} of {total:,} | last 10 episodes {recent} | eval {evaluated} | ε {epsilon:.3f} | "
              f"{sps:,.0f} steps/s | ETA {timedelta(seconds=int((total - step) / sps))}", flush=True)
        self.log(step, {"charts/SPS": sps, "charts/epsilon": epsilon})

    def evaluated(self, step: int, returns: np.ndarray) -> None:
        """An evaluation's returns to the curve, TensorBoard and the console; then the checkpoint."""
        self.eval_returns = returns
        self.state.eval_curve.append([step, float(returns.mean())])
        self.log(step, {"eval/mean_return": returns.mean()})
        print(f"step {step:,} | eval {returns.mean():.2f} ± {returns.std():.2f} over {len(returns)} episodes",
              flush=True)
        self.save()

    def save(self) -> None:
        self.state.train_seconds = self.earlier_seconds + time.perf_counter() - self.start
        save_checkpoint(self.state, self.dir)

    def finish(self) -> dict:
        """Save a stopped run, close TensorBoard, and return what summary.json reports of the training."""
        state, seconds = self.state, time.perf_counter() - self.start
        if STOP:
            print(f"\nstopped by {signal.Signals(STOP[0]).name} at step {state.global_step:,}: saving what was learned",
                  flush=True)
            self.save()
        self.writer.close()
        return {"global_step": state.global_step, "gradient_steps": state.gradient_steps,
                "sps": (state.global_step - self.start_step) / seconds, "wall_seconds": self.earlier_seconds + seconds,
                "eval_curve": state.eval_curve, "eval_returns": self.eval_returns, "interrupted": bool(STOP)}


if __name__ == "__main__":
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    try:
        main(parse_args())
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(128 + STOP[0] if STOP else 0)
