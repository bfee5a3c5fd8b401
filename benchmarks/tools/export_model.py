"""A trained model for models/: the weights that play, and what rebuilds the network, from a checkpoint.

    python -m benchmarks.tools.export_model runs/<run>/dqn_atari.pt models/pong_dqn.pt
    python -m benchmarks.tools.export_model runs/<run>/sac_minitaur.pt models/minitaur_sac.pt

A dqn_atari checkpoint keeps its Q-network (not the target network, the optimizer or the replay); a
sac_minitaur checkpoint keeps its actor with its observation statistics (not the critics). The result
plays with the script's --eval-checkpoint, like the checkpoint it came from.
"""

import argparse
from pathlib import Path

import torch


def export(checkpoint: dict) -> dict:
    step = checkpoint["global_step"]
    if "q_network" in checkpoint:  # dqn_atari
        return {"q_network": checkpoint["q_network"], "env_id": checkpoint["args"]["env_id"], "global_step": step}
    if "agent" in checkpoint:  # sac_minitaur
        actor = {name.removeprefix("actor."): value for name, value in checkpoint["agent"].items()
                 if name.startswith("actor.")}
        return {"actor": actor, "obs_dim": actor["net.0.weight"].shape[1], "action_dim": actor["scale"].shape[0],
                "hidden_sizes": list(checkpoint["args"]["hidden_sizes"]),
                "env_id": checkpoint["args"]["env_id"], "global_step": step}
    raise SystemExit("error: not a dqn_atari or sac_minitaur training checkpoint")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    model = export(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, step {model['global_step']:,})")


if __name__ == "__main__":
    main()
