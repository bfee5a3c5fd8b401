"""A short GIF for README from a video a script wrote (GitHub shows GIFs inline, not mp4s).

    python -m benchmarks.tools.gif runs/<run>/videos/agent.mp4 benchmarks/figures/pong.gif --start 0 --seconds 20
    python -m benchmarks.tools.gif runs/<run>/videos/<name>.mp4 benchmarks/figures/minitaur.gif --seconds 8 --scale 0.5
"""

import argparse
from pathlib import Path

from moviepy import VideoFileClip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path)
    parser.add_argument("gif", type=Path)
    parser.add_argument("--start", type=float, default=0.0, help="second of the video where the GIF begins")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the GIF")
    parser.add_argument("--scale", type=float, default=0.5, help="size relative to the video")
    parser.add_argument("--fps", type=float, default=15.0)
    args = parser.parse_args()
    with VideoFileClip(str(args.video)) as video:
        end = min(video.duration, args.start + args.seconds)
        video.subclipped(args.start, end).resized(args.scale).write_gif(str(args.gif), fps=args.fps, logger=None)
    print(f"wrote {args.gif} ({args.gif.stat().st_size / 1e6:.1f} MB, {end - args.start:.1f} s)")


if __name__ == "__main__":
    main()
