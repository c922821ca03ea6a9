"""CLI start-up and shell completion: how long a Tab takes with a warm cache, against `python -c pass`.

    .venv/bin/python bench/cli.py [--runs 30]

Runs each command ``--runs`` times as a child process and prints one JSON object: the median wall time and
the median CPU time (user + system of the child, steadier than wall time on a busy machine) of

- ``floor``: ``python -c pass`` (the interpreter alone),
- ``version``: ``windflow version`` (the CLI's start-up),
- ``complete``: a bash Tab on ``windflow recover <Tab>`` with a fresh completion cache (what every Tab but the
  first in 30 s costs; nothing is asked of the API),

and ``ratio`` (each over the floor). The goal is a Tab within 100 ms (``complete_wall_ms``; on a machine busy
with other work, ``complete_cpu_ms`` says what the Tab itself costs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_MS = 100.0


def measure(cmd: list[str], env: dict[str, str], runs: int, prepare=lambda: None) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``cmd`` over ``runs`` runs (after one warm-up run)."""
    subprocess.run(cmd, env=env, capture_output=True, check=False)
    walls, cpus = [], []
    for _ in range(runs):
        prepare()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, check=False)
        walls.append((time.perf_counter() - start) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
        if done.returncode != 0:
            raise SystemExit(f"{cmd} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    script = shutil.which("windflow", path=os.path.dirname(sys.executable))
    if not script:
        raise SystemExit("the windflow console script is not installed next to this Python")
    with tempfile.TemporaryDirectory() as tmp:
        api = "http://127.0.0.1:1"  # never asked: the cache is fresh
        env = {k: v for k, v in os.environ.items() if not k.startswith("WINDFLOW_")}
        env.update(XDG_CONFIG_HOME=f"{tmp}/config", XDG_CACHE_HOME=f"{tmp}/cache", WINDFLOW_API_URL=api)
        cache = Path(tmp, "cache", "windflow", "completion.json")
        cache.parent.mkdir(parents=True)
        ids = [f"service-{i:03d}" for i in range(200)]

        def warm() -> None:  # a cache written just now: fresh
            cache.write_text(json.dumps({api: {"at": time.time(), "ids": ids}}))

        warm()
        tab = {
            **env,
            "_WINDFLOW_COMPLETE": "complete_bash",
            "COMP_WORDS": "windflow recover service-1",
            "COMP_CWORD": "2",
        }
        check = subprocess.run([script], env=tab, capture_output=True, text=True, check=False)
        offered = check.stdout.split()
        if len(offered) != 100 or not all(o.startswith("service-1") for o in offered):
            raise SystemExit(f"completion did not offer the cached ids: {check.stdout[:200]!r} {check.stderr[-300:]}")
        floor = measure([sys.executable, "-c", "pass"], env, args.runs)
        version = measure([script, "version"], env, args.runs)
        complete = measure([script], tab, args.runs, prepare=warm)
    result = {
        "runs": args.runs,
        "floor_wall_ms": round(floor[0], 1),
        "floor_cpu_ms": round(floor[1], 1),
        "version_wall_ms": round(version[0], 1),
        "version_cpu_ms": round(version[1], 1),
        "complete_wall_ms": round(complete[0], 1),
        "complete_cpu_ms": round(complete[1], 1),
        "ratio": {
            "version_wall": round(version[0] / floor[0], 2),
            "complete_wall": round(complete[0] / floor[0], 2),
            "complete_cpu": round(complete[1] / max(floor[1], 0.1), 2),
        },
        "goal_complete_ms": GOAL_MS,
        "goal_met": complete[0] <= GOAL_MS,
        "goal_met_cpu": complete[1] <= GOAL_MS,  # what the Tab costs, whatever else the machine is doing
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
