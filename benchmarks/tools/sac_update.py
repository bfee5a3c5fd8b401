"""Milliseconds per SAC gradient step (critics, actor, α, targets) on the CPU: eager vs torch.compile.

    python -m benchmarks.tools.sac_update                 # the Minitaur's shapes: 28 observations, 8 actions
    python -m benchmarks.tools.sac_update --threads 2 --steps 500

The update is sac_minitaur.SacAgent.update on a fixed random batch of the default size, so only the
arithmetic is timed (no env, no replay sampling). torch.compile gets the whole update, optimizer steps
included; its compile time is reported apart and not counted in the per-step figure.
"""

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import sac_minitaur


def milliseconds_per_step(update, batch: list[torch.Tensor], steps: int) -> float:
    for _ in range(20):  # warm-up: allocator, kernels, (for the compiled one) guards
        update(*batch)
    start = time.perf_counter()
    for _ in range(steps):
        update(*batch)
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the script's default is 1)")
    parser.add_argument("--steps", type=int, default=300, help="timed gradient steps per variant")
    parser.add_argument("--obs-dim", type=int, default=28)
    parser.add_argument("--action-dim", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sac_args = sac_minitaur.Args()
    batch_size, obs_dim = sac_args.batch_size, args.obs_dim
    batch = [torch.randn(batch_size, obs_dim), torch.rand(batch_size, args.action_dim) * 2 - 1,
             torch.randn(batch_size) * 0.01, torch.randn(batch_size, obs_dim), torch.zeros(batch_size)]
    space = gym.spaces.Box(-1.0, 1.0, (args.action_dim,), np.float32)
    eager = milliseconds_per_step(sac_minitaur.SacAgent(obs_dim, space, sac_args).update, batch, args.steps)
    print(f"eager:         {eager:6.2f} ms per gradient step (batch {batch_size}, {args.threads} thread(s))")
    agent = sac_minitaur.SacAgent(obs_dim, space, sac_args)
    compiled_update = torch.compile(agent.update)
    start = time.perf_counter()
    try:
        compiled_update(*batch)
    except Exception as error:  # no compiler or an unsupported op: say so, as a result
        print(f"torch.compile: failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
        return
    compile_seconds = time.perf_counter() - start
    compiled = milliseconds_per_step(compiled_update, batch, args.steps)
    print(f"torch.compile: {compiled:6.2f} ms per gradient step ({compile_seconds:.0f} s to compile), "
          f"{eager / compiled:.2f}x eager")


if __name__ == "__main__":
    main()
