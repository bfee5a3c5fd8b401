"""DQN for small discrete-action environments (default: CartPole-v1), in one file.

Deep Q-Network (Mnih et al., 2015) learns an action-value function Q(s, a; θ) with a neural network and
acts greedily with respect to it. It regresses Q(s_t, a_t; θ) toward a TD target computed with a separate
*target network* θ⁻, on transitions sampled uniformly from an *experience replay* buffer D:

    y_t  = Σ_{k=0}^{n-1} γ^k r_{t+k}  +  γ^n · (1 − terminated) · max_a' Q(s_{t+n}, a'; θ⁻)
    L(θ) = E_{(s_t, a_t, y_t) ~ D} [ Huber_δ(y_t − Q(s_t, a_t; θ)) ]

n = 1 is the classic target r + γ max_a' Q(s', a'; θ⁻); with n = 5 (TF-Agents' `n_step_update`, 1 there) a reward
reaches the Q-values of the states n steps before it in one update. Function approximation, bootstrapping
and off-policy learning together (the "deadly triad") can diverge: the target network, following the online
one slowly (θ⁻ ← τθ + (1 − τ)θ⁻), stops the target from chasing every gradient step, and replay breaks the
correlation between consecutive transitions. The Huber loss keeps a rare huge error from jolting the network;
as it estimates something nearer a median than a mean beyond δ, δ follows the largest |reward| seen (at least
1), so that the card game's all-or-nothing returns are averaged. Only `terminated` stops the bootstrap: a time
limit (`truncated`) is not a property of the state. Evaluation is greedy, on a separate environment.
Defaults whose source Args does not name were chosen by sweeps on CartPole (benchmarks/).

    TF-Agents DQN tutorial             this file
    ---------------------------------  --------------------------------------------------------------
    suite_gym.load / TFPyEnvironment   make_env() (gymnasium env + episode statistics, videos)
    TimeStep (step_type, reward, obs)  the (obs, reward, terminated, truncated, info) tuple of env.step
    QNetwork(fc_layer_params)          QNetwork(hidden_sizes)
    DqnAgent (td_errors_loss_fn,       td_loss() (Huber), Adam, soft_update() every
      target_update_tau/period)          target_network_frequency steps
    agent.policy / collect_policy      greedy_action() / ε-greedy with linear_schedule() in train()
    RandomTFPolicy                     env.action_space.sample()
    Reverb replay buffer + dataset     ReplayBuffer (numpy ring buffer of n-step transitions)
    PyDriver, compute_avg_return       the loop of train(), evaluate()
    Checkpointer / PolicySaver         save_checkpoint(TrainState), --resume / --eval-checkpoint

Usage:
    python dqn_cartpole.py                                        # CartPole-v1, 50k steps
    python dqn_cartpole.py --env-id card_game_env:CardGame-v0     # our own environment
    python dqn_cartpole.py --resume runs/<run>/dqn_cartpole.pt --total-timesteps 100000   # go on longer
    python dqn_cartpole.py --eval-checkpoint runs/<run>/dqn_cartpole.pt --capture-video
    tensorboard --logdir runs
"""

import itertools
import json
import math
import os
import signal
import sys
import time
from collections import deque
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
PROGRESS_EVERY = 2_000  # environment steps between two progress lines


@dataclass
class Args:
    env_id: str = "CartPole-v1"
    """gymnasium id of an env with a Discrete action space and a flat Box observation"""
    learning_rate: float = 1e-3
    """Adam's learning rate (TF-Agents tutorial) at the start; it decays linearly to 0 so the policy settles"""
    buffer_size: int = 50_000
    """replay buffer capacity in transitions"""
    batch_size: int = 128
    """transitions sampled per gradient step (CleanRL's dqn.py)"""
    gamma: float = 0.99
    """discount factor γ (CleanRL's dqn.py)"""
    n_step: int = 5
    """length of the multi-step return in the TD target (TF-Agents' n_step_update, 1 there)"""
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
    """initial exploration ε (CleanRL's dqn.py)"""
    end_e: float = 0.05
    """final exploration ε (CleanRL's dqn.py)"""
    exploration_fraction: float = 0.2
    """fraction of total_timesteps over which ε decays linearly from start_e to end_e"""

    seed: int = 1
    """seed of torch, the environments, exploration and replay sampling"""
    total_timesteps: int = 50_000
    """number of environment steps to train for (ε's and the learning rate's schedules span them)"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the network runs; auto picks cuda when available"""
    num_threads: int = 1
    """torch CPU threads; one is fastest for networks this small"""
    capture_video: bool = False
    """record mp4s to the run's videos/: the first episode of every evaluation (step-N.mp4) and a random agent's
    (random-agent.mp4); with --eval-checkpoint, agent.mp4 and random-agent.mp4"""
    save_model: bool = True
    """write the checkpoint to the run directory (after every evaluation, at the end and when stopped)"""
    eval_checkpoint: str | None = None
    """path of a saved checkpoint or model to evaluate (greedily, on --env-id) instead of training"""
    eval_episodes: int = 10
    """number of greedy episodes per evaluation (TF-Agents tutorial)"""
    eval_frequency: int = 5_000
    """evaluate the greedy policy every this many environment steps (and at the end)"""
    resume: str | None = None
    """continue the run saved in this checkpoint, in its run directory, with its saved arguments and replay"""
    run_root: str = "runs"
    """folder under which the run directory is created"""


# ---- Environment ---------------------------------------------------------------------------------
def make_env(env_id: str, video: Path | None = None) -> gym.Env:
    """An env that reports episode statistics; with `video`, its first episode is recorded there (as
    <video stem>-episode-0.mp4, which record_video() renames).

    Seeding (its first `reset(seed=...)` and its action space) is left to the caller, so that a recorded
    episode 0 is a real episode rather than a reset that nothing follows."""
    try:
        env = gym.make(env_id, render_mode="rgb_array" if video else None)
    except (gym.error.Error, ImportError, AttributeError, TypeError) as e:
        raise InputError(f"cannot make env '{env_id}': {e}") from None
    if video is not None:
        env = gym.wrappers.RecordVideo(env, str(video.parent), name_prefix=video.stem,
                                       episode_trigger=lambda episode: episode == 0, disable_logger=True)
    return gym.wrappers.RecordEpisodeStatistics(env)


def check_env(env: gym.Env, args: Args) -> tuple[int, int]:
    """DQN needs a finite action set and a flat vector observation: return (obs_dim, n_actions)."""
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise InputError(f"{SCRIPT} needs a Discrete action space, but '{args.env_id}' has {env.action_space}")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        raise InputError(f"{SCRIPT} needs a flat Box observation, but '{args.env_id}' has {env.observation_space}")
    if args.capture_video and "rgb_array" not in env.metadata.get("render_modes", []):
        raise InputError(f"--capture-video needs rgb_array rendering, which '{args.env_id}' does not offer")
    return env.observation_space.shape[0], int(env.action_space.n)


# ---- Network -------------------------------------------------------------------------------------
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


def load_q_network(weights: dict) -> QNetwork:
    """The QNetwork whose layer sizes fit `weights` (a saved state_dict), with them loaded."""
    shapes = [w.shape for name, w in weights.items() if name.endswith("weight")]  # (out, in) of each layer
    q_network = QNetwork(shapes[0][1], shapes[-1][0], tuple(out for out, _ in shapes[:-1]))
    q_network.load_state_dict(weights)
    return q_network


def greedy_action(q_network: QNetwork, obs, device: torch.device) -> int:
    """The evaluation policy (TF-Agents' agent.policy): argmax_a Q(obs, a)."""
    with torch.no_grad():
        q_values = q_network(torch.as_tensor(obs, dtype=torch.float32, device=device))
    return int(q_values.argmax())


# ---- Replay buffer -------------------------------------------------------------------------------
class ReplayBuffer:
    """Fixed-capacity ring buffer of n-step transitions, sampled uniformly with replacement.

    `add` takes one environment step at a time and writes the transition that starts n steps earlier
    once its n rewards are known: (obs_t, a_t, R = Σ_{k<n} γ^k r_{t+k}, obs_{t+n}, discount = γ^n). When
    the episode ends, the pending steps are written with the rewards that remain and the episode's true
    last observation; `discount` is 0 after a termination (no bootstrap) and γ^k after a truncation.
    The TD target is then simply R + discount · max_a' Q(next_obs, a'; θ⁻).
    """

    COLUMNS = ("obs", "actions", "returns", "next_obs", "discounts")

    def __init__(self, capacity: int, obs_dim: int, n_step: int, gamma: float, seed: int):
        self.capacity, self.n_step, self.gamma = capacity, n_step, gamma
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros(capacity, np.int64)
        self.returns = np.zeros(capacity, np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.discounts = np.zeros(capacity, np.float32)
        self.position, self.size = 0, 0
        self.pending: deque[tuple[np.ndarray, int, float]] = deque()  # steps whose n-step return is not known yet
        self.rng = np.random.default_rng(seed)

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

    def sample(self, batch_size: int) -> list[np.ndarray]:
        """(obs, actions, returns, next_obs, discounts) of batch_size transitions: new arrays, the caller's."""
        index = self.rng.integers(0, self.size, batch_size)
        return [getattr(self, name)[index] for name in self.COLUMNS]

    def state_dict(self) -> dict:
        """The stored transitions (as tensors: a checkpoint then loads with torch.load's weights_only) and
        the sampling generator. The steps of an unfinished episode are not kept: a resumed run starts a new one."""
        return {"position": self.position, "size": self.size, "rng": self.rng.bit_generator.state,
                **{name: torch.from_numpy(getattr(self, name)[:self.size]) for name in self.COLUMNS}}

    def load_state_dict(self, state: dict) -> None:
        self.position, self.size = state["position"], state["size"]
        self.rng.bit_generator.state = state["rng"]
        self.pending.clear()
        for name in self.COLUMNS:
            getattr(self, name)[:self.size] = state[name].numpy()


# ---- Loss / update -------------------------------------------------------------------------------
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
        for target_param, param in zip(target_network.parameters(), q_network.parameters(), strict=True):
            target_param.lerp_(param, tau)


# ---- Training loop -------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Everything a checkpoint holds: what the run needs to continue exactly where it stopped."""
    args: Args
    q_network: QNetwork
    target_network: QNetwork
    optimizer: torch.optim.Optimizer
    buffer: ReplayBuffer
    rng: np.random.Generator  # ε-greedy's coin
    huber_delta: float = 1.0  # the largest |reward| seen (at least 1), see the docstring
    global_step: int = 0
    gradient_steps: int = 0
    eval_curve: list = field(default_factory=list)  # [[step, mean eval return], ...]
    train_seconds: float = 0.0  # up to the last checkpoint, over all sessions of the run


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Linear interpolation from start (t = 0) to end (t >= duration)."""
    return start + (end - start) * min(t / duration, 1.0)


def train(args: Args, device: torch.device) -> tuple[Path, dict]:
    env, eval_env = make_env(args.env_id), make_env(args.env_id)
    obs_dim, n_actions = check_env(env, args)
    q_network = QNetwork(obs_dim, n_actions, args.hidden_sizes).to(device)
    target_network = QNetwork(obs_dim, n_actions, args.hidden_sizes).to(device)
    target_network.load_state_dict(q_network.state_dict())
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, fused=True)  # one kernel for all
    try:
        buffer = ReplayBuffer(args.buffer_size, obs_dim, args.n_step, args.gamma, args.seed)
    except (MemoryError, ValueError) as e:  # ValueError: beyond what numpy can address
        raise InputError(f"--buffer-size {args.buffer_size:,} does not fit in memory: {e}") from None
    state = TrainState(args, q_network, target_network, optimizer, buffer, rng=np.random.default_rng(args.seed))
    if args.resume:
        restore(state, load_checkpoint(args.resume))
        print(f"resumed {args.resume} at step {state.global_step:,} ({buffer.size:,} transitions in replay)")
    run = Run(state, f"device: {device}")  # the run directory, TensorBoard, the progress line
    exploration_steps = max(1, int(args.exploration_fraction * args.total_timesteps))
    recent_returns = deque(maxlen=10)
    # a resumed run starts a new episode, seeded apart from the first session's and from the evaluation's
    seed = args.seed + 2 * EVAL_SEED_OFFSET + state.global_step if args.resume else args.seed
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)

    for global_step in range(state.global_step + 1, args.total_timesteps + 1):
        state.global_step = global_step
        # Act: ε-greedy (TF-Agents' collect_policy).
        epsilon = linear_schedule(args.start_e, args.end_e, exploration_steps, global_step)
        if state.rng.random() < epsilon:
            action = int(env.action_space.sample())
        else:
            action = greedy_action(q_network, obs, device)

        # Step the environment.
        next_obs, reward, terminated, truncated, info = env.step(action)

        # Store the step; the replay buffer turns it into an n-step transition.
        state.huber_delta = max(state.huber_delta, abs(float(reward)))
        buffer.add(obs, action, reward, next_obs, terminated, truncated)
        obs = next_obs
        if terminated or truncated:
            recent_returns.append(float(info["episode"]["r"]))
            run.log(global_step, {"charts/episodic_return": info["episode"]["r"],
                                  "charts/episodic_length": info["episode"]["l"]})
            obs, _ = env.reset()

        # Learn: one gradient step on a replayed batch, the learning rate decaying linearly to 0.
        if global_step > args.learning_starts and global_step % args.train_frequency == 0:
            optimizer.param_groups[0]["lr"] = linear_schedule(args.learning_rate, 0.0, args.total_timesteps,
                                                              global_step)
            batch = [torch.as_tensor(column, device=device) for column in buffer.sample(args.batch_size)]
            loss, q_taken = td_loss(q_network, target_network, batch, state.huber_delta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state.gradient_steps += 1
            if state.gradient_steps % LOG_EVERY == 0:
                run.log(global_step, {"losses/td_loss": loss.item(), "losses/q_values": q_taken.mean().item(),
                                      "charts/learning_rate": optimizer.param_groups[0]["lr"]})

        # Update the target network: θ⁻ follows θ slowly.
        if global_step % args.target_network_frequency == 0:
            soft_update(target_network, q_network, args.tau)

        if global_step % PROGRESS_EVERY == 0:
            run.progress(global_step, recent_returns, epsilon)
        if global_step % args.eval_frequency == 0 or global_step == args.total_timesteps:
            returns = evaluate(eval_env, q_network, args.eval_episodes, args.seed + EVAL_SEED_OFFSET, device)
            if returns is not None:  # None: a stop was asked for during the evaluation
                run.evaluated(global_step, returns)  # to the curve, TensorBoard and the console; the checkpoint
                if args.capture_video:
                    record_video(q_network, args.env_id, args.seed + EVAL_SEED_OFFSET,
                                 run.dir / "videos" / f"step-{global_step:09d}.mp4", device)
        if STOP:
            break

    result = run.finish()  # saves a stopped run
    if args.capture_video and not STOP:
        record_video(None, args.env_id, args.seed + EVAL_SEED_OFFSET, run.dir / "videos" / "random-agent.mp4", device)
    env.close()
    eval_env.close()
    return run.dir, result


# ---- Evaluation and video ------------------------------------------------------------------------
def evaluate(env: gym.Env, q_network: QNetwork | None, episodes: int, seed: int,
             device: torch.device) -> np.ndarray | None:
    """Undiscounted return of `episodes` whole episodes (compute_avg_return) of the greedy policy of
    q_network, or of a random policy when it is None; None if a stop was asked for meanwhile.

    Seeding the first reset makes every evaluation start from the same initial states, so that
    evaluations during training are comparable with each other."""
    env.action_space.seed(seed)
    returns = np.zeros(episodes)
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        done = False
        while not done and not STOP:
            action = int(env.action_space.sample()) if q_network is None else greedy_action(q_network, obs, device)
            obs, reward, terminated, truncated, _ = env.step(action)
            returns[episode] += reward
            done = terminated or truncated
    return None if STOP else returns


def record_video(q_network: QNetwork | None, env_id: str, seed: int, path: Path, device: torch.device) -> None:
    """An mp4 at `path` of the first episode of evaluate(): the greedy agent's, or a random agent's when
    q_network is None (the tutorial's before/after comparison)."""
    env = make_env(env_id, video=path)
    evaluate(env, q_network, 1, seed, device)
    env.close()
    (path.parent / f"{path.stem}-episode-0.mp4").replace(path)


def evaluate_checkpoint(args: Args, device: torch.device) -> tuple[Path, dict]:
    """--eval-checkpoint: greedy episodes of a saved Q-network (a checkpoint or a model file) on --env-id."""
    start = time.perf_counter()
    checkpoint = load_checkpoint(args.eval_checkpoint)
    env = make_env(args.env_id)
    obs_dim, n_actions = check_env(env, args)
    try:
        q_network = load_q_network(checkpoint["q_network"]).to(device)
    except (RuntimeError, IndexError, AttributeError, ValueError):  # not the state_dict of a QNetwork
        raise InputError(f"'{args.eval_checkpoint}' holds no {SCRIPT} Q-network") from None
    if (q_network.net[0].in_features, q_network.net[-1].out_features) != (obs_dim, n_actions):
        raise InputError(f"the Q-network in '{args.eval_checkpoint}' does not fit '{args.env_id}' "
                         f"(obs {obs_dim}, {n_actions} actions)")
    run_dir = make_run_dir(args)
    print(f"run directory: {run_dir}  (evaluating {args.eval_checkpoint}, device: {device})", flush=True)
    returns = evaluate(env, q_network, args.eval_episodes, args.seed + EVAL_SEED_OFFSET, device)
    env.close()
    returns = np.zeros(0) if returns is None else returns  # stopped by a signal
    if len(returns):
        print(f"eval of {args.eval_checkpoint} on {args.env_id}: {returns.mean():.2f} ± {returns.std():.2f} "
              f"over {len(returns)} episodes (greedy)")
    if args.capture_video:
        for name, policy_network in [("agent", q_network), ("random-agent", None)]:
            if not STOP:  # a stop ends the video under way and starts no other
                record_video(policy_network, args.env_id, args.seed + EVAL_SEED_OFFSET,
                             run_dir / "videos" / f"{name}.mp4", device)
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
    positive = ["total_timesteps", "eval_episodes", "eval_frequency", "buffer_size", "batch_size",
                "train_frequency", "target_network_frequency", "n_step", "num_threads", "learning_rate"]
    for name in positive:
        if not 0 < getattr(args, name) < math.inf:  # also refuses nan
            raise InputError(f"{flag(name)} must be positive and finite, got {getattr(args, name)}")
    if args.num_threads > os.cpu_count():
        raise InputError(f"--num-threads must be at most this machine's {os.cpu_count()} CPUs, got {args.num_threads}")
    if args.batch_size > args.buffer_size:
        raise InputError(f"--batch-size {args.batch_size} is larger than --buffer-size {args.buffer_size}")
    # a transition is stored once its n rewards are known: the buffer must not be empty at the first update
    if args.learning_starts < max(args.batch_size, args.n_step):
        raise InputError(f"--learning-starts must be at least --batch-size ({args.batch_size}) and --n-step "
                         f"({args.n_step}), got {args.learning_starts}")
    if not 0 <= args.seed < 2**30:  # room for what is added to it (evaluation's offset, envs, a resumed run's step)
        raise InputError(f"--seed must be in [0, {2**30:,}), got {args.seed}")
    for name in ["gamma", "start_e", "end_e", "tau"]:
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise InputError(f"{flag(name)} must be in [0, 1], got {getattr(args, name)}")
    if not 0.0 < args.exploration_fraction <= 1.0:
        raise InputError(f"--exploration-fraction must be in (0, 1], got {args.exploration_fraction}")
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


# flags a resumed run may give other values than the saved ones: they change nothing learnt, except that a new
# --total-timesteps stretches ε's and the learning rate's schedules over the new length (a longer run learns on)
SAFE_TO_CHANGE_ON_RESUME = {"total_timesteps", "device", "num_threads", "capture_video", "save_model",
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

    def progress(self, step: int, recent_returns, epsilon: float) -> None:
        """`step 12,000 of 30,000 | last 10 episodes 15.3 | eval 17.20 at 10,000 | ε 0.050 | 58 steps/s | ETA 0:05:10`.
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
