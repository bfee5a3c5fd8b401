"""Milliseconds per dqn_atari.py gradient step (Nature CNN, Adam) on the CPU: float32 against bf16 autocast.

    python -m benchmarks.tools.update_cost                        # threads 2 and 1, batch 16/32/64, ± Double DQN
    python -m benchmarks.tools.update_cost --threads 2 --batch 32 --out update_cost.md
    python -m benchmarks.tools.update_cost --compile              # td_loss through torch.compile as well
    python -m benchmarks.tools.update_cost --merged               # s and s′ in one online forward pass as well

The update is dqn_atari.td_loss + backward + Adam on a fixed random batch of uint8 frames, so only the
arithmetic is timed (no emulator, no replay sampling): the median of --steps steps after 8 warm-up steps
(with --compile, after the compilation, which the first of them pays). --merged also times a td_loss whose online
network reads s and s′ in one forward pass of twice the batch (the Double DQN argmax taken from its second
half), so that the backward pass runs over both.
Nothing else may run on the machine meanwhile.
"""

import argparse
import itertools
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import dqn_atari
from benchmarks.tools.common import machine, report


def merged_td_loss(q_network, target_network, batch, double_dqn):
    """dqn_atari.td_loss with one online forward pass over s and s′ together (Double DQN only)."""
    obs, actions, returns, next_obs, discounts = batch
    both = q_network.prepare(torch.cat([obs, next_obs]))
    q, next_online = q_network(both).chunk(2)
    with torch.no_grad():
        next_q = target_network(both[len(obs):])
        best = next_online.argmax(dim=1, keepdim=True)  # an index: no gradient flows through it
        td_target = returns + discounts * next_q.gather(1, best).squeeze(1)
    q_taken = q.gather(1, actions.unsqueeze(1)).squeeze(1)
    return F.huber_loss(q_taken, td_target), q_taken


def milliseconds_per_update(threads: int, batch_size: int, double_dqn: bool, bf16: bool, steps: int,
                            compiled: bool, merged: bool = False) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    q_network = dqn_atari.QNetwork(6).to(memory_format=torch.channels_last)
    target_network = dqn_atari.QNetwork(6).to(memory_format=torch.channels_last)
    if bf16:  # as train() holds it
        target_network.net[:-1].to(torch.bfloat16)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=1e-4, eps=1.5e-4, fused=True)  # as train() builds it
    frames = lambda: torch.randint(0, 256, (batch_size, 4, 84, 84), dtype=torch.uint8)  # noqa: E731
    batch = [frames(), torch.randint(0, 6, (batch_size,)), torch.randn(batch_size), frames(),
             torch.full((batch_size,), 0.97)]
    td_loss = merged_td_loss if merged else dqn_atari.td_loss
    td_loss = torch.compile(td_loss) if compiled else td_loss
    times = []
    for step in range(8 + steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = td_loss(q_network, target_network, batch, double_dqn)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 8:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 16, 64])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--compile", action="store_true", help="also time td_loss through torch.compile")
    parser.add_argument("--merged", action="store_true",
                        help="also time the Double DQN update with s and s′ in one online forward pass")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()
    variants = [(bf16, compiled, merged) for compiled in [False, True][: 1 + args.compile]
                for merged in [False, True][: 1 + args.merged] for bf16 in (False, True)]
    names = [("bf16 autocast" if bf16 else "float32") + (", compiled" if compiled else "")
             + (", merged" if merged else "") for bf16, compiled, merged in variants]
    lines = [f"Machine: {machine()}; CPU bf16 instructions: {dqn_atari.bf16_is_fast(torch.device('cpu'))}", "",
             "| threads | batch | Double DQN | " + " | ".join(f"{name} (ms)" for name in names) + " | float32 / bf16 |",
             "|---:|---:|---|" + "---:|" * (len(names) + 1)]
    double_dqn_cases = [True] if args.merged else [True, False]  # the merged pass exists for Double DQN only
    for threads, batch_size, double_dqn in itertools.product(args.threads, args.batch, double_dqn_cases):
        ms = [milliseconds_per_update(threads, batch_size, double_dqn, bf16, args.steps, compiled, merged)
              for bf16, compiled, merged in variants]
        lines.append(f"| {threads} | {batch_size} | {'yes' if double_dqn else 'no'} | "
                     + " | ".join(f"{m:.1f}" for m in ms) + f" | {ms[0] / ms[1]:.2f} |")
    report(lines, args.out)


if __name__ == "__main__":
    main()
