"""Soft Actor-Critic (Haarnoja et al., 2018) on the pybullet Minitaur quadruped, in one file.

SAC learns a stochastic policy π(a|s) that maximises reward plus entropy, E[Σ_t γ^t (r_t + α H(π(·|s_t)))],
with two critics Q_1, Q_2 (s, a; φ_i), slowly moving target critics φ̄_i and a temperature α. On a batch
(s, a, r, s', terminated) from the replay buffer, with ã ~ π(·|s) and ã' ~ π(·|s') freshly sampled:

    critics:  y = r + γ (1 − terminated) [ min_i Q_i(s', ã'; φ̄_i) − α log π(ã'|s') ]        (soft Bellman target)
              L_Q(φ) = Σ_i E[ (Q_i(s, a; φ_i) − y)² ]
    actor:    L_π(θ) = E[ α log π(ã|s) − min_i Q_i(s, ã; φ_i) ],  ã = tanh(μ_θ(s) + σ_θ(s) ⊙ ε), ε ~ N(0, I)
    α:        L(log α) = E[ −log α · (log π(ã|s) + H̄) ],  target entropy H̄ = −|A|
    targets:  φ̄_i ← τ φ_i + (1 − τ) φ̄_i   (after every update)

The actor is a Gaussian squashed by tanh; `ã` is a differentiable function of θ (the reparameterisation
trick), so the actor follows the critics' gradient. The squashing changes the density:
log π(ã|s) = log N(u; μ, σ) − Σ_j log(1 − tanh²(u_j)) for u = μ + σ ⊙ ε (plus the log of the action
scale when the bounds are not ±1). Taking the minimum of two critics curbs the overestimation that a
maximising actor would otherwise exploit. The temperature is learnt as log α (the SAC paper writes the
loss in α): α stays positive, and a step changes it by a factor rather than an amount, which suits a
quantity that must travel across orders of magnitude. The gradient of L is −(log π + H̄): α rises when
the policy's entropy −log π falls below H̄ and falls when it is above, so exploration is tuned rather
than hand-set. Only `terminated` (the robot fell) stops the bootstrap; a time limit (`truncated`)
bootstraps from the true last observation.

Hyperparameters are the TF-Agents SAC tutorial's and the SAC paper's, except the learning rate, γ and τ, from
rl-baselines3-zoo's SAC for pybullet's locomotion envs; Args names the source of each. Two choices are ours:
  - α starts at 0.01 rather than 1: the Minitaur's rewards per step are tiny, and at α = 1 the entropy bonus
    would outweigh them until tuning had lowered α. Tuning still raises α where an env needs it.
  - Observations are normalised by their running mean and standard deviation (clipped to ±10; frozen for
    evaluation and saved with the networks). Their bounds are no scale: the motor velocities are bounded by
    ±168 but stay far inside.

The Minitaur (appendix at the end): `import pybullet_envs` fails on a current stack, so this file registers a
gymnasium `MinitaurBulletEnv-v0` of its own: `gymnasium.make("sac_minitaur:MinitaurBulletEnv-v0")`.

    TF-Agents (SAC tutorial)                     this file
    suite_pybullet.load('MinitaurBulletEnv-v0')  MinitaurBulletEnv (appendix), make_env(), make_vector_env()
    CriticNetwork / ActorDistributionNetwork     TwinCritic (Q_1, Q_2) / Actor (a tanh-squashed Gaussian)
    SacAgent (target_update_tau, gamma, alpha)   SacAgent: the networks, log α, update() on a batch
    agent.collect_policy / agent.policy          Actor.sample() / Actor.greedy() (the squashed mean)
    RandomPyPolicy, DynamicStepDriver            random actions before learning_starts, the loop in train()
    TFUniformReplayBuffer, compute_avg_return    ReplayBuffer, evaluate()
    Checkpointer                                 TrainState, save_checkpoint(), restore()

Usage:
    python sac_minitaur.py                                         # Minitaur, 100k steps
    python sac_minitaur.py --env-id Pendulum-v1 --total-timesteps 5000 --learning-starts 1000
    python sac_minitaur.py --num-envs 2 --total-timesteps 1000000
    python sac_minitaur.py --eval-checkpoint models/minitaur_sac.pt --capture-video --video-length 500
    python sac_minitaur.py --resume runs/.../sac_minitaur.pt --total-timesteps 1000000
"""

import collections
import contextlib
import importlib
import itertools
import json
import math
import multiprocessing
import os
import signal
import sys
import time
import types
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter

SCRIPT = Path(__file__).stem
EVAL_SEED_OFFSET = 10_000  # evaluation envs get seed + this: never the training env's episodes
LOG_EVERY = 100  # gradient steps between two TensorBoard points of the losses
PROGRESS_EVERY = 2_500  # environment steps between two progress lines


@dataclass
class Args:
    env_id: str = "MinitaurBulletEnv-v0"
    """gymnasium id of an env with a Box action space and a flat Box observation"""
    learning_rate: float = 7.3e-4
    """Adam learning rate of the actor, the critics and α (rl-baselines3-zoo, pybullet envs; SAC paper: 3e-4)"""
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions (SAC paper; TF-Agents tutorial: 10,000)"""
    batch_size: int = 256
    """transitions per gradient step (SAC paper, TF-Agents)"""
    gamma: float = 0.98
    """discount factor γ (rl-baselines3-zoo, pybullet envs; SAC paper: 0.99)"""
    tau: float = 0.02
    """target critic update rate: φ̄ ← τφ + (1 − τ)φ̄ after every update (rl-baselines3-zoo; paper: 0.005)"""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """widths of the hidden layers of the actor and of each critic (SAC paper, TF-Agents)"""
    learning_starts: int = 10_000
    """environment steps of uniform random actions before the first update (TF-Agents)"""
    initial_alpha: float = 0.01
    """initial temperature α, tuned toward the target entropy −|A| (SAC paper) from there (TF-Agents: 1; see above)"""
    num_envs: int = 1
    """environments stepped in parallel worker processes (their physics overlaps with the updates)"""

    seed: int = 1
    """seed of torch, the environments, exploration and replay sampling"""
    total_timesteps: int = 100_000
    """environment steps to train for, over all envs"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the networks run; auto picks cuda when available"""
    num_threads: int = 1
    """torch CPU threads; one is fastest for networks this small"""
    capture_video: bool = False
    """record mp4s to the run's videos/: the first episode of every evaluation (step-N.mp4) and a random agent's
    (random-agent.mp4); with --eval-checkpoint, agent.mp4 and random-agent.mp4"""
    video_length: int = 0
    """frames per video, 0 for the whole episode (rendering the Minitaur is slow)"""
    save_model: bool = True
    """write the checkpoint to the run directory (after every evaluation, at the end and when stopped)"""
    eval_checkpoint: str | None = None
    """path of a saved checkpoint or model to evaluate (greedily, on --env-id) instead of training"""
    eval_episodes: int = 10
    """number of greedy episodes per evaluation"""
    eval_frequency: int = 10_000
    """evaluate the greedy policy every this many environment steps (and at the end)"""
    resume: str | None = None
    """continue the run saved in this checkpoint, in its run directory, with its saved arguments and replay"""
    run_root: str = "runs"
    """folder under which the run directory is created"""


# ---- Environment ---------------------------------------------------------------------------------
def make_env(env_id: str, video: Path | None = None, video_length: int = 0) -> gym.Env:
    """One env; with `video`, its first episode is recorded there (as <video stem>-episode-0.mp4, which
    record_video() renames). Callers seed it with reset(seed=...)."""
    try:
        env = gym.make(env_id, render_mode="rgb_array" if video else None)
    except (gym.error.Error, ImportError, AttributeError, TypeError) as e:
        if getattr(e, "name", None) in ("pybullet", "pybullet_data", "pybullet_utils"):
            raise InputError(f"'{env_id}' needs pybullet: `pip install pybullet==3.2.7` (on Python 3.12 and later "
                             f"it builds from source in a few minutes, with a C++ compiler and the Python headers)"
                             ) from None
        raise InputError(f"cannot make env '{env_id}': {e}") from None
    if video is None:
        return env
    return gym.wrappers.RecordVideo(env, str(video.parent), name_prefix=video.stem, video_length=video_length,
                                    episode_trigger=lambda episode: episode == 0, disable_logger=True)


def probe_env(args: Args) -> tuple[int, gym.spaces.Box]:
    """Make the env once in this process, to report a bad id or unsuitable spaces in one line: SAC needs a
    bounded continuous action space and a flat vector observation."""
    env = make_env(args.env_id)
    env.close()
    action_space, obs_space = env.action_space, env.observation_space
    if not (isinstance(action_space, gym.spaces.Box) and np.isfinite(action_space.low).all()
            and np.isfinite(action_space.high).all()):
        raise InputError(f"{SCRIPT} needs a continuous (Box) action space with finite bounds, but '{args.env_id}' "
                         f"has {action_space}")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise InputError(f"{SCRIPT} needs a flat Box observation, but '{args.env_id}' has {obs_space}")
    if args.capture_video and "rgb_array" not in env.metadata.get("render_modes", []):
        raise InputError(f"--capture-video needs rgb_array rendering, which '{args.env_id}' does not offer")
    return obs_space.shape[0], action_space


def make_vector_env(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    """num_envs copies in worker processes. A finished episode is reset within the same step and its true
    last observation is in info["final_obs"]."""
    def worker_env() -> gym.Env:
        if multiprocessing.parent_process() is not None:  # in a worker, not in this process:
            for signum in (signal.SIGINT, signal.SIGTERM):  # stopping is ours to handle (we save, then close
                signal.signal(signum, signal.SIG_IGN)        # them), also when the signal reaches the group
        return make_env(env_id)

    return gym.vector.AsyncVectorEnv([worker_env] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


# ---- Network -------------------------------------------------------------------------------------
class ObservationNormalizer(nn.Module):
    """(obs − mean) / std, clipped to ±10, with the mean and variance of all observations collected so far
    (merged batch by batch, Chan et al.'s parallel formula). The statistics change only in update(), which
    only the training loop calls, and are saved with the networks: evaluation uses them frozen."""

    def __init__(self, obs_dim: int):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(obs_dim, dtype=torch.float64))

    def update(self, obs: np.ndarray) -> None:
        batch = torch.as_tensor(obs, dtype=torch.float64, device=self.mean.device)
        n, total = len(batch), self.count + len(batch)
        delta = batch.mean(0) - self.mean
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + batch.var(0, unbiased=False) * n + delta ** 2 * self.count * n / total)
                       / total)
        self.count.copy_(total)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs - self.mean.float()) / (self.var.float() + 1e-8).sqrt()).clamp(-10.0, 10.0)


def mlp(sizes: list[int]) -> nn.Sequential:
    layers = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])  # no activation after the output


class Actor(nn.Module):
    """A tanh-squashed Gaussian policy with state-dependent mean and standard deviation."""

    LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # keeps σ in a numerically safe range (as SB3 and TF-Agents clip)

    def __init__(self, obs_dim: int, action_space: gym.spaces.Box, hidden_sizes: tuple[int, ...],
                 normalizer: ObservationNormalizer):
        super().__init__()
        self.normalizer = normalizer
        self.net = mlp([obs_dim, *hidden_sizes, 2 * action_space.shape[0]])
        # tanh's (−1, 1) is mapped onto the env's bounds
        self.register_buffer("scale", torch.as_tensor((action_space.high - action_space.low) / 2, dtype=torch.float32))
        self.register_buffer("center", torch.as_tensor((action_space.high + action_space.low) / 2, dtype=torch.float32))

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action of the collect policy and its log-probability log π(a|s)."""
        mean, log_std = self.net(self.normalizer(obs)).chunk(2, dim=-1)
        log_std = log_std.clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)
        u = mean + log_std.exp() * torch.randn_like(mean)
        # log N(u; μ, σ) − Σ log(scale · (1 − tanh²u)), with log(1 − tanh²u) = 2(log 2 − u − softplus(−2u))
        gaussian_log_prob = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        squash_correction = (2 * (math.log(2) - u - F.softplus(-2 * u)) + self.scale.log()).sum(-1)
        return self.center + self.scale * torch.tanh(u), gaussian_log_prob - squash_correction

    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        """The evaluation policy (TF-Agents' GreedyPolicy): the squashed mean action."""
        mean, _ = self.net(self.normalizer(obs)).chunk(2, dim=-1)
        return self.center + self.scale * torch.tanh(mean)


class TwinCritic(nn.Module):
    """Two independent Q-networks Q_i(s, a) = MLP_i([s, a]), with their own weights and initialisation."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: tuple[int, ...],
                 normalizer: ObservationNormalizer):
        super().__init__()
        self.normalizer = normalizer
        self.q1, self.q2 = (mlp([obs_dim + action_dim, *hidden_sizes, 1]) for _ in range(2))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q-values of both critics, shape (2, batch)."""
        obs_action = torch.cat([self.normalizer(obs), action], dim=-1)
        return torch.stack([self.q1(obs_action).squeeze(-1), self.q2(obs_action).squeeze(-1)])


# ---- Replay buffer -------------------------------------------------------------------------------
class ReplayBuffer:
    """Fixed-capacity float32 ring buffer of (obs, action, reward, next_obs, terminated), sampled uniformly.
    `next_obs` is the true next observation, also when an episode was truncated, and `terminated` alone
    stops the bootstrap."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, seed: int, device: torch.device):
        self.capacity, self.device = capacity, device
        self.columns = {"obs": np.zeros((capacity, obs_dim), np.float32),
                        "actions": np.zeros((capacity, action_dim), np.float32),
                        "rewards": np.zeros(capacity, np.float32),
                        "next_obs": np.zeros((capacity, obs_dim), np.float32),
                        "terminated": np.zeros(capacity, np.float32)}
        self.position, self.size = 0, 0
        self.rng = np.random.default_rng(seed)

    def add(self, **transitions: np.ndarray) -> None:
        """Append a batch of transitions (one per env), each keyword a column."""
        n = len(transitions["rewards"])
        index = (self.position + np.arange(n)) % self.capacity
        for name, values in transitions.items():
            self.columns[name][index] = values
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> list[torch.Tensor]:
        """(obs, actions, rewards, next_obs, terminated) of batch_size transitions, as tensors on the device:
        a fresh copy each call, which the caller owns."""
        index = self.rng.integers(0, self.size, batch_size)
        return [torch.from_numpy(column[index]).to(self.device) for column in self.columns.values()]

    def state_dict(self) -> dict:
        """The stored transitions (as tensors: a checkpoint then loads with torch.load's weights_only)."""
        return {"position": self.position, "size": self.size, "rng": self.rng.bit_generator.state,
                **{name: torch.from_numpy(column[:self.size]) for name, column in self.columns.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.position, self.size = state["position"], state["size"]
        self.rng.bit_generator.state = state["rng"]
        for name, column in self.columns.items():
            column[:self.size] = state[name].numpy()


# ---- Loss / update -------------------------------------------------------------------------------
def soft_td_target(rewards: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, next_log_prob: torch.Tensor,
                   alpha: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + γ (1 − terminated) [min_i Q̄_i(s', ã') − α log π(ã'|s')]; next_q holds both target critics'
    values at (s', ã'), shape (2, batch)."""
    return rewards + gamma * (1.0 - terminated) * (next_q.min(dim=0).values - alpha * next_log_prob)


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """−log α · (log π + H̄), averaged: its gradient step raises α while the policy's entropy −log π is below
    H̄ and lowers it while it is above."""
    return -(log_alpha * (log_prob + target_entropy)).mean()


class SacAgent(nn.Module):
    """TF-Agents' SacAgent: the actor, the twin critics and their targets, the temperature, their optimizer,
    and update(), one gradient step of each on a batch followed by the target critics' update."""

    def __init__(self, obs_dim: int, action_space: gym.spaces.Box, args: Args):
        super().__init__()
        action_dim = action_space.shape[0]
        self.normalizer = ObservationNormalizer(obs_dim)
        self.actor = Actor(obs_dim, action_space, args.hidden_sizes, self.normalizer)
        self.critic = TwinCritic(obs_dim, action_dim, args.hidden_sizes, self.normalizer)
        self.target_critic = TwinCritic(obs_dim, action_dim, args.hidden_sizes, self.normalizer)
        self.target_critic.load_state_dict(self.critic.state_dict())
        self.target_critic.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(args.initial_alpha)))
        self.target_entropy = -float(action_dim)
        self.gamma, self.tau = args.gamma, args.tau
        # One Adam for the three losses: a step moves only the parameters its loss gave gradients to (the others'
        # are None), and Adam's moments and step count are per parameter: three optimizers in one.
        self.optimizer = torch.optim.Adam([*self.actor.parameters(), *self.critic.parameters(), self.log_alpha],
                                          lr=args.learning_rate, fused=True)

    def update(self, obs, actions, rewards, next_obs, terminated) -> dict[str, torch.Tensor]:
        alpha = self.log_alpha.exp().detach()
        # critics: regress both onto the soft Bellman target of the target critics
        with torch.no_grad():
            next_actions, next_log_prob = self.actor.sample(next_obs)
            target = soft_td_target(rewards, terminated, self.target_critic(next_obs, next_actions), next_log_prob,
                                    alpha, self.gamma)
        q_values = self.critic(obs, actions)
        critic_loss = F.mse_loss(q_values, target.expand_as(q_values), reduction="none").mean(1).sum()
        self._step(critic_loss)
        # actor: maximise min Q − α log π through the reparameterised action (critics frozen meanwhile)
        self.critic.requires_grad_(False)
        new_actions, log_prob = self.actor.sample(obs)
        actor_loss = (alpha * log_prob - self.critic(obs, new_actions).min(dim=0).values).mean()
        self._step(actor_loss)
        self.critic.requires_grad_(True)
        self._step(temperature_loss(self.log_alpha, log_prob.detach(), self.target_entropy))
        with torch.no_grad():  # φ̄ ← τφ + (1 − τ)φ̄
            for target_param, param in zip(self.target_critic.parameters(), self.critic.parameters(), strict=True):
                target_param.lerp_(param, self.tau)
        return {"critic_loss": critic_loss, "actor_loss": actor_loss, "q_values": q_values.mean(), "alpha": alpha,
                "entropy": -log_prob.mean()}

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


# ---- Training loop -------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Everything a checkpoint holds: what the run needs to continue exactly where it stopped."""
    args: Args
    agent: SacAgent  # actor, twin critics and their targets, log α, observation statistics
    optimizer: torch.optim.Optimizer  # the agent's Adam
    buffer: ReplayBuffer
    rng: np.random.Generator  # the uniform random actions before learning starts
    global_step: int = 0
    gradient_steps: int = 0
    eval_curve: list = field(default_factory=list)  # [[step, mean eval return], ...]
    train_seconds: float = 0.0  # over all sessions, up to the last checkpoint


def train(args: Args, device: torch.device) -> tuple[Path, dict]:
    """Collect with the stochastic policy and learn until args.total_timesteps; evaluate and save on the way."""
    obs_dim, action_space = probe_env(args)
    agent = SacAgent(obs_dim, action_space, args).to(device)
    try:
        buffer = ReplayBuffer(args.buffer_size, obs_dim, action_space.shape[0], args.seed, device)
    except (MemoryError, ValueError) as e:  # ValueError: beyond what numpy can address
        raise InputError(f"--buffer-size {args.buffer_size:,} does not fit in memory: {e}") from None
    state = TrainState(args, agent, agent.optimizer, buffer, rng=np.random.default_rng(args.seed))
    if args.resume:
        restore(state, load_checkpoint(args.resume))
        print(f"resumed {args.resume} at step {state.global_step:,} ({buffer.size:,} transitions in replay)")
    run = Run(state, f"device: {device}")  # the run directory, TensorBoard, the progress line
    envs, num_envs = make_vector_env(args.env_id, args.num_envs), args.num_envs
    episode_returns, episode_lengths = np.zeros(num_envs), np.zeros(num_envs, np.int64)
    recent_returns = collections.deque(maxlen=10)
    # a resumed run starts new episodes, seeded apart from the first session's and from the evaluation's
    seed = args.seed + 2 * EVAL_SEED_OFFSET + state.global_step if args.resume else args.seed
    obs, _ = envs.reset(seed=seed)

    while state.global_step < args.total_timesteps and not STOP:
        # Act: uniform random actions until learning starts, then the stochastic policy (collect_policy).
        agent.normalizer.update(obs)
        if state.global_step < args.learning_starts:
            actions = state.rng.uniform(action_space.low, action_space.high, (num_envs, action_space.shape[0]))
            actions = actions.astype(np.float32)
        else:
            with torch.no_grad():
                actions = agent.actor.sample(torch.as_tensor(obs, dtype=torch.float32, device=device))[0].cpu().numpy()
        # Step: the workers simulate while this process learns below; the step's results are collected after.
        envs.step_async(actions)
        state.global_step += num_envs
        step = state.global_step

        # Learn: one gradient step per environment step; update() ends with the target critics' update.
        if step > args.learning_starts:
            for _ in range(num_envs):
                losses = agent.update(*buffer.sample(args.batch_size))
                state.gradient_steps += 1
                if state.gradient_steps % LOG_EVERY == 0:
                    run.log(step, {f"losses/{name}": value.item() for name, value in losses.items()})

        # Store: where an episode ended, next_obs starts the next one; its true last observation is in info.
        next_obs, rewards, terminated, truncated, info = envs.step_wait()
        real_next_obs = next_obs.copy()
        episode_returns += rewards
        episode_lengths += 1
        for env in np.flatnonzero(terminated | truncated):
            real_next_obs[env] = info["final_obs"][env]
            recent_returns.append(float(episode_returns[env]))
            run.log(step, {"charts/episodic_return": episode_returns[env],
                           "charts/episodic_length": episode_lengths[env]})
            episode_returns[env], episode_lengths[env] = 0.0, 0
        buffer.add(obs=obs, actions=actions, rewards=rewards, next_obs=real_next_obs, terminated=terminated)
        obs = next_obs

        if step % PROGRESS_EVERY < num_envs:
            run.progress(step, recent_returns)
        if step % args.eval_frequency < num_envs or step >= args.total_timesteps:
            returns = evaluate(agent.actor, args.env_id, args.eval_episodes, args.seed + EVAL_SEED_OFFSET, device)
            if returns is not None:  # None: a stop was asked for during the evaluation
                run.evaluated(step, returns)  # to the curve, TensorBoard and the console; the checkpoint
                if args.capture_video:
                    record_video(agent.actor, args.env_id, args.seed + EVAL_SEED_OFFSET,
                                 run.dir / "videos" / f"step-{step:09d}.mp4", args.video_length, device)

    result = run.finish()  # saves a stopped run
    if args.capture_video and not STOP:
        record_video(None, args.env_id, args.seed + EVAL_SEED_OFFSET, run.dir / "videos" / "random-agent.mp4",
                     args.video_length, device)
    envs.close()
    return run.dir, result


# ---- Evaluation and video ------------------------------------------------------------------------
def greedy_actions(actor: Actor, obs: np.ndarray, device: torch.device) -> np.ndarray:
    with torch.no_grad():
        return actor.greedy(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()


def evaluate(actor: Actor, env_id: str, episodes: int, seed: int, device: torch.device) -> np.ndarray | None:
    """Undiscounted returns of `episodes` greedy episodes, one per env, stepped together in worker
    processes, or None if a stop was asked for meanwhile. The same seeds every time, so that evaluations
    during training are comparable."""
    envs = make_vector_env(env_id, episodes)
    obs, _ = envs.reset(seed=seed)
    returns, finished = np.zeros(episodes), np.zeros(episodes, np.bool_)
    while not finished.all() and not STOP:
        obs, rewards, terminated, truncated, _ = envs.step(greedy_actions(actor, obs, device))
        returns += np.where(finished, 0.0, rewards)
        finished |= terminated | truncated
    envs.close()
    return None if STOP else returns


def record_video(actor: Actor | None, env_id: str, seed: int, path: Path, video_length: int,
                 device: torch.device) -> None:
    """An mp4 at `path` (rendered headless) of the first episode of evaluate(), or of its first video_length
    frames: the greedy actor's, or a random agent's when actor is None."""
    env = make_env(env_id, video=path, video_length=video_length)
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    done = False
    while not done and not STOP:
        action = env.action_space.sample() if actor is None else greedy_actions(actor, obs[None], device)[0]
        obs, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
    env.close()
    (path.parent / f"{path.stem}-episode-0.mp4").replace(path)


def evaluate_checkpoint(args: Args, device: torch.device) -> tuple[Path, dict]:
    """--eval-checkpoint: greedy episodes of a saved actor on --env-id, from a training checkpoint or from a
    model file (the actor's weights with its observation statistics, hidden_sizes and env_id at its top)."""
    start = time.perf_counter()
    checkpoint = load_checkpoint(args.eval_checkpoint)
    obs_dim, action_space = probe_env(args)
    saved = checkpoint.get("args", checkpoint)
    weights = checkpoint["actor"] if "actor" in checkpoint else {
        name[len("actor."):]: value for name, value in checkpoint["agent"].items() if name.startswith("actor.")}
    try:
        actor = Actor(obs_dim, action_space, tuple(saved["hidden_sizes"]), ObservationNormalizer(obs_dim))
        actor.load_state_dict(weights)
    except (KeyError, TypeError):  # a file that names no layer sizes
        raise InputError(f"'{args.eval_checkpoint}' holds no {SCRIPT} actor (no hidden_sizes)") from None
    except RuntimeError:  # the shapes of other spaces
        raise InputError(f"'{args.eval_checkpoint}' was trained on '{saved.get('env_id', 'another env')}', whose "
                         f"spaces differ from '{args.env_id}'") from None
    run_dir = make_run_dir(args)
    print(f"run directory: {run_dir}  (evaluating {args.eval_checkpoint}, device: {device})", flush=True)
    returns = evaluate(actor.to(device), args.env_id, args.eval_episodes, args.seed + EVAL_SEED_OFFSET, device)
    returns = np.zeros(0) if returns is None else returns  # stopped by a signal
    if len(returns):
        print(f"eval of {args.eval_checkpoint} on {args.env_id}: {returns.mean():.2f} ± {returns.std():.2f} "
              f"over {len(returns)} episodes (greedy)")
    if args.capture_video:
        for name, policy in [("agent", actor), ("random-agent", None)]:
            if not STOP:  # a stop ends the video under way and starts no other
                record_video(policy, args.env_id, args.seed + EVAL_SEED_OFFSET, run_dir / "videos" / f"{name}.mp4",
                             args.video_length, device)
    step = checkpoint["global_step"]
    return run_dir, {"global_step": step, "gradient_steps": checkpoint.get("gradient_steps"), "sps": 0.0,
                     "wall_seconds": time.perf_counter() - start, "eval_returns": returns,
                     "eval_curve": [[step, float(returns.mean())]] if len(returns) else [],
                     "interrupted": bool(STOP), "eval_checkpoint": args.eval_checkpoint}


# ---- main() --------------------------------------------------------------------------------------
def main(args: Args) -> None:
    check_args(args)
    torch.manual_seed(args.seed)
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
    positive = ["total_timesteps", "num_envs", "eval_episodes", "eval_frequency", "num_threads", "learning_rate",
                "buffer_size", "batch_size", "initial_alpha"]
    for name in positive:
        if not 0 < getattr(args, name) < math.inf:  # also refuses nan
            raise InputError(f"{flag(name)} must be positive and finite, got {getattr(args, name)}")
    if args.num_threads > os.cpu_count():
        raise InputError(f"--num-threads must be at most this machine's {os.cpu_count()} CPUs, got {args.num_threads}")
    if args.video_length < 0:
        raise InputError(f"--video-length must be >= 0, got {args.video_length}")
    if args.batch_size > args.buffer_size:
        raise InputError(f"--batch-size {args.batch_size} is larger than --buffer-size {args.buffer_size}")
    # the first update comes before its step is stored: the buffer must not be empty then
    if args.learning_starts < max(args.batch_size, args.num_envs):
        raise InputError(f"--learning-starts must be at least --batch-size ({args.batch_size}) and --num-envs "
                         f"({args.num_envs}), got {args.learning_starts}")
    if not 0 <= args.seed < 2**30:  # room for what is added to it (evaluation's offset, envs, a resumed run's step)
        raise InputError(f"--seed must be in [0, {2**30:,}), got {args.seed}")
    for name in ["gamma", "tau"]:
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise InputError(f"{flag(name)} must be in [0, 1], got {getattr(args, name)}")
    if not args.hidden_sizes or min(args.hidden_sizes) <= 0:
        raise InputError(f"--hidden-sizes must be positive widths, got {args.hidden_sizes}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA device is available")
    if args.resume and args.eval_checkpoint:
        raise InputError("--resume and --eval-checkpoint cannot be used together")


STOP: list[int] = []  # the stop signals received


def request_stop(signum, frame) -> None:
    """Ctrl-C (SIGINT) and SIGTERM ask training to stop after the step under way: the checkpoint and summary are
    saved and the process exits with 128 + the signal's number. A second signal stops the process at once."""
    STOP.append(signum)
    signal.signal(signum, signal.SIG_DFL)


def save_checkpoint(state: TrainState, run_dir: Path) -> None:
    """Every field of the state (networks, optimizer, replay buffer, generators, counters) and torch's
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
    """A checkpoint (or a model file: an `actor` and a `global_step`) of this script, on the CPU."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # runs no code from the file
    except Exception as e:  # a missing, truncated or foreign file: torch.load raises many kinds
        raise InputError(f"cannot load checkpoint '{path}': {type(e).__name__}: {' '.join(str(e).split())}") from None
    if not isinstance(checkpoint, dict) or not ({"agent", "actor"} & checkpoint.keys() and "global_step" in checkpoint):
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
SAFE_TO_CHANGE_ON_RESUME = {"total_timesteps", "device", "num_threads", "capture_video", "video_length", "save_model",
                            "eval_episodes", "eval_frequency", "run_root", "resume"}


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

    def progress(self, step: int, recent_returns) -> None:
        """`step 120,000 of 300,000 | last 10 episodes 15.3 | eval 17.20 at 100,000 | 58 steps/s | ETA 0:51:40`.
        Steps/s (also to TensorBoard) and the ETA come from the steps since the previous line, not since the start,
        which the fast steps before learning starts would skew."""
        now, total, curve = time.perf_counter(), self.state.args.total_timesteps, self.state.eval_curve
        sps = (step - self.last_line[0]) / (now - self.last_line[1])
        self.last_line = (step, now)
        recent = f"{np.mean(recent_returns):6.1f}" if recent_returns else f"{'–':>6}"
        evaluated = f"{curve[-1][1]:7.2f} at {curve[-1][0]:,}" if curve else f"{'–':>6}"
        print(f"step {step:,} of {total:,} | last 10 episodes {recent} | eval {evaluated} | {sps:,.0f} steps/s | "
              f"ETA {timedelta(seconds=int((total - step) / sps))}", flush=True)
        self.log(step, {"charts/SPS": sps})

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


# ===================================================================================================
# Appendix: the Minitaur. `import pybullet_envs` fails on a current stack (it imports the retired `gym`),
# so MinitaurBulletEnv reproduces MinitaurBulletEnv-v0 with the robot model that pybullet installs.
# ===================================================================================================
@contextlib.contextmanager
def silenced_c_output():
    """Hide what C code prints to stdout/stderr (pybullet's build time on import, "argv[0]=" on connect)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as devnull:
        for fd in (1, 2):
            os.dup2(devnull.fileno(), fd)
        try:
            yield
        finally:
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


def load_minitaur_model() -> types.ModuleType:
    """`pybullet_envs.bullet.minitaur` without running the package __init__ files (they import the retired
    `gym`): empty stand-ins for the two packages are registered first."""
    import pybullet_data

    package_dir = Path(pybullet_data.getDataPath()).parent / "pybullet_envs"
    for name, path in [("pybullet_envs", package_dir), ("pybullet_envs.bullet", package_dir / "bullet")]:
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            sys.modules[name].__path__ = [str(path)]
    return importlib.import_module("pybullet_envs.bullet.minitaur")


class MinitaurBulletEnv(gym.Env):
    """The Minitaur quadruped learning to walk forward (MinitaurBulletEnv-v0):
      - observation (28 float32): 8 motor angles, velocities and torques, the base orientation quaternion;
        bounds ±(π, motor speed limit, torque limit, 1) + 0.01;
      - action (8 in [−1, 1]; beyond ±1.01 a ValueError): swing and extension of the four legs (the leg model);
      - physics: a 0.01 s step = 5 substeps of 0.002 s with the DC motor model (its own PD, kp 1.0, kd 0.02) and
        overheat protection, 300 solver iterations shared across substeps, gravity −10, pybullet_data's plane;
        each reset reloads the robot and settles it for 100 substeps at motor angle π/2;
      - reward: forward progress Δx − 0.005 · |τ · ω| · 0.002 s (the original uses the substep length here);
        terminated when fallen (base up-vector · z < 0.85 or height < 0.13 m), truncated at 1000 steps;
      - at every reset, domain randomisation from the env's seeded generator: base and leg masses ±20 %,
        battery 14.8–16.8 V, motor viscous damping 0–0.01, foot friction 0.8–1.5;
      - render_mode="rgb_array" renders headless (DIRECT connection, TinyRenderer)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 100}
    CONTROL_STEP, SUBSTEPS, SOLVER_ITERATIONS = 0.01, 5, 300
    ENERGY_WEIGHT, ACTION_TOLERANCE = 0.005, 0.01  # the original accepts actions up to ±1.01

    def __init__(self, render_mode: str | None = None):
        self.render_mode = render_mode
        with silenced_c_output():  # pybullet is imported here, not at the top: only this env needs it
            import pybullet
            import pybullet_data
            from pybullet_utils import bullet_client

            self.model = load_minitaur_model()
            self.bullet = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
        self.data_path = pybullet_data.getDataPath()
        self.substep = self.CONTROL_STEP / self.SUBSTEPS
        motor = self.model.motor
        high = np.concatenate([np.full(8, math.pi), np.full(8, motor.MOTOR_SPEED_LIMIT),
                               np.full(8, motor.OBSERVED_TORQUE_LIMIT), np.ones(4)]) + 0.01
        self.observation_space = gym.spaces.Box(-high.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (8,), np.float32)
        self.robot = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        bullet = self.bullet
        bullet.resetSimulation()
        bullet.setPhysicsEngineParameter(numSolverIterations=self.SOLVER_ITERATIONS // self.SUBSTEPS)
        bullet.setTimeStep(self.substep)
        bullet.loadURDF(f"{self.data_path}/plane.urdf")
        bullet.setGravity(0, 0, -10)
        self.robot = robot = self.model.Minitaur(
            pybullet_client=bullet, urdf_root=self.data_path, time_step=self.substep,
            self_collision_enabled=True, accurate_motor_model_enabled=True, motor_kp=1.0, motor_kd=0.02,
            motor_overheat_protection=True)
        # domain randomisation of the original env, drawn from this env's seeded generator
        rng = self.np_random
        robot.SetBaseMass(robot.GetBaseMassFromURDF() * rng.uniform(0.8, 1.2))
        robot.SetLegMasses([mass * rng.uniform(0.8, 1.2) for mass in robot.GetLegMassesFromURDF()])
        robot.SetBatteryVoltage(rng.uniform(14.8, 16.8))
        robot.SetMotorViscousDamping(rng.uniform(0.0, 0.01))
        robot.SetFootFriction(rng.uniform(0.8, 1.5))
        for _ in range(100):  # settle on the ground
            robot.ApplyAction([math.pi / 2] * 8)
            bullet.stepSimulation()
        self.last_x = robot.GetBasePosition()[0]
        return self._observation(), {}

    def step(self, action):
        action = np.asarray(action, np.float64)
        if action.shape != (8,) or np.any(np.abs(action) > 1.0 + self.ACTION_TOLERANCE):
            raise ValueError(f"Minitaur actions are 8 values in [-1, 1], got {action}")
        motor_angles = self.robot.ConvertFromLegModel(action)
        for _ in range(self.SUBSTEPS):
            self.robot.ApplyAction(motor_angles)
            self.bullet.stepSimulation()
        x = self.robot.GetBasePosition()[0]
        energy = abs(np.dot(self.robot.GetMotorTorques(), self.robot.GetMotorVelocities())) * self.substep
        reward = (x - self.last_x) - self.ENERGY_WEIGHT * energy
        self.last_x = x
        up_z = self.bullet.getMatrixFromQuaternion(self.robot.GetBaseOrientation())[8]  # base z-axis · world z
        fallen = up_z < 0.85 or self.robot.GetBasePosition()[2] < 0.13
        return self._observation(), float(reward), bool(fallen), False, {}

    def _observation(self) -> np.ndarray:
        return np.asarray(self.robot.GetObservation(), np.float32)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        width, height = 480, 360
        view = self.bullet.computeViewMatrixFromYawPitchRoll(
            cameraTargetPosition=self.robot.GetBasePosition(), distance=1.0, yaw=0, pitch=-30, roll=0, upAxisIndex=2)
        projection = self.bullet.computeProjectionMatrixFOV(fov=60, aspect=width / height, nearVal=0.1, farVal=100)
        _, _, pixels, _, _ = self.bullet.getCameraImage(width, height, viewMatrix=view, projectionMatrix=projection,
                                                        renderer=self.bullet.ER_TINY_RENDERER)
        return np.asarray(pixels, np.uint8).reshape(height, width, 4)[:, :, :3]

    def close(self):
        if self.bullet is not None:
            self.bullet.disconnect()
            self.bullet = None


if "MinitaurBulletEnv-v0" not in gym.registry:  # also imported by gymnasium as "sac_minitaur:..."
    gym.register("MinitaurBulletEnv-v0", entry_point=MinitaurBulletEnv, max_episode_steps=1000,
                 reward_threshold=15.0)


if __name__ == "__main__":  # last, after the appendix: the Minitaur is registered before main() runs
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    try:
        main(parse_args())
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(128 + STOP[0] if STOP else 0)
