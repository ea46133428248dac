"""One journal write and one read on SQLite and on PostgreSQL, interleaved.

A write is ``flags.set`` (a read, an upsert and a link of the audit chain in one
transaction: SQLite's ``BEGIN IMMEDIATE`` behind its file lock, PostgreSQL's advisory
lock), a read is ``flags.get``. Both journals are as shipped: SQLite in WAL mode with
``synchronous=FULL`` in a tmp folder, PostgreSQL with its defaults (fsync on) on a
throw-away loopback cluster, reached over TCP with a password. Rounds alternate the
two so that load from elsewhere falls on both.

    .venv/bin/python bench/journal_backends.py [-n 300] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import pg_support  # noqa: E402  (the tests' throw-away cluster, stopped when this exits)

from selfdrive.config.location import JournalUrl  # noqa: E402
from selfdrive.journal import Journal, open_journal  # noqa: E402


def per_call_ms(journal: Journal, n: int) -> tuple[float, float]:
    began = time.perf_counter()
    for i in range(n):
        journal.flags.set("bench", {"i": i}, actor="bench")
    write = (time.perf_counter() - began) / n * 1000
    began = time.perf_counter()
    for _ in range(n):
        journal.flags.get("bench")
    return write, (time.perf_counter() - began) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=300, help="writes (and reads) per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ["PGPASSWORD"] = pg_support.PASSWORD
    url = pg_support.server(durable=True).url(pg_support.fresh_database(durable=True))
    with tempfile.TemporaryDirectory() as tmp:
        journals = {"sqlite": open_journal(Path(tmp) / "journal.db"),
                    "postgresql": open_journal(JournalUrl.parse(url))}
        figures: dict[str, dict[str, list[float]]] = {
            name: {"write": [], "read": []} for name in journals}
        for journal in journals.values():
            per_call_ms(journal, 20)  # warm: connections, prepared statements
        for _ in range(args.rounds):
            for name, journal in journals.items():
                write, read = per_call_ms(journal, args.n)
                figures[name]["write"].append(write)
                figures[name]["read"].append(read)
        for journal in journals.values():
            journal.close()
    result = {name: {kind: statistics.median(values) for kind, values in parts.items()}
              for name, parts in figures.items()}
    result["ratio"] = {kind: result["postgresql"][kind] / result["sqlite"][kind]
                       for kind in ("write", "read")}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.rounds} rounds of {args.n} writes and {args.n} reads, medians per call")
    for name in journals:
        print(f"  {name:<11} write {result[name]['write']:7.3f} ms   "
              f"read {result[name]['read']:7.3f} ms")
    print(f"  PostgreSQL / SQLite: write {result['ratio']['write']:.2f}×, "
          f"read {result['ratio']['read']:.2f}×")


if __name__ == "__main__":
    main()
