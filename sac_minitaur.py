"""Soft Actor-Critic (Haarnoja et al., 2018) on the pybullet Minitaur quadruped, in one file.

SAC learns a stochastic policy π(a|s) that maximises reward plus entropy, E[Σ_t γ^t (r_t + α H(π(·|s_t)))],
with two critics Q_1, Q_2 (s, a; φ_i), slowly moving target critics φ̄_i and a temperature α. On a batch
(s, a, r, s', terminated) from the replay buffer, with ã ~ π(·|s) and ã' ~ π(·|s') freshly sampled:

    critics:  y = r + γ (1 − terminated) [ min_i Q_i(s', ã'; φ̄_i) − α log π(ã'|s') ]        (soft Bellman target)
              L_Q(φ) = Σ_i E[ (Q_i(s, a; φ_i) − y)² ]
    actor:    L_π(θ) = E[ α log π(ã|s) − min_i Q_i(s, ã; φ_i) ],  ã = tanh(μ_θ(s) + σ_θ(s) ⊙ ε), ε ~ N(0, I)
    α:        L(log α) = E[ −log α · (log π(ã|s) + H̄) ],  target entropy H̄ = −|A|
    targets:  φ̄_i ← τ φ_i + (1 − τ) φ̄_i   (τ = 0.02, after every update)

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

The Minitaur environment. pybullet 3.2.7 still ships `pybullet_envs`, but `import pybullet_envs` fails
on a current stack (it imports the retired `gym` package and `pkg_resources`). This file therefore
defines `MinitaurBulletEnv`, a gymnasium env reproducing `MinitaurBulletEnv-v0`, and registers it under
that id (so `gymnasium.make("sac_minitaur:MinitaurBulletEnv-v0")` works wherever this file is importable).
It drives the robot model that pybullet installs (`pybullet_envs/bullet/minitaur.py` and `motor.py`, the
URDF from `pybullet_data`), loaded without running `pybullet_envs/__init__.py`:

  - observation (28 float32): 8 motor angles, 8 motor velocities, 8 motor torques, base orientation
    quaternion; bounds ±(π, motor speed limit, torque limit, 1) + 0.01;
  - action (8 in [−1, 1]): swing and extension of the four legs (the leg model), turned into eight
    motor angles; anything beyond ±1.01 raises ValueError;
  - physics: a 0.01 s control step = 5 substeps of 0.002 s with the DC motor model (its own PD, kp 1.0,
    kd 0.02) and overheat protection, 300 solver iterations shared across substeps, gravity −10, the
    plane of pybullet_data; each reset reloads the robot and settles it for 100 substeps at motor angle π/2;
  - reward: forward progress Δx (from the settled pose on) − 0.005 · |τ · ω| · 0.002 s (the original uses
    the substep length here);
  - terminated when fallen (base up-vector · z < 0.85 or base height < 0.13 m); truncated at 1000 steps;
  - domain randomisation at every reset, from the env's own seeded generator: base and leg masses ±20 %,
    battery voltage 14.8–16.8 V, motor viscous damping 0–0.01, foot friction 0.8–1.5;
  - render_mode="rgb_array" renders headless (DIRECT connection, TinyRenderer).

pybullet has wheels for Python 3.11 only; on newer Pythons requirements.txt leaves it out, SAC runs on
any other continuous-control env, and asking for the Minitaur says how to get pybullet, in one line.

How the TF-Agents SAC tutorial (Minitaur) maps onto this file:

    TF-Agents                                   this file
    ------------------------------------------  ---------------------------------------------------------
    suite_pybullet.load('MinitaurBulletEnv-v0') MinitaurBulletEnv, make_env() / make_vector_env()
    TimeStep (step_type, reward, observation)   the (obs, reward, terminated, truncated, info) of step
    CriticNetwork(joint_fc_layer_params)        TwinCritic: the two critics Q_1, Q_2
    ActorDistributionNetwork + TanhNormal/NormalProjectionNetwork
                                                Actor: MLP → mean and log-std of a tanh-squashed Gaussian
    SacAgent (target_update_tau, gamma, alpha)  SacAgent: the networks, log α, and update() on a batch
    agent.collect_policy (stochastic)           Actor.sample()
    GreedyPolicy / agent.policy (the mean)      Actor.greedy()
    RandomPyPolicy (initial collection)         uniform random actions for the first learning_starts steps
    DynamicStepDriver                           the `while global_step < ...` loop in train()
    TFUniformReplayBuffer / Reverb              ReplayBuffer (float32 numpy ring buffer)
    compute_avg_return / eval metrics           evaluate()

Hyperparameters follow the TF-Agents SAC tutorial and the SAC paper — batch 256, 256×256 networks, one
update per environment step, 10,000 initial random steps, target entropy −|A|; the replay keeps 1M
transitions (the tutorial: 10,000) — except three that come from rl-baselines3-zoo's SAC tuned for
pybullet's locomotion envs (HalfCheetahBulletEnv-v0 and the others): Adam 7.3e-4 for actor, critics and α
(tutorial and paper: 3e-4), γ = 0.98 (0.99) and τ = 0.02 (0.005). Measured on the Minitaur, 300,000 steps,
seeds 1–3, the mean of each seed's last three evaluations: 19.8, 6.7 and 0.3 with the paper's three; 11.2,
5.3 and 13.9 with the zoo's; seed 3 continued to 1M steps evaluates at 17.5 (README, Results). Two more
choices are ours:
  - α starts at 0.01 rather than 1. The rewards are tiny (about 0.001–0.01 per step): at α = 1 the entropy
    bonus outweighs them a thousandfold until tuning has lowered α, some 20,000 updates later. Tuning
    still raises α where an env needs it, as on Pendulum.
  - Observations are normalised by their running mean and standard deviation (`--obs-normalization
    running`, clipped to ±10, the statistics frozen for evaluation and saved with the networks). The
    observation bounds are no scale: the motor velocities are bounded by ±168 but 99 % of them lie within ±35,
    so rescaling the bounds to [−1, 1] (`bounds`) squeezes them to a few hundredths and leaves the angles
    off-centre; with it the Minitaur learnt markedly less (README, Results).

Usage:
    python sac_minitaur.py                                         # Minitaur, 100k steps
    python sac_minitaur.py --env-id Pendulum-v1 --total-timesteps 5000 --learning-starts 1000
    python sac_minitaur.py --num-envs 2 --total-timesteps 1000000
    python sac_minitaur.py --eval-checkpoint models/minitaur_sac.pt --capture-video
    python sac_minitaur.py --resume runs/.../sac_minitaur.pt --total-timesteps 1000000
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import itertools
import json
import math
import multiprocessing
import os
import random
import signal
import sys
import time
import types
from dataclasses import asdict, dataclass, field, fields
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


@dataclass
class Args:
    env_id: str = "MinitaurBulletEnv-v0"
    """gymnasium id of an env with a Box action space and a flat Box observation"""
    seed: int = 1
    """seed of torch, numpy, the environments and the action space"""
    total_timesteps: int = 100_000
    """environment steps to train for, over all envs"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the networks run; auto picks cuda when available"""
    num_envs: int = 1
    """environments stepped in parallel worker processes (their physics overlaps with the updates)"""
    capture_video: bool = False
    """record an mp4 of a greedy evaluation episode to the run's videos/ at the end"""
    video_length: int = 0
    """frames per video, 0 for the whole episode (a Minitaur frame takes tens of ms to render)"""
    save_model: bool = True
    """write the checkpoint to the run directory"""
    eval_checkpoint: str | None = None
    """path of a saved checkpoint or model to evaluate (greedily, on --env-id) instead of training"""
    eval_episodes: int = 10
    """number of greedy episodes per evaluation"""
    eval_frequency: int = 10_000
    """evaluate the greedy policy every this many environment steps (and at the end)"""
    checkpoint_frequency: int = 50_000
    """write the checkpoint every this many environment steps (and on Ctrl-C or SIGTERM)"""
    checkpoint_minutes: float = 10.0
    """also write the checkpoint every this many minutes of wall-clock"""
    run_root: str = "runs"
    """folder under which the run directory is created"""
    num_threads: int = 1
    """torch CPU threads; one is fastest for networks this small"""
    resume: str | None = None
    """continue the run saved in this checkpoint, in its run directory, with its saved arguments and replay"""

    learning_rate: float = 7.3e-4
    """Adam learning rate of the actor, the critics and α (rl-baselines3-zoo, pybullet envs; SAC paper: 3e-4)"""
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions"""
    batch_size: int = 256
    """transitions per gradient step"""
    gamma: float = 0.98
    """discount factor γ (rl-baselines3-zoo, pybullet envs; SAC paper: 0.99)"""
    tau: float = 0.02
    """target critic update rate: φ̄ ← τφ + (1 − τ)φ̄ after every update (rl-baselines3-zoo; paper: 0.005)"""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """widths of the hidden layers of the actor and of each critic"""
    learning_starts: int = 10_000
    """environment steps of uniform random actions before the first update (TF-Agents: 10,000)"""
    updates_per_step: float = 1.0
    """gradient steps per environment step (the replay ratio)"""
    initial_alpha: float = 0.01
    """initial temperature α (TF-Agents starts at 1; see the docstring for why 0.01 here)"""
    autotune_alpha: bool = True
    """tune α toward the target entropy −|A|; off keeps α = initial_alpha"""
    obs_normalization: Literal["running", "bounds", "none"] = "running"
    """running: subtract the mean and divide by the std of the observations seen so far (frozen for
    evaluation); bounds: rescale finite observation bounds to [−1, 1]; none: raw observations"""


# ---------------------------------------------------------------------------------------------------
# The Minitaur environment
# ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def silenced_c_output():
    """Hide what C code prints to stdout/stderr (pybullet's build time on import, "argv[0]=" on connect)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def load_minitaur_model() -> types.ModuleType:
    """pybullet's robot model, `pybullet_envs.bullet.minitaur`, without running the package __init__
    files (they import the retired `gym`): empty stand-ins for the two packages are registered first."""
    import pybullet_data

    package_dir = Path(pybullet_data.getDataPath()).parent / "pybullet_envs"
    for name, path in [("pybullet_envs", package_dir), ("pybullet_envs.bullet", package_dir / "bullet")]:
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
    return importlib.import_module("pybullet_envs.bullet.minitaur")


class MinitaurBulletEnv(gym.Env):
    """The Minitaur quadruped learning to walk forward (MinitaurBulletEnv-v0, see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 100}
    CONTROL_STEP, SUBSTEPS, SOLVER_ITERATIONS = 0.01, 5, 300
    ENERGY_WEIGHT = 0.005
    ACTION_TOLERANCE = 0.01  # the original accepts actions up to ±1.01

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
        self.robot = self.model.Minitaur(
            pybullet_client=bullet, urdf_root=self.data_path, time_step=self.substep,
            self_collision_enabled=True, accurate_motor_model_enabled=True, motor_kp=1.0, motor_kd=0.02,
            motor_overheat_protection=True)
        self._randomize()
        for _ in range(100):  # settle on the ground
            self.robot.ApplyAction([math.pi / 2] * 8)
            bullet.stepSimulation()
        self.last_x = self.robot.GetBasePosition()[0]
        return self._observation(), {}

    def _randomize(self) -> None:
        """Domain randomisation of the original env, drawn from this env's seeded generator."""
        robot, rng = self.robot, self.np_random
        robot.SetBaseMass(robot.GetBaseMassFromURDF() * rng.uniform(0.8, 1.2))
        robot.SetLegMasses([mass * rng.uniform(0.8, 1.2) for mass in robot.GetLegMassesFromURDF()])
        robot.SetBatteryVoltage(rng.uniform(14.8, 16.8))
        robot.SetMotorViscousDamping(rng.uniform(0.0, 0.01))
        robot.SetFootFriction(rng.uniform(0.8, 1.5))

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
        return self._observation(), float(reward), bool(self._fallen()), False, {}

    def _observation(self) -> np.ndarray:
        return np.asarray(self.robot.GetObservation(), np.float32)

    def _fallen(self) -> bool:
        up_z = self.bullet.getMatrixFromQuaternion(self.robot.GetBaseOrientation())[8]  # base z-axis · world z
        return up_z < 0.85 or self.robot.GetBasePosition()[2] < 0.13

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


def make_env(env_id: str, rescale_bounds: bool, video_folder: Path | None = None, video_length: int = 0) -> gym.Env:
    """One env; with rescale_bounds its observations are rescaled to [−1, 1] where their bounds are finite;
    with video_folder, its first episode is recorded. Callers seed it with reset(seed=...)."""
    try:
        env = gym.make(env_id, render_mode="rgb_array" if video_folder else None)
    except ModuleNotFoundError as e:
        if e.name in ("pybullet", "pybullet_data", "pybullet_utils"):
            raise InputError(f"'{env_id}' needs pybullet, which has wheels for Python 3.11 only: use Python 3.11, "
                             f"or `pip install pybullet==3.2.7` to build it from source") from None
        raise InputError(f"cannot make env '{env_id}': {e}") from None
    except (gym.error.Error, AttributeError, TypeError) as e:
        raise InputError(f"cannot make env '{env_id}': {e}") from None
    if video_folder is not None:
        if "rgb_array" not in env.metadata.get("render_modes", []):
            raise InputError(f"--capture-video needs rgb_array rendering, which '{env_id}' does not offer")
        env = gym.wrappers.RecordVideo(env, str(video_folder), episode_trigger=lambda episode: episode == 0,
                                       video_length=video_length, disable_logger=True)
    space = env.observation_space
    if rescale_bounds and isinstance(space, gym.spaces.Box) and np.all(np.isfinite(space.low)) \
            and np.all(np.isfinite(space.high)):
        env = gym.wrappers.RescaleObservation(env, -np.ones(space.shape, np.float32), np.ones(space.shape, np.float32))
    return env


def check_spaces(env: gym.Env, env_id: str) -> tuple[int, gym.spaces.Box]:
    """SAC needs a bounded continuous action space and a flat vector observation."""
    if not isinstance(env.action_space, gym.spaces.Box):
        raise InputError(f"{SCRIPT} needs a continuous (Box) action space, but '{env_id}' has {env.action_space}")
    if not (np.all(np.isfinite(env.action_space.low)) and np.all(np.isfinite(env.action_space.high))):
        raise InputError(f"{SCRIPT} needs finite action bounds, but '{env_id}' has {env.action_space}")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        raise InputError(f"{SCRIPT} needs a flat Box observation, but '{env_id}' has {env.observation_space}")
    return env.observation_space.shape[0], env.action_space


def make_vector_env(env_id: str, num_envs: int, rescale_bounds: bool) -> gym.vector.VectorEnv:
    """num_envs copies in worker processes. A finished episode is reset within the same step and its true
    last observation is in info["final_obs"]."""
    def worker_env() -> gym.Env:
        if multiprocessing.parent_process() is not None:  # in a worker, not in this process:
            for signum in (signal.SIGINT, signal.SIGTERM):  # stopping is ours to handle (we save, then close
                signal.signal(signum, signal.SIG_IGN)        # them), also when the signal reaches the group
        return make_env(env_id, rescale_bounds)

    return gym.vector.AsyncVectorEnv([worker_env] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


# ---------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------
class ObservationNormalizer(nn.Module):
    """(obs − mean) / std, clipped to ±10, with the mean and variance of all observations collected so far
    (merged batch by batch, Chan et al.'s parallel formula). The statistics change only in update(), which
    only the training loop calls, and are saved with the networks: evaluation uses them frozen. Disabled,
    it passes observations through."""

    def __init__(self, obs_dim: int, enabled: bool):
        super().__init__()
        self.enabled = enabled
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(obs_dim, dtype=torch.float64))

    def update(self, obs: np.ndarray) -> None:
        if not self.enabled:
            return
        batch = torch.as_tensor(obs, dtype=torch.float64, device=self.mean.device)
        n, total = len(batch), self.count + len(batch)
        delta = batch.mean(0) - self.mean
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + batch.var(0, unbiased=False) * n + delta ** 2 * self.count * n / total)
                       / total)
        self.count.copy_(total)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return obs
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
        self.action_dim = action_space.shape[0]
        self.normalizer = normalizer
        self.net = mlp([obs_dim, *hidden_sizes, 2 * self.action_dim])
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


# ---------------------------------------------------------------------------------------------------
# Replay buffer
# ---------------------------------------------------------------------------------------------------
class ReplayBuffer:
    """Fixed-capacity float32 ring buffer of (obs, action, reward, next_obs, terminated), sampled uniformly.

    `next_obs` is the true next observation, also when an episode was truncated, and `terminated` alone
    stops the bootstrap. The sampled batch is gathered into preallocated arrays whose torch views are
    returned, so a gradient step allocates nothing here."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, batch_size: int, seed: int,
                 device: torch.device):
        self.capacity, self.batch_size, self.device = capacity, batch_size, device
        self.columns = {"obs": np.zeros((capacity, obs_dim), np.float32),
                        "actions": np.zeros((capacity, action_dim), np.float32),
                        "rewards": np.zeros(capacity, np.float32),
                        "next_obs": np.zeros((capacity, obs_dim), np.float32),
                        "terminated": np.zeros(capacity, np.float32)}
        self.position, self.size = 0, 0
        self.rng = np.random.default_rng(seed)
        self._batch = {k: np.zeros((batch_size,) + v.shape[1:], v.dtype) for k, v in self.columns.items()}
        self._batch_tensors = [torch.from_numpy(b) for b in self._batch.values()]

    def add(self, **transitions: np.ndarray) -> None:
        """Append a batch of transitions (one per env), each keyword a column."""
        n = len(transitions["rewards"])
        index = (self.position + np.arange(n)) % self.capacity
        for name, values in transitions.items():
            self.columns[name][index] = values
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self) -> list[torch.Tensor]:
        """(obs, actions, rewards, next_obs, terminated) tensors of batch_size transitions."""
        index = self.rng.integers(0, self.size, self.batch_size)
        for name, out in self._batch.items():
            np.take(self.columns[name], index, axis=0, out=out)
        return [t.to(self.device, non_blocking=True) for t in self._batch_tensors]

    def state_dict(self) -> dict:
        """The filled part of the buffer, for checkpoints (a resumed run continues with the same replay)."""
        return {"position": self.position, "size": self.size, "rng": self.rng.bit_generator.state,
                **{name: column[:self.size].copy() for name, column in self.columns.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.position, self.size = state["position"], state["size"]
        self.rng.bit_generator.state = state["rng"]
        for name, column in self.columns.items():
            column[:self.size] = state[name]


# ---------------------------------------------------------------------------------------------------
# The agent and its update
# ---------------------------------------------------------------------------------------------------
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
    """TF-Agents' SacAgent: the actor, the twin critics and their targets, the temperature, their optimizers,
    and update(), one gradient step of each on a batch."""

    def __init__(self, obs_dim: int, action_space: gym.spaces.Box, args: Args):
        super().__init__()
        action_dim = action_space.shape[0]
        self.normalizer = ObservationNormalizer(obs_dim, enabled=args.obs_normalization == "running")
        self.actor = Actor(obs_dim, action_space, args.hidden_sizes, self.normalizer)
        self.critic = TwinCritic(obs_dim, action_dim, args.hidden_sizes, self.normalizer)
        self.target_critic = TwinCritic(obs_dim, action_dim, args.hidden_sizes, self.normalizer)
        self.target_critic.load_state_dict(self.critic.state_dict())
        self.target_critic.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(args.initial_alpha)))
        self.target_entropy = -float(action_dim)
        self.gamma, self.tau, self.autotune_alpha = args.gamma, args.tau, args.autotune_alpha
        # fused Adam: one kernel per optimizer step for all of a network's parameters
        self.optimizers = {"actor": torch.optim.Adam(self.actor.parameters(), lr=args.learning_rate, fused=True),
                           "critic": torch.optim.Adam(self.critic.parameters(), lr=args.learning_rate, fused=True),
                           "alpha": torch.optim.Adam([self.log_alpha], lr=args.learning_rate)}

    def update(self, obs, actions, rewards, next_obs, terminated) -> dict[str, torch.Tensor]:
        alpha = self.log_alpha.exp().detach()
        # critics: regress both onto the soft Bellman target of the target critics
        with torch.no_grad():
            next_actions, next_log_prob = self.actor.sample(next_obs)
            target = soft_td_target(rewards, terminated, self.target_critic(next_obs, next_actions), next_log_prob,
                                    alpha, self.gamma)
        q_values = self.critic(obs, actions)
        critic_loss = F.mse_loss(q_values, target.expand_as(q_values), reduction="none").mean(1).sum()
        self._step("critic", critic_loss)
        # actor: maximise min Q − α log π through the reparameterised action (critics frozen meanwhile)
        self.critic.requires_grad_(False)
        new_actions, log_prob = self.actor.sample(obs)
        actor_loss = (alpha * log_prob - self.critic(obs, new_actions).min(dim=0).values).mean()
        self._step("actor", actor_loss)
        self.critic.requires_grad_(True)
        if self.autotune_alpha:
            self._step("alpha", temperature_loss(self.log_alpha, log_prob.detach(), self.target_entropy))
        with torch.no_grad():  # φ̄ ← τφ + (1 − τ)φ̄
            for target_param, param in zip(self.target_critic.parameters(), self.critic.parameters()):
                target_param.lerp_(param, self.tau)
        return {"critic_loss": critic_loss, "actor_loss": actor_loss, "q_values": q_values.mean(), "alpha": alpha,
                "entropy": -log_prob.mean()}

    def _step(self, name: str, loss: torch.Tensor) -> None:
        self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers[name].step()


# ---------------------------------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------------------------------
@dataclass
class Progress:
    """The counters of a run, saved in its checkpoint so that a resumed run continues them."""
    global_step: int = 0
    gradient_steps: int = 0
    updates_owed: float = 0.0  # fractional gradient steps carried over (updates_per_step need not be whole)
    eval_curve: list = field(default_factory=list)  # [step, mean greedy return] of every evaluation
    train_seconds: float = 0.0  # of the earlier sessions of this run


def train(args: Args, run_dir: Path, device: torch.device) -> dict:
    rescale_bounds = args.obs_normalization == "bounds"
    obs_dim, action_space = probe_env(args.env_id, rescale_bounds)
    action_dim = action_space.shape[0]
    agent = SacAgent(obs_dim, action_space, args).to(device)
    buffer = make_buffer(args, obs_dim, action_dim, device)
    rng = np.random.default_rng(args.seed)  # the random actions of the initial collection
    progress = Progress()
    if args.resume:
        restore_checkpoint(args, agent, buffer, rng, progress, obs_dim, action_dim, device)
    learner = (agent, buffer, rng, progress, obs_dim, action_dim)
    print(f"run directory: {run_dir}  (device: {device})", flush=True)  # the run is under way from here

    # a resumed run goes on in the same TensorBoard run and hides what was logged after its checkpoint
    writer = SummaryWriter(str(run_dir), purge_step=progress.global_step + 1 if args.resume else None)
    if not args.resume:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
            f"|{k}|{v}|" for k, v in asdict(args).items()))
    envs = make_vector_env(args.env_id, args.num_envs, rescale_bounds)
    num_envs, start_step = args.num_envs, progress.global_step
    episode_returns, episode_lengths = np.zeros(num_envs), np.zeros(num_envs, np.int64)
    recent_returns = collections.deque(maxlen=10)  # the last 10 episodes, for the progress line
    eval_returns = np.zeros(0)
    obs, _ = envs.reset(seed=args.seed + start_step)  # a resumed run starts new episodes
    start_time = last_save = time.perf_counter()
    last_report = (start_step, start_time)  # the progress line's rate is the recent one: see below
    while progress.global_step < args.total_timesteps and not STOP:
        agent.normalizer.update(obs)
        if progress.global_step < args.learning_starts:
            actions = rng.uniform(action_space.low, action_space.high, (num_envs, action_dim)).astype(np.float32)
        else:
            with torch.no_grad():
                actions = agent.actor.sample(torch.as_tensor(obs, device=device))[0].cpu().numpy()
        envs.step_async(actions)  # the workers simulate while we learn below
        progress.global_step += num_envs
        global_step = progress.global_step

        if global_step > args.learning_starts:
            progress.updates_owed += num_envs * args.updates_per_step
        while progress.updates_owed >= 1:
            progress.updates_owed -= 1
            losses = agent.update(*buffer.sample())
            progress.gradient_steps += 1
            if progress.gradient_steps % 1_000 == 0:
                for name, value in losses.items():
                    writer.add_scalar(f"losses/{name}", value.item(), global_step)

        next_obs, rewards, terminated, truncated, info = envs.step_wait()
        real_next_obs = next_obs.copy()  # where an episode ended, next_obs already starts the next one
        episode_returns += rewards
        episode_lengths += 1
        for env in np.flatnonzero(terminated | truncated):
            real_next_obs[env] = info["final_obs"][env]
            recent_returns.append(float(episode_returns[env]))
            writer.add_scalar("charts/episodic_return", episode_returns[env], global_step)
            writer.add_scalar("charts/episodic_length", episode_lengths[env], global_step)
            episode_returns[env], episode_lengths[env] = 0.0, 0
        buffer.add(obs=obs, actions=actions, rewards=rewards, next_obs=real_next_obs, terminated=terminated)
        obs = next_obs

        if crossed(global_step, num_envs, 1_000):
            writer.add_scalar("charts/SPS", (global_step - start_step) / (time.perf_counter() - start_time),
                              global_step)
        if crossed(global_step, num_envs, args.eval_frequency) or global_step >= args.total_timesteps:
            returns_now = evaluate(agent.actor, args.env_id, args.eval_episodes, args.seed + EVAL_SEED_OFFSET,
                                   device, rescale_bounds)
            if returns_now is not None:  # None: a stop was asked for during the evaluation
                eval_returns = returns_now
                progress.eval_curve.append([global_step, float(eval_returns.mean())])
                writer.add_scalar("eval/mean_return", eval_returns.mean(), global_step)
                # steps/s since the previous line, not since the start: the random steps before learning
                # starts run many times faster and would make the ETA too short
                now = time.perf_counter()
                sps = (global_step - last_report[0]) / (now - last_report[1])
                last_report = (global_step, now)
                recent = f"{np.mean(recent_returns):8.2f}" if recent_returns else "       –"
                print(f"step {global_step:>9,} of {args.total_timesteps:,} | last 10 episodes {recent} | greedy eval "
                      f"{eval_returns.mean():8.2f} ± {eval_returns.std():6.2f} | α {agent.log_alpha.exp().item():.4f} | "
                      f"SPS {sps:,.0f} | ETA {format_duration((args.total_timesteps - global_step) / sps)}", flush=True)
        if (crossed(global_step, num_envs, args.checkpoint_frequency)
                or time.perf_counter() - last_save > 60 * args.checkpoint_minutes):
            save_checkpoint(args, run_dir, learner, start_time)
            last_save = time.perf_counter()

    if STOP:
        print(f"\nstopped by {signal.Signals(STOP.signal).name} at step {progress.global_step:,}: "
              f"saving what was learned", flush=True)
    session_seconds = time.perf_counter() - start_time
    save_checkpoint(args, run_dir, learner, start_time)
    envs.close()
    if args.capture_video and not STOP:
        record_video(agent.actor, args.env_id, args.seed + EVAL_SEED_OFFSET, run_dir / "videos", args.video_length,
                     device, rescale_bounds)
    writer.close()
    return {"global_step": progress.global_step, "sps": (progress.global_step - start_step) / session_seconds,
            "train_seconds": progress.train_seconds + session_seconds, "eval_returns": eval_returns,
            "eval_curve": progress.eval_curve, "gradient_steps": progress.gradient_steps,
            "alpha": agent.log_alpha.exp().item(), "interrupted": bool(STOP)}


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
def greedy_actions(actor: Actor, obs: np.ndarray, device: torch.device) -> np.ndarray:
    with torch.no_grad():
        return actor.greedy(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()


def evaluate(actor: Actor, env_id: str, episodes: int, seed: int, device: torch.device,
             rescale_bounds: bool) -> np.ndarray | None:
    """Undiscounted returns of `episodes` greedy episodes, one per env, stepped together in worker
    processes, or None if a stop was asked for meanwhile. The same seeds every time, so that evaluations
    during training are comparable."""
    envs = make_vector_env(env_id, episodes, rescale_bounds)
    obs, _ = envs.reset(seed=seed)
    returns, finished = np.zeros(episodes), np.zeros(episodes, np.bool_)
    while not finished.all() and not STOP:
        obs, rewards, terminated, truncated, _ = envs.step(greedy_actions(actor, obs, device))
        returns += np.where(finished, 0.0, rewards)
        finished |= terminated | truncated
    envs.close()
    return None if STOP else returns


def record_video(actor: Actor, env_id: str, seed: int, video_folder: Path, video_length: int,
                 device: torch.device, rescale_bounds: bool) -> None:
    """An mp4 of one greedy episode (headless rendering), or of its first video_length frames."""
    env = make_env(env_id, rescale_bounds, video_folder=video_folder, video_length=video_length)
    obs, _ = env.reset(seed=seed)
    done = False
    while not done and not STOP:
        obs, _, terminated, truncated, _ = env.step(greedy_actions(actor, obs[None], device)[0])
        done = terminated or truncated
    env.close()


def evaluate_checkpoint(args: Args, run_dir: Path, device: torch.device) -> dict:
    """Play a saved checkpoint, or a model file holding only the actor and what rebuilds it."""
    checkpoint = load_checkpoint(args.eval_checkpoint, device)
    rescale_bounds = checkpoint["obs_normalization"] == "bounds"
    obs_dim, action_space = probe_env(args.env_id, rescale_bounds)
    if (obs_dim, action_space.shape[0]) != (checkpoint["obs_dim"], checkpoint["action_dim"]):
        raise InputError(f"checkpoint was trained on '{checkpoint['env_id']}', whose spaces differ from "
                         f"'{args.env_id}'")
    normalizer = ObservationNormalizer(obs_dim, enabled=checkpoint["obs_normalization"] == "running")
    actor = Actor(obs_dim, action_space, tuple(checkpoint["hidden_sizes"]), normalizer).to(device)
    actor.load_state_dict(actor_state(checkpoint))
    returns = evaluate(actor, args.env_id, args.eval_episodes, args.seed + EVAL_SEED_OFFSET, device, rescale_bounds)
    if returns is None:
        raise InputError("evaluation stopped before its episodes ended")
    print(f"greedy eval of {args.eval_checkpoint} on {args.env_id}: "
          f"{returns.mean():.3f} ± {returns.std():.3f} over {args.eval_episodes} episodes")
    if args.capture_video:
        record_video(actor, args.env_id, args.seed + EVAL_SEED_OFFSET, run_dir / "videos", args.video_length,
                     device, rescale_bounds)
    step = checkpoint.get("progress", {}).get("global_step", checkpoint.get("global_step", 0))
    return {"global_step": step, "sps": 0.0, "eval_returns": returns, "eval_curve": [[step, float(returns.mean())]],
            "eval_checkpoint": args.eval_checkpoint}


def actor_state(checkpoint: dict) -> dict:
    """The actor's weights (with its observation statistics) from a training checkpoint or a model file."""
    if "actor" in checkpoint:
        return checkpoint["actor"]
    return {name[len("actor."):]: value for name, value in checkpoint["agent"].items() if name.startswith("actor.")}


# ---------------------------------------------------------------------------------------------------
# Plumbing: input checks, stopping, checkpoints and resume, run directory, summary
# ---------------------------------------------------------------------------------------------------
class InputError(Exception):
    """Bad user input: reported as one line and a non-zero exit, without a traceback."""


def check_args(args: Args) -> None:
    if args.video_length < 0:
        raise InputError(f"--video-length must be >= 0, got {args.video_length}")
    positive = ["total_timesteps", "num_envs", "eval_episodes", "eval_frequency", "checkpoint_frequency",
                "checkpoint_minutes", "num_threads", "learning_rate", "buffer_size", "batch_size",
                "updates_per_step", "initial_alpha"]
    for name in positive:
        if getattr(args, name) <= 0:
            raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.seed < 2**31 - EVAL_SEED_OFFSET - 1000:
        raise InputError(f"--seed must be in [0, {2**31 - EVAL_SEED_OFFSET - 1000}), got {args.seed}")
    if args.batch_size > args.buffer_size:
        raise InputError(f"--batch-size {args.batch_size} is larger than --buffer-size {args.buffer_size}")
    if args.learning_starts < args.batch_size:  # the buffer must hold a batch before the first update
        raise InputError(f"--learning-starts must be at least --batch-size ({args.batch_size}), "
                         f"got {args.learning_starts}")
    for name in ["gamma", "tau"]:
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise InputError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if not args.hidden_sizes or min(args.hidden_sizes) <= 0:
        raise InputError(f"--hidden-sizes must be positive widths, got {args.hidden_sizes}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA device is available")


def probe_env(env_id: str, rescale_bounds: bool) -> tuple[int, gym.spaces.Box]:
    """Make the env once in this process, to report a bad id or unsuitable spaces in one line."""
    env = make_env(env_id, rescale_bounds)
    try:
        return check_spaces(env, env_id)
    finally:
        env.close()


def make_buffer(args: Args, obs_dim: int, action_dim: int, device: torch.device) -> ReplayBuffer:
    """The replay buffer, refused up front when it would not fit in the available memory."""
    needed = args.buffer_size * (2 * obs_dim + action_dim + 2) * 4
    available = available_memory_bytes()
    if needed > available:
        raise InputError(f"--buffer-size {args.buffer_size:,} needs {needed / 1e9:.2f} GB, but only "
                         f"{available / 1e9:.2f} GB is available")
    return ReplayBuffer(args.buffer_size, obs_dim, action_dim, args.batch_size, args.seed, device)


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
    """Everything needed to continue the run exactly, replay included, written atomically (a kill during
    the write leaves the previous checkpoint whole)."""
    if not args.save_model:
        return
    agent, buffer, rng, progress, obs_dim, action_dim = learner
    train_seconds = progress.train_seconds + time.perf_counter() - session_start
    write_atomically(run_dir / f"{SCRIPT}.pt", lambda f: torch.save({
        "agent": agent.state_dict(), "optimizers": {k: o.state_dict() for k, o in agent.optimizers.items()},
        "buffer": buffer.state_dict(), "progress": {**asdict(progress), "train_seconds": train_seconds},
        "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "obs_dim": obs_dim,
        "action_dim": action_dim, "hidden_sizes": list(args.hidden_sizes), "obs_normalization": args.obs_normalization,
        "env_id": args.env_id, "args": asdict(args)}, f))


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
    if not isinstance(checkpoint, dict) or not ({"agent", "actor"} & checkpoint.keys()) or "obs_dim" not in checkpoint:
        raise InputError(f"'{path}' is not a {SCRIPT} checkpoint")
    return checkpoint


def restore_checkpoint(args: Args, agent: SacAgent, buffer: ReplayBuffer, rng, progress: Progress, obs_dim: int,
                       action_dim: int, device: torch.device) -> None:
    """Load the networks, temperature, optimizers, replay, counters and random generators of --resume."""
    checkpoint = load_checkpoint(args.resume, device)
    if (checkpoint["obs_dim"], checkpoint["action_dim"]) != (obs_dim, action_dim):
        raise InputError(f"--resume {args.resume} was trained on '{checkpoint['env_id']}', whose spaces "
                         f"differ from '{args.env_id}'")
    agent.load_state_dict(checkpoint["agent"])
    for name, optimizer in agent.optimizers.items():
        optimizer.load_state_dict(checkpoint["optimizers"][name])
    try:
        buffer.load_state_dict(checkpoint["buffer"])
    except (KeyError, ValueError) as e:
        raise InputError(f"the replay buffer in {args.resume} does not fit this run's: {e}") from None
    for name, value in checkpoint["progress"].items():
        setattr(progress, name, value)
    rng.bit_generator.state = checkpoint["rng"]
    torch.set_rng_state(checkpoint["torch_rng"])
    print(f"resumed {args.resume} at step {progress.global_step:,} ({buffer.size:,} transitions in replay)",
          flush=True)


# flags that may differ from the saved ones when a run is resumed: they change neither what was learned
# nor how the rest of the run learns
SAFE_TO_CHANGE_ON_RESUME = {"total_timesteps", "device", "num_threads", "capture_video", "video_length", "save_model",
                            "eval_episodes", "eval_frequency", "checkpoint_frequency", "checkpoint_minutes",
                            "run_root", "resume"}


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
    saved_fields = {k: tuple(v) if k == "hidden_sizes" else v for k, v in checkpoint["args"].items() if k in known}
    saved = Args(**saved_fields)
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
