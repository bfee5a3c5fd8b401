"""What every benchmark reports alongside its numbers: the machine, and the table itself."""

import os
import platform
from pathlib import Path


def machine() -> str:
    """CPU model, cores and Python version, for the line that says where a number was measured."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}"


def report(lines: list[str], out: Path | None) -> None:
    """Print the table and, when asked, write it to `out`."""
    table = "\n".join(lines)
    print(table)
    if out:
        out.write_text(table + "\n")
