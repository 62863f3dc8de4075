"""graft auto against single graft fit runs, on the same seeded split, measured as a user would run them.

Each case is one command run as a child process and timed from the outside (wall clock, interpreter start-up
and imports included), with an empty feature cache; its figures are appended to ``benchmarks/auto.json``,
one record per case and kind of CPU, replacing an earlier record of both. One case per invocation, so each fits one turn of the shared CPU lock:

    flock /work/cpu.lock python benchmarks/auto.py fashion-auto-10m
    flock /work/cpu.lock python benchmarks/auto.py fashion-fit

``auto`` cases check the budget (at most 10% or 60 s over, whichever is larger); ``fit`` cases are the
baselines: ``graft fit`` with default options (``-finetune``: the finetune strategy, otherwise defaults),
stopped after :data:`FIT_LIMIT` seconds: a fit that does not finish in the 10-minute budget (and its
allowance) is not a candidate baseline, and its record says so.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = {
    "fashion": ["fashion", "--classes", "5-9", "--per-class", "100"],
    "devanagari": ["devanagari", "--per-class", "100"],
}
RESULTS = Path(__file__).with_name("auto.json")
FIT_LIMIT = 660.0  # seconds: the 10-minute budget plus its allowance


def command(case: str, out: Path) -> tuple[list[str], float | None]:
    """The graft command line of ``case`` (``DATA-auto-BUDGET``, ``DATA-fit``, ``DATA-fit-STRATEGY``) and its budget in seconds."""
    data, kind, *rest = case.split("-")
    base = [sys.executable, "-m", "graft"]
    if kind == "auto":
        from graft.auto import parse_time

        return [*base, "auto", *DATA[data], "--time", rest[0], "--out", str(out), "--json"], parse_time(rest[0])
    strategy = ["--strategy", rest[0]] if rest else []
    return [*base, "fit", *DATA[data], *strategy, "--out", str(out), "--json"], None


def main(case: str) -> None:
    with tempfile.TemporaryDirectory(prefix="graft-bench-auto-") as folder:
        out = Path(folder) / "run"
        argv, budget = command(case, out)
        env = cold_cache(Path(folder) / "home")
        tick = time.monotonic()
        try:
            done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False, timeout=None if budget else FIT_LIMIT, env=env)
        except subprocess.TimeoutExpired:
            save(
                {
                    "case": case,
                    "command": " ".join(["graft", *argv[3:]]).replace(str(out), "OUT"),
                    "finished": False,
                    "wall_seconds": FIT_LIMIT,
                }
            )
            return
        wall = time.monotonic() - tick
        if done.returncode != 0:
            raise SystemExit(f"{case}: exit {done.returncode}")
        printed = json.loads(done.stdout)
        result = printed["run"] if budget is not None else printed
        record = {
            "finished": True,
            "case": case,
            "cpu": cpu(),
            "command": " ".join(["graft", *argv[3:]]).replace(str(out), "OUT"),
            "wall_seconds": round(wall, 1),
            "test_accuracy": result["test_accuracy"],
            "test_accuracy_interval": result["test_accuracy_interval"],
            "balanced_accuracy": result["balanced_accuracy"],
            "strategy": result["strategy"],
        }
        if budget is not None:
            record |= {
                "budget_seconds": budget,
                "within_budget": wall <= budget + max(0.1 * budget, 60),
                "auto_seconds": printed["seconds"],
                "winner": next(r["name"] for r in printed["leaderboard"] if r["winner"]),
                "leaderboard": [
                    {k: r[k] for k in ("name", "epochs", "val_accuracy", "test_accuracy", "seconds", "estimated_seconds", "stopped")}
                    for r in printed["leaderboard"]
                ],
            }
    save(record)


def cold_cache(home: Path) -> dict[str, str]:
    """The environment of a case: an empty ``GRAFT_HOME`` (no features cached by an earlier case, as on a user's
    first run) that shares the built-in data sets already generated (making them is not the search's cost)."""
    from graft.paths import cache_dir

    home.mkdir()
    if (datasets := cache_dir() / "datasets").is_dir():
        (home / "datasets").symlink_to(datasets)
    return {**os.environ, "GRAFT_HOME": str(home)}


def cpu() -> str:
    """What the passes ran on: the vector extensions torch uses here, and whether the CPU computes bf16 natively."""
    import torch

    from graft.inference import native_bf16

    return f"{torch.backends.cpu.get_cpu_capability()}, {'native bf16' if native_bf16() else 'no native bf16 (fp32)'}"


def save(record: dict) -> None:
    """Append ``record`` to :data:`RESULTS`, replacing an earlier record of its case."""
    records = [  # one record per case and kind of CPU: AVX2-only and bf16 machines differ several times over
        r
        for r in (json.loads(RESULTS.read_text()) if RESULTS.is_file() else [])
        if (r["case"], r["cpu"]) != (record["case"], record["cpu"])
    ]
    RESULTS.write_text(json.dumps([*records, record], indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    for name in sys.argv[1:]:
        main(name)
