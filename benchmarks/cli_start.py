"""How long the `bionas` command takes to answer --version, --help and a command that loads the plugins.

    python benchmarks/cli_start.py [--rounds 5] [--tree DIR]

Each command runs `--rounds` times as `python -m bionas ...` in a fresh process; the
table gives the median wall seconds and the median CPU seconds (user + system of the
child). CPU seconds are what the start costs even on a machine busy with other work;
wall seconds are what a user waits on an idle one. --tree benchmarks another checkout
(its bionas/ and plugins/), e.g. an older revision unpacked with `git archive`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = [["--version"], ["--help"], ["attack", "--help"], ["plugins", "list"]]


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    tree = args.tree.resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "plugins")])}
    print(f"{tree}, {args.rounds} rounds")
    print("| command | wall s | CPU s |")
    print("|---|---|---|")
    for command in COMMANDS:
        walls, cpus = [], []
        for _ in range(args.rounds):
            cpu, wall = child_cpu(), time.perf_counter()
            subprocess.run([sys.executable, "-m", "bionas", *command], env=env, cwd=tree, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walls.append(time.perf_counter() - wall)
            cpus.append(child_cpu() - cpu)
        print(f"| bionas {' '.join(command)} | {statistics.median(walls):.2f} | {statistics.median(cpus):.2f} |")


if __name__ == "__main__":
    main()
