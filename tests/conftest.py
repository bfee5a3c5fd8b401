"""Helpers shared by the tests: run a script as a user would and find its run directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_script(script: str, *args: str, cwd: Path = ROOT, timeout: float = 300,
               env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """`python script args...` with the project root importable (as when run from a checkout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SDL_VIDEODRIVER": "dummy", **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def only_run_dir(run_root: Path) -> Path:
    """The single run directory a script created under run_root."""
    run_dirs = [p for p in run_root.iterdir() if p.is_dir()]
    assert len(run_dirs) == 1, run_dirs
    return run_dirs[0]


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    """The script refused its input as it should: exit status 2, one `error:` line holding message, no traceback."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
