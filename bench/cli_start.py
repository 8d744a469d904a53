"""CLI start-up: CPU seconds for `keel --help`, `keel --version` and `keel status`, beside a
minimal Typer app answering --help (the floor any Typer CLI pays) in the same run.

    python bench/cli_start.py [--repeats 7]

Each command runs as its own process; CPU is user + system time of that child (from
os.wait4), so a loaded machine inflates it less than wall time. Prints one JSON line per
command with the median, min and max over the repeats (the commands interleaved), and the
ratio to the floor. `keel status` reads a store holding the demo's 1,580 decisions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR_APP = '''
import typer
app = typer.Typer(add_completion=False)
@app.command()
def one(): """one"""
@app.command()
def two(): """two"""
app()
'''


def cpu_of(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) not in (0, 2):
        raise SystemExit(f"{' '.join(cmd)} failed")
    return usage.ru_utime + usage.ru_stime, wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="keel-cli-start-"))
    (work / "floor.py").write_text(FLOOR_APP)
    # As a user's machine has it: bytecode cached after the first run (some sandboxes set
    # PYTHONDONTWRITEBYTECODE, which makes every start compile keel from source).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(KEEL_DB=str(work / "keel.db"), COLUMNS="100")
    subprocess.run([sys.executable, "-m", "keel", "demo", "--json"], cwd=work, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    keel = [sys.executable, "-m", "keel"]
    commands = {
        "typer_floor --help": [sys.executable, str(work / "floor.py"), "--help"],
        "keel --help": [*keel, "--help"],
        "keel --version": [*keel, "--version"],
        "keel status": [*keel, "status"],
    }
    for cmd in commands.values():  # warm: bytecode written, files in the page cache
        cpu_of(cmd, work, env)
    cpu: dict[str, list[float]] = {k: [] for k in commands}
    wall: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            c, w = cpu_of(cmd, work, env)
            cpu[name].append(c)
            wall[name].append(w)
    floor = statistics.median(cpu["typer_floor --help"])
    for name in commands:
        med = statistics.median(cpu[name])
        print(json.dumps({
            "bench": "cli_start", "command": name, "cpu_s_median": round(med, 3),
            "cpu_s_min": round(min(cpu[name]), 3), "cpu_s_max": round(max(cpu[name]), 3),
            "wall_s_median": round(statistics.median(wall[name]), 3),
            "vs_typer_floor": round(med / floor, 2), "repeats": args.repeats,
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }), flush=True)


if __name__ == "__main__":
    main()
