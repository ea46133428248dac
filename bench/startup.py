"""Start-up time of the ``selfdrive`` CLI, against a bare ``python -c pass``.

Measures the wall time of three commands, each run N times as a fresh process:

* ``python -c pass``   — the interpreter alone (the floor every CLI call pays);
* ``selfdrive --help`` — the CLI entry point, with no subcommand imported;
* ``selfdrive list``   — config + registry: loads pydantic, the SDK and 3 runbook files,
                         in a tmp project (written here, or a copy of ``--project``).

Reports min / median / p90 in ms and each median as a ratio of ``python -c pass``.
Target: ``selfdrive --help`` under 150 ms.

    .venv/bin/python bench/startup.py [-n 20] [--project DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HELP_TARGET_MS = 150.0

CONFIG = """\
team = "bench"
level = "L1"
entry_points = false
"""

RUNBOOKS = {
    "disk.py": '''
        """Disk housekeeping."""
        from selfdrive import Context, Risk, runbook


        @runbook(risk=Risk.LOW, domain="host", tags=["disk"])
        def clean_tmp(ctx: Context, path: str, days: int = 7) -> None:
            """Delete files older than N days."""
            ctx.run("find {{ path }} -type f -mtime +{{ days }} -delete")


        @clean_tmp.verify
        def nothing_old(ctx: Context, path: str, days: int) -> bool:
            return ctx.run("find {{ path }} -type f -mtime +{{ days }} -print -quit",
                           readonly=True).stdout == ""
    ''',
    "service.py": '''
        """Service restarts."""
        from selfdrive import Context, Risk, alert, runbook


        @runbook(risk=Risk.MEDIUM, domain="web", triggers=[alert("HighLatency")])
        def restart_web(ctx: Context, unit: str = "web.service") -> None:
            """Restart the web service."""
            ctx.run("systemctl restart {{ unit }}")


        @restart_web.precondition
        def unit_exists(ctx: Context, unit: str) -> bool:
            return ctx.run("systemctl cat {{ unit }}", readonly=True).ok
    ''',
    "report.py": '''
        """A read-only report."""
        from selfdrive import Context, Risk, runbook


        @runbook(risk=Risk.READ_ONLY, tags=["report"])
        def disk_report(ctx: Context) -> None:
            """Show disk usage."""
            ctx.run("df -h", readonly=True)
    ''',
}


def write_project(root: Path) -> None:
    (root / "runbooks").mkdir(parents=True)
    (root / "selfdrive.toml").write_text(CONFIG)
    for name, source in RUNBOOKS.items():
        (root / "runbooks" / name).write_text(textwrap.dedent(source).lstrip())


def time_command(argv: list[str], cwd: Path, env: dict[str, str], n: int) -> list[float]:
    """Wall time in ms of ``n`` runs (after one warm-up run), each checked to exit 0."""
    def once() -> float:
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        took = (time.perf_counter() - start) * 1000
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace')}")
        return took

    once()
    return [once() for _ in range(n)]


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="runs per command (default 20)")
    parser.add_argument("--project", type=Path,
                        help="copy this project instead of the built-in 3-runbook one")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    python = sys.executable
    selfdrive = str(Path(python).parent / "selfdrive")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFDRIVE_")}
    env["SELFDRIVE_USER"] = "bench"
    env["PYTHONDONTWRITEBYTECODE"] = "1"

    with tempfile.TemporaryDirectory(prefix="selfdrive-bench-") as tmp:
        root = Path(tmp) / "project"
        if args.project:
            shutil.copytree(args.project, root, ignore=shutil.ignore_patterns(
                ".selfdrive", "__pycache__", ".venv", ".git"))
        else:
            write_project(root)
        commands = {
            "python -c pass": [python, "-c", "pass"],
            "selfdrive --help": [selfdrive, "--help"],
            "selfdrive list": [selfdrive, "list"],
        }
        samples = {label: time_command(argv, root, env, args.n)
                   for label, argv in commands.items()}

    base = statistics.median(samples["python -c pass"])
    rows = {label: {"min_ms": min(v), "median_ms": statistics.median(v), "p90_ms": p90(v),
                    "ratio_vs_python": statistics.median(v) / base}
            for label, v in samples.items()}
    help_ms = rows["selfdrive --help"]["median_ms"]
    if args.json:
        print(json.dumps({"n": args.n, "python": sys.version.split()[0], "results": rows,
                          "help_target_ms": HELP_TARGET_MS,
                          "help_within_target": help_ms < HELP_TARGET_MS}, indent=2))
        return
    print(f"start-up, {args.n} runs each (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpu)")
    print(f"{'command':<20}{'min':>9}{'median':>9}{'p90':>9}{'× python':>10}")
    for label, r in rows.items():
        print(f"{label:<20}{r['min_ms']:>7.1f}ms{r['median_ms']:>7.1f}ms{r['p90_ms']:>7.1f}ms"
              f"{r['ratio_vs_python']:>9.2f}×")
    verdict = "OK" if help_ms < HELP_TARGET_MS else "OVER TARGET"
    print(f"\nselfdrive --help median {help_ms:.1f} ms; target < {HELP_TARGET_MS:.0f} ms: "
          f"{verdict}")


if __name__ == "__main__":
    main()
