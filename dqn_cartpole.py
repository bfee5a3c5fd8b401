"""DQN for small discrete-action environments (default: CartPole-v1), in one file.

Deep Q-Network (Mnih et al., 2015) learns an action-value function Q(s, a; θ) with a neural network
and acts greedily with respect to it. It regresses Q(s_t, a_t; θ) toward a TD target computed with a
separate *target network* θ⁻, on transitions sampled uniformly from an *experience replay* buffer D:

    y_t  = Σ_{k=0}^{n-1} γ^k r_{t+k}  +  γ^n · (1 − terminated) · max_a' Q(s_{t+n}, a'; θ⁻)
    L(θ) = E_{(s_t, a_t, y_t) ~ D} [ Huber_δ(y_t − Q(s_t, a_t; θ)) ]

With n = 1 this is the classic one-step target r + γ max_a' Q(s', a'; θ⁻). We use n = 5 (TF-Agents'
`n_step_update`): rewards then travel n steps per update, so CartPole's credit for staying centred
reaches the Q-values several times faster. The target network follows the online one slowly,
θ⁻ ← τθ + (1 − τ)θ⁻ (τ = 0.01 every 2 steps), which holds the regression target nearly fixed.

Why both tricks: DQN combines the "deadly triad" of function approximation, bootstrapping (the target
contains Q itself) and off-policy learning, which can diverge. A slowly moving target stops the
regression target from chasing every gradient step, and replay breaks the correlation between
consecutive transitions while reusing each one many times.

The Huber loss is squared for TD errors up to δ and linear beyond, so that a rare huge error cannot
jolt the network. Beyond δ it estimates something closer to a median than a mean, though, so δ must
match the size of the rewards: we set δ to the largest |reward| seen so far (at least 1). CartPole
gets the classic δ = 1; the card game (rewards down to −21) gets δ = 21, a plain squared loss on its
all-or-nothing returns, whose *mean* is what the optimal policy needs.

Only `terminated` (the MDP really ended: the pole fell) stops the bootstrap. `truncated` (a time limit
such as CartPole's 500 steps) is not a property of the state, so the target still bootstraps from the
true last observation, which gymnasium returns from `step` before we reset.

Collection uses ε-greedy exploration with ε annealed linearly from `start_e` to `end_e` over
`exploration_fraction` of the run, and the learning rate decays linearly to 0 so that the final
policy settles; evaluation is purely greedy on a separate environment.

How the TF-Agents DQN tutorial maps onto this file:

    TF-Agents                          this file
    ---------------------------------  --------------------------------------------------------------
    suite_gym.load / TFPyEnvironment   make_env() (gymnasium env + episode statistics, videos)
    TimeStep (step_type, reward, obs)  the (obs, reward, terminated, truncated, info) tuple of env.step
    QNetwork(fc_layer_params)          QNetwork(hidden_sizes)
    DqnAgent (td_errors_loss_fn,       the update block in train(): td_target, huber_loss, Adam, and the
      target_update_tau/period)          soft target update every target_network_frequency steps
    agent.policy (greedy)              greedy_action(): argmax_a Q(s, a)
    agent.collect_policy (ε-greedy)    the ε-greedy branch in train() with linear_schedule()
    RandomTFPolicy                     env.action_space.sample(), for warm-up and the random-agent video
    Reverb replay buffer + dataset     ReplayBuffer (numpy ring buffer of n-step transitions)
    PyDriver (collect steps)           the `for global_step in ...` loop in train()
    compute_avg_return                 evaluate()

Usage:
    python dqn_cartpole.py                                        # CartPole-v1, 50k steps
    python dqn_cartpole.py --env-id card_game_env:CardGame-v0     # our own environment
    python dqn_cartpole.py --eval-checkpoint runs/.../dqn_cartpole.pt --capture-video
    tensorboard --logdir runs
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter

SCRIPT = Path(__file__).stem
EVAL_SEED_OFFSET = 10_000  # evaluation envs get seed + this: never the training env's episodes


@dataclass
class Args:
    env_id: str = "CartPole-v1"
    """gymnasium id of an env with a Discrete action space and a flat Box observation"""
    seed: int = 1
    """seed of torch, numpy, the environments and the action space"""
    total_timesteps: int = 50_000
    """number of environment steps to train for"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the network runs; auto picks cuda when available"""
    capture_video: bool = False
    """record mp4s of the final greedy agent and of a random agent to the run's videos/"""
    save_model: bool = True
    """write the checkpoint to the run directory"""
    eval_checkpoint: str | None = None
    """path of a saved checkpoint to evaluate (greedily, on --env-id) instead of training"""
    eval_episodes: int = 10
    """number of greedy episodes per evaluation"""
    eval_frequency: int = 5_000
    """evaluate the greedy policy every this many environment steps (and at the end)"""
    run_root: str = "runs"
    """folder under which the run directory is created"""
    num_threads: int = 1
    """torch CPU threads; one is fastest for networks this small"""

    learning_rate: float = 1e-3
    """initial Adam learning rate"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over the run, so that the final policy settles"""
    buffer_size: int = 50_000
    """replay buffer capacity in transitions"""
    batch_size: int = 128
    """transitions sampled per gradient step"""
    gamma: float = 0.99
    """discount factor γ"""
    n_step: int = 5
    """length of the multi-step return in the TD target (TF-Agents' n_step_update)"""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """widths of the Q-network's hidden layers"""
    learning_starts: int = 1_000
    """environment steps of ε-greedy collection before the first gradient step"""
    train_frequency: int = 2
    """one gradient step every this many environment steps"""
    target_network_frequency: int = 2
    """update the target network every this many environment steps"""
    tau: float = 0.01
    """target update rate: θ⁻ ← τ·θ + (1 − τ)·θ⁻ (1 is a hard copy)"""
    start_e: float = 1.0
    """initial exploration ε"""
    end_e: float = 0.05
    """final exploration ε"""
    exploration_fraction: float = 0.2
    """fraction of total_timesteps over which ε decays linearly from start_e to end_e"""


# ---------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------
def make_env(env_id: str, seed: int, video_folder: Path | None = None) -> gym.Env:
    """An env that reports episode statistics, optionally recording its first episode.

    Its first `reset(seed=...)` seeds it; it is left to the caller so that a recorded episode 0 is a
    real episode rather than a reset that nothing follows."""
    try:
        env = gym.make(env_id, render_mode="rgb_array" if video_folder else None)
    except (gym.error.Error, ModuleNotFoundError, AttributeError) as e:
        raise InputError(f"cannot make env '{env_id}': {e}") from None
    if video_folder is not None:
        if "rgb_array" not in env.metadata.get("render_modes", []):
            raise InputError(f"--capture-video needs rgb_array rendering, which '{env_id}' does not offer")
        env = gym.wrappers.RecordVideo(env, str(video_folder), episode_trigger=lambda episode: episode == 0,
                                       disable_logger=True)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env.action_space.seed(seed)
    return env


def check_spaces(env: gym.Env, env_id: str) -> tuple[int, int]:
    """DQN needs a finite action set and a flat vector observation: return (obs_dim, n_actions)."""
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise InputError(f"{SCRIPT} needs a Discrete action space, but '{env_id}' has {env.action_space}")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        raise InputError(f"{SCRIPT} needs a flat Box observation, but '{env_id}' has {env.observation_space}")
    return env.observation_space.shape[0], int(env.action_space.n)


def solved_threshold(env: gym.Env) -> float:
    """The env's registered reward threshold (CartPole-v1: 475), or +inf where it has none."""
    threshold = env.spec.reward_threshold if env.spec else None
    return float("inf") if threshold is None else threshold


# ---------------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------------
class QNetwork(nn.Module):
    """MLP mapping an observation to one Q-value per action."""

    def __init__(self, obs_dim: int, n_actions: int, hidden_sizes: tuple[int, ...]):
        super().__init__()
        layers, width = [], obs_dim
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, n_actions))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


# ---------------------------------------------------------------------------------------------------
# Replay buffer
# ---------------------------------------------------------------------------------------------------
class ReplayBuffer:
    """Fixed-capacity ring buffer of n-step transitions, sampled uniformly with replacement.

    `add` takes one environment step at a time and writes the transition that starts n steps earlier
    once its n rewards are known: (obs_t, a_t, R = Σ_{k<n} γ^k r_{t+k}, obs_{t+n}, discount = γ^n). When
    the episode ends, the pending steps are written with the rewards that remain and the episode's true
    last observation; `discount` is 0 after a termination (no bootstrap) and γ^k after a truncation.
    The TD target is then simply R + discount · max_a' Q(next_obs, a'; θ⁻).

    Storage and the sampled batch are preallocated: `sample` gathers into the same arrays every time,
    and the torch tensors it returns share their memory, so a gradient step allocates nothing here.
    """

    def __init__(self, capacity: int, obs_dim: int, batch_size: int, n_step: int, gamma: float, seed: int,
                 device: torch.device):
        self.capacity, self.batch_size, self.n_step, self.gamma, self.device = capacity, batch_size, n_step, gamma, device
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros(capacity, np.int64)
        self.returns = np.zeros(capacity, np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.discounts = np.zeros(capacity, np.float32)
        self.position, self.size = 0, 0
        self.pending: deque[tuple[np.ndarray, int, float]] = deque()  # steps whose n-step return is not known yet
        self.rng = np.random.default_rng(seed)
        self._batch = [np.zeros((batch_size,) + a.shape[1:], a.dtype) for a in self._columns()]
        self._batch_tensors = [torch.from_numpy(b) for b in self._batch]

    def _columns(self) -> list[np.ndarray]:
        return [self.obs, self.actions, self.returns, self.next_obs, self.discounts]

    def add(self, obs, action: int, reward: float, next_obs, terminated: bool, truncated: bool) -> None:
        """Record one environment step; `next_obs` is the true next observation, also after a truncation."""
        self.pending.append((np.array(obs, np.float32), action, reward))
        if terminated or truncated:
            while self.pending:
                self._write_oldest_pending(next_obs, terminated)
        elif len(self.pending) == self.n_step:
            self._write_oldest_pending(next_obs, terminated=False)

    def _write_oldest_pending(self, next_obs, terminated: bool) -> None:
        steps = len(self.pending)
        n_step_return = sum(self.gamma ** k * reward for k, (_, _, reward) in enumerate(self.pending))
        obs, action, _ = self.pending.popleft()
        i = self.position
        self.obs[i], self.actions[i], self.returns[i] = obs, action, n_step_return
        self.next_obs[i], self.discounts[i] = next_obs, 0.0 if terminated else self.gamma ** steps
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self) -> list[torch.Tensor]:
        """(obs, actions, returns, next_obs, discounts) tensors of batch_size transitions."""
        index = self.rng.integers(0, self.size, self.batch_size)
        for column, out in zip(self._columns(), self._batch):
            np.take(column, index, axis=0, out=out)
        return [t.to(self.device, non_blocking=True) for t in self._batch_tensors]


# ---------------------------------------------------------------------------------------------------
# Update: the TD loss and the target network
# ---------------------------------------------------------------------------------------------------
def td_loss(q_network: QNetwork, target_network: QNetwork, batch: list[torch.Tensor],
            huber_delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Huber_δ(y − Q(s, a; θ)) with the n-step target y = R + discount · max_a' Q(s', a'; θ⁻); also returns
    Q(s, a; θ) for logging."""
    obs, actions, returns, next_obs, discounts = batch
    with torch.no_grad():
        td_target = returns + discounts * target_network(next_obs).max(dim=1).values
    q_taken = q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
    return F.huber_loss(q_taken, td_target, delta=huber_delta), q_taken


def soft_update(target_network: QNetwork, q_network: QNetwork, tau: float) -> None:
    """θ⁻ ← τθ + (1 − τ)θ⁻ (τ = 1: a hard copy)."""
    with torch.no_grad():
        for target_param, param in zip(target_network.parameters(), q_network.parameters()):
            target_param.lerp_(param, tau)


# ---------------------------------------------------------------------------------------------------
# Exploration schedule and policies
# ---------------------------------------------------------------------------------------------------
def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Linear interpolation from start (t = 0) to end (t >= duration)."""
    return start + (end - start) * min(t / duration, 1.0)


def greedy_action(q_network: QNetwork, obs, device: torch.device) -> int:
    """The evaluation policy (TF-Agents' agent.policy): argmax_a Q(obs, a)."""
    with torch.no_grad():
        q_values = q_network(torch.as_tensor(obs, dtype=torch.float32, device=device))
    return int(q_values.argmax())


# ---------------------------------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------------------------------
def train(args: Args, run_dir: Path, device: torch.device) -> dict:
    env = make_env(args.env_id, args.seed)
    obs_dim, n_actions = check_spaces(env, args.env_id)
    eval_env = make_env(args.env_id, args.seed + EVAL_SEED_OFFSET)

    q_network = QNetwork(obs_dim, n_actions, args.hidden_sizes).to(device)
    target_network = QNetwork(obs_dim, n_actions, args.hidden_sizes).to(device)
    target_network.load_state_dict(q_network.state_dict())
    # fused Adam updates all parameters in one kernel
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, fused=True)
    buffer = make_buffer(args, obs_dim, device)
    explore_rng = np.random.default_rng(args.seed)
    huber_delta = 1.0  # the largest |reward| seen (at least 1), see the docstring
    exploration_steps = max(1, int(args.exploration_fraction * args.total_timesteps))
    print(f"run directory: {run_dir}  (device: {device})", flush=True)  # the run is under way from here

    writer = SummaryWriter(str(run_dir))
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
        f"|{k}|{v}|" for k, v in asdict(args).items()))
    greedy = lambda o: greedy_action(q_network, o, device)  # noqa: E731
    eval_returns, eval_curve, first_solved_step, episodic_return = np.zeros(0), [], None, float("nan")
    global_step, gradient_steps, target_updates = 0, 0, 0
    start_time = time.perf_counter()

    obs, _ = env.reset(seed=args.seed)
    for global_step in range(1, args.total_timesteps + 1):
        # Collect one step with the ε-greedy collect policy.
        epsilon = linear_schedule(args.start_e, args.end_e, exploration_steps, global_step)
        if explore_rng.random() < epsilon:
            action = int(env.action_space.sample())
        else:
            action = greedy(obs)
        next_obs, reward, terminated, truncated, info = env.step(action)
        huber_delta = max(huber_delta, abs(float(reward)))
        buffer.add(obs, action, reward, next_obs, terminated, truncated)
        obs = next_obs
        if terminated or truncated:
            episodic_return = float(info["episode"]["r"])
            writer.add_scalar("charts/episodic_return", episodic_return, global_step)
            writer.add_scalar("charts/episodic_length", info["episode"]["l"], global_step)
            writer.add_scalar("charts/epsilon", epsilon, global_step)
            obs, _ = env.reset()

        # Learn from a replayed batch.
        if global_step > args.learning_starts and global_step % args.train_frequency == 0:
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = linear_schedule(args.learning_rate, 0.0, args.total_timesteps,
                                                                  global_step)
            loss, q_taken = td_loss(q_network, target_network, buffer.sample(), huber_delta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            gradient_steps += 1
            if global_step % 1_000 == 0:
                writer.add_scalar("losses/td_loss", loss.item(), global_step)
                writer.add_scalar("losses/q_values", q_taken.mean().item(), global_step)
                writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
                writer.add_scalar("charts/SPS", global_step / (time.perf_counter() - start_time), global_step)

        if global_step % args.target_network_frequency == 0:
            soft_update(target_network, q_network, args.tau)
            target_updates += 1

        if global_step % args.eval_frequency == 0 or global_step == args.total_timesteps:
            eval_returns = evaluate(eval_env, greedy, args.eval_episodes, args.seed + EVAL_SEED_OFFSET)
            eval_curve.append([global_step, float(eval_returns.mean())])
            writer.add_scalar("eval/mean_return", eval_returns.mean(), global_step)
            if first_solved_step is None and eval_returns.mean() >= solved_threshold(env):
                first_solved_step = global_step
            sps = global_step / (time.perf_counter() - start_time)
            print(f"step {global_step:>8,} of {args.total_timesteps:,} | episodic return {episodic_return:8.2f} | "
                  f"greedy eval {eval_returns.mean():8.2f} ± {eval_returns.std():6.2f} | ε {epsilon:.3f} | "
                  f"SPS {sps:,.0f} | ETA {format_duration((args.total_timesteps - global_step) / sps)}", flush=True)
        if STOP:
            print(f"\nstopped by {signal.Signals(STOP.signal).name} at step {global_step:,}: "
                  f"saving what was learned", flush=True)
            break

    train_seconds = time.perf_counter() - start_time
    if args.save_model:
        write_atomically(run_dir / f"{SCRIPT}.pt", lambda f: torch.save({
            "q_network": q_network.state_dict(), "obs_dim": obs_dim, "n_actions": n_actions,
            "hidden_sizes": list(args.hidden_sizes), "env_id": args.env_id, "global_step": global_step,
            "args": asdict(args)}, f))
    if args.capture_video and not STOP:
        record_videos(q_network, args.env_id, args.seed + EVAL_SEED_OFFSET, run_dir, device)
    writer.close()
    env.close()
    eval_env.close()
    return {"global_step": global_step, "sps": global_step / train_seconds, "eval_returns": eval_returns,
            "eval_curve": eval_curve, "first_solved_step": first_solved_step, "gradient_steps": gradient_steps,
            "target_updates": target_updates, "huber_delta": huber_delta, "interrupted": bool(STOP)}


def format_duration(seconds: float) -> str:
    """Seconds as h:mm:ss, for the ETA."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ---------------------------------------------------------------------------------------------------
# Evaluation and video
# ---------------------------------------------------------------------------------------------------
def evaluate(env: gym.Env, policy: Callable[[np.ndarray], int], episodes: int, seed: int) -> np.ndarray:
    """Undiscounted return of `episodes` whole episodes of `policy` on `env` (compute_avg_return).

    Seeding the first reset makes every evaluation start from the same initial states, so that
    evaluations during training are comparable with each other."""
    returns = np.zeros(episodes)
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            returns[episode] += reward
            done = terminated or truncated
    return returns


def record_videos(q_network: QNetwork, env_id: str, seed: int, run_dir: Path, device: torch.device) -> None:
    """One mp4 of the greedy agent and one of a random agent, the tutorial's before/after comparison."""
    for name in ["greedy", "random"]:
        env = make_env(env_id, seed, video_folder=run_dir / "videos" / name)
        policy = (lambda obs: greedy_action(q_network, obs, device)) if name == "greedy" \
            else (lambda obs: int(env.action_space.sample()))
        evaluate(env, policy, episodes=1, seed=seed)
        env.close()


# ---------------------------------------------------------------------------------------------------
# Evaluate a saved checkpoint
# ---------------------------------------------------------------------------------------------------
def evaluate_checkpoint(args: Args, run_dir: Path, device: torch.device) -> dict:
    try:
        checkpoint = torch.load(args.eval_checkpoint, map_location=device)
        state = checkpoint["q_network"]
    except Exception as e:  # a missing, truncated or foreign file: torch.load raises many kinds
        raise InputError(f"cannot load checkpoint '{args.eval_checkpoint}': {type(e).__name__}: {e}") from None
    env = make_env(args.env_id, args.seed + EVAL_SEED_OFFSET)
    obs_dim, n_actions = check_spaces(env, args.env_id)
    if (obs_dim, n_actions) != (checkpoint["obs_dim"], checkpoint["n_actions"]):
        raise InputError(f"checkpoint was trained on '{checkpoint['env_id']}' (obs {checkpoint['obs_dim']}, "
                         f"{checkpoint['n_actions']} actions); '{args.env_id}' has obs {obs_dim}, {n_actions} actions")
    q_network = QNetwork(obs_dim, n_actions, tuple(checkpoint["hidden_sizes"])).to(device)
    q_network.load_state_dict(state)
    returns = evaluate(env, lambda o: greedy_action(q_network, o, device), args.eval_episodes,
                       args.seed + EVAL_SEED_OFFSET)
    env.close()
    print(f"greedy eval of {args.eval_checkpoint} on {args.env_id}: "
          f"{returns.mean():.2f} ± {returns.std():.2f} over {args.eval_episodes} episodes")
    if args.capture_video:
        record_videos(q_network, args.env_id, args.seed + EVAL_SEED_OFFSET, run_dir, device)
    return {"global_step": checkpoint["global_step"], "sps": 0.0, "eval_returns": returns,
            "eval_curve": [[checkpoint["global_step"], float(returns.mean())]], "eval_checkpoint": args.eval_checkpoint}


# ---------------------------------------------------------------------------------------------------
# Plumbing: input checks, stopping, saving, run directory, summary
# ---------------------------------------------------------------------------------------------------
class InputError(Exception):
    """Bad user input: reported as one line and a non-zero exit, without a traceback."""


def check_args(args: Args) -> None:
    positive = ["total_timesteps", "eval_episodes", "eval_frequency", "buffer_size", "batch_size",
                "train_frequency", "target_network_frequency", "n_step", "num_threads", "learning_rate"]
    for name in positive:
        if getattr(args, name) <= 0:
            raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.batch_size > args.buffer_size:
        raise InputError(f"--batch-size {args.batch_size} is larger than --buffer-size {args.buffer_size}")
    if args.learning_starts < args.batch_size:  # the buffer must hold a batch before the first update
        raise InputError(f"--learning-starts must be at least --batch-size ({args.batch_size}), "
                         f"got {args.learning_starts}")
    if not 0 <= args.seed < 2**32 - EVAL_SEED_OFFSET:
        raise InputError(f"--seed must be in [0, {2**32 - EVAL_SEED_OFFSET}), got {args.seed}")
    for name in ["gamma", "start_e", "end_e", "tau"]:
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise InputError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if not 0.0 < args.exploration_fraction <= 1.0:
        raise InputError(f"--exploration-fraction must be in (0, 1], got {args.exploration_fraction}")
    if not args.hidden_sizes or min(args.hidden_sizes) <= 0:
        raise InputError(f"--hidden-sizes must be positive widths, got {args.hidden_sizes}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA device is available")


def make_buffer(args: Args, obs_dim: int, device: torch.device) -> ReplayBuffer:
    """The replay buffer, refused up front when it would not fit in the available memory."""
    needed = args.buffer_size * (2 * obs_dim + 4) * 4
    available = available_memory_bytes()
    if needed > available:
        raise InputError(f"--buffer-size {args.buffer_size:,} needs {needed / 1e9:.2f} GB, but only "
                         f"{available / 1e9:.2f} GB is available")
    return ReplayBuffer(args.buffer_size, obs_dim, args.batch_size, args.n_step, args.gamma, args.seed, device)


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping), else free pages."""
    try:
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM ask training to stop after the step under way: the model and summary are
    saved, and the process exits with 128 + the signal's number. A second signal stops the process at once."""

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


def write_atomically(path: Path, write) -> None:
    """write(file) into a temporary file beside path, then rename it over path: a kill during the write
    leaves the previous file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def main(args: Args) -> None:
    check_args(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.num_threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    run_dir = Path(args.run_root) / f"{args.env_id.replace('/', '-')}__{SCRIPT}__{args.seed}__{int(time.time())}"

    start = time.perf_counter()
    result = evaluate_checkpoint(args, run_dir, device) if args.eval_checkpoint else train(args, run_dir, device)
    eval_returns = result.pop("eval_returns")
    summary = {"env_id": args.env_id, "seed": args.seed, **result,
               "wall_seconds": time.perf_counter() - start,
               # None when interrupted before the first evaluation
               "eval_mean_return": float(eval_returns.mean()) if len(eval_returns) else None,
               "eval_std_return": float(eval_returns.std()) if len(eval_returns) else None,
               "eval_episodes": len(eval_returns)}
    run_dir.mkdir(parents=True, exist_ok=True)  # only now: bad input leaves no empty run directory behind
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {json.dumps(summary)}")


if __name__ == "__main__":
    STOP.install()
    try:
        main(tyro.cli(Args))
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(128 + STOP.signal if STOP else 0)
