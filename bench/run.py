"""`make bench`: run every benchmark module, write bench/results/<name>.json, print a table.

Each ``bench/bench_<name>.py`` exposes ``run() -> dict`` whose ``ratios`` entry maps a
measure to a ratio measured side by side in the same run (speeds against their limit,
memory against memory), and whose ``details`` hold the raw numbers behind them.
Benchmarks are not tests: they report, they do not fail on a slow machine.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(names: list[str]) -> int:
    RESULTS.mkdir(exist_ok=True)
    modules = sorted(HERE.glob("bench_*.py"))
    if names:
        modules = [m for m in modules if m.stem.removeprefix("bench_") in names]
    rows = []
    for path in modules:
        name = path.stem.removeprefix("bench_")
        print(f"== {name}", flush=True)
        started = time.time()
        result = load(path).run()
        result["machine"] = {"cpus": __import__("os").cpu_count(), "platform": platform.platform()}
        result["seconds"] = round(time.time() - started, 1)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
        for measure, value in result.get("ratios", {}).items():
            target = result.get("targets", {}).get(measure, "")
            rows.append((name, measure, value, target))
    print(f"\n{'benchmark':<12} {'measure':<48} {'ratio':>8}  target")
    for name, measure, value, target in rows:
        print(f"{name:<12} {measure:<48} {value:>8.3f}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
