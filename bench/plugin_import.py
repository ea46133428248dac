"""What the `selfdrive` pytest plugin adds to every pytest session (target: under 30 ms).

The plugin is registered through the ``pytest11`` entry point, so any pytest run in an
environment with selfdrive loads it, tests about runbooks or not. Two measurements:

* ``-X importtime``: the modules ``import selfdrive.testing.plugin`` adds once pytest is
  already imported (what a session pays for the import itself);
* wall time of ``pytest --collect-only -q`` on an empty folder, N times each, with the
  plugin and with ``-p no:selfdrive`` (which blocks the entry point before it is
  imported), interleaved; the difference of the medians is the plugin's cost.

    .venv/bin/python bench/plugin_import.py            # N=20
    .venv/bin/python bench/plugin_import.py -n 40 --json
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

TARGET_MS = 30.0
HEAVY = ("pydantic", "jinja2", "paramiko", "ansible", "ansible_runner", "sqlite_utils")


def importtime(python: str) -> tuple[float, list[str]]:
    """Milliseconds the plugin's import adds after pytest, and every module it imported."""
    proc = subprocess.run([python, "-X", "importtime", "-c",
                           "import pytest; import selfdrive.testing.plugin"],
                          capture_output=True, text=True, check=True)
    rows = [line.split("|") for line in proc.stderr.splitlines()
            if line.startswith("import time:") and "self [us]" not in line]
    names = [r[2].rstrip() for r in rows]
    after = max(i for i, n in enumerate(names) if n.strip() == "pytest") + 1
    added = rows[after:]
    # Top-level lines (no indentation) carry the cumulative time of what they pulled in.
    total_us = sum(int(r[1]) for r in added if not r[2].startswith("  ", 1))
    return total_us / 1000, [r[2].strip() for r in added]


def collect(python: str, folder: Path, *extra: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    started = time.perf_counter()
    proc = subprocess.run([python, "-m", "pytest", "--collect-only", "-q", "-p",
                           "no:cacheprovider", *extra], cwd=folder, env=env,
                          capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 5):  # 5: no tests collected, as expected
        raise SystemExit(f"pytest failed:\n{proc.stdout}{proc.stderr}")
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="runs per variant (default 20)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    python = sys.executable

    import_ms, modules = importtime(python)
    heavy = [m for m in modules if m.split(".")[0] in HEAVY]
    with tempfile.TemporaryDirectory(prefix="selfdrive-bench-") as tmp:
        folder = Path(tmp)
        collect(python, folder)  # warm-up: page cache, .pyc files
        collect(python, folder, "-p", "no:selfdrive")
        on, off = [], []
        for _ in range(args.n):
            on.append(collect(python, folder))
            off.append(collect(python, folder, "-p", "no:selfdrive"))
    med_on, med_off = statistics.median(on), statistics.median(off)
    # Paired differences: each pair ran back to back, so slow spells hit both sides.
    diffs = [a - b for a, b in zip(on, off, strict=True)]
    mean = statistics.fmean(diffs)
    half = 1.96 * statistics.stdev(diffs) / len(diffs) ** 0.5
    result = {
        "import_ms": round(import_ms, 2), "modules": modules, "heavy_modules": heavy,
        "collect_with_ms": round(med_on, 1), "collect_without_ms": round(med_off, 1),
        "added_median_ms": round(statistics.median(diffs), 1),
        "added_mean_ms": round(mean, 1), "added_ci95_ms": [round(mean - half, 1),
                                                           round(mean + half, 1)],
        "runs": args.n, "target_ms": TARGET_MS,
        "within_target": mean + half < TARGET_MS and import_ms < TARGET_MS,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"import selfdrive.testing.plugin after pytest: {import_ms:.2f} ms "
          f"({len(modules)} modules: {', '.join(modules)})")
    print(f"heavy modules imported: {', '.join(heavy) or 'none'}")
    print(f"pytest --collect-only, empty folder, median of {args.n}: "
          f"{med_on:.1f} ms with the plugin, {med_off:.1f} ms with -p no:selfdrive")
    print(f"added by the plugin (paired): median {result['added_median_ms']:+.1f} ms, "
          f"mean {mean:+.1f} ms, 95% CI [{mean - half:+.1f}, {mean + half:+.1f}] ms "
          f"(target < {TARGET_MS:g} ms): "
          f"{'within target' if result['within_target'] else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
