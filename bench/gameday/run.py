"""Game day: a simulated fleet and incident stream that measures how self-driving selfdrive is.

    python bench/gameday/run.py --seed 7 --scenario smoke --levels none,L0,L1,L2,L3,L4,L5 --out DIR

Builds the fleet once (13 loopback hosts, each its own sshd; real services and a real
PostgreSQL; a steady load), then for each level: a fresh selfdrive project at that
level and its receiver (none for ``none``), the seeded fault schedule, the prober's
alerts, the simulated people. Scores every level from the journal and the truth file,
and writes DIR/scorecard.json, DIR/report.md, DIR/report.html (and DIR/details.json,
DIR/truth.json). Exit 0 when the day ran (whatever it measured), 2 on bad input, 1 when
the fleet or a receiver failed. Needs root. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faults
import fleet as fleet_mod
import project
import report
import scenario as scenario_mod
import score
from humans import SELFDRIVE, Approver
from prober import Prober

LEVELS = ["none", "L0", "L1", "L2", "L3", "L4", "L5"]


def log(text: str) -> None:
    print(f"[gameday {time.strftime('%H:%M:%S')}] {text}", flush=True)


class Load:
    """A steady trickle of requests through the fronts (front -> api -> cache, queue)."""

    def __init__(self, fleet: fleet_mod.Fleet, rate: float = 6.0) -> None:
        self.urls = [fleet.url(h) + "/" for h in fleet_mod.GROUPS["front"]]
        self.rate = rate
        self.ok = self.failed = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="load")

    def _loop(self) -> None:
        i = 0
        while not self.stop_event.wait(1 / self.rate):
            i += 1
            try:
                with urllib.request.urlopen(self.urls[i % len(self.urls)], timeout=1) as a:
                    a.read()
                self.ok += 1
            except OSError:
                self.failed += 1


class Receiver:
    """``selfdrive serve`` for one level's project, on a free loopback port."""

    def __init__(self, root: Path, ledger: fleet_mod.Ledger) -> None:
        self.log_path = root / "serve.log"
        self.out = self.log_path.open("w")
        self.proc = subprocess.Popen([SELFDRIVE, "serve", "--port", "0"], cwd=root,
                                     stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        ledger.add("pgids", self.proc.pid)
        deadline = time.monotonic() + 60
        marker = "listening on http://127.0.0.1:"
        while True:
            text = self.log_path.read_text()
            if marker in text:
                self.url = "http://127.0.0.1:" + text.split(marker, 1)[1].split()[0]
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise fleet_mod.FleetError(f"selfdrive serve did not start:\n{text[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers left behind, if any
        self.out.close()


class Prepared:
    """A level's project and receiver, started in the background during the level
    before it (a receiver takes seconds to start on a busy machine; it idles until then)."""

    def __init__(self, level: str, fleet: fleet_mod.Fleet) -> None:
        self.level = level
        self.root: Path | None = None
        self.receiver: Receiver | None = None
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._make, args=(fleet,), daemon=True)
        self.thread.start()

    def _make(self, fleet: fleet_mod.Fleet) -> None:
        if self.level == "none":
            return
        try:
            self.root = project.write(fleet, self.level)
            self.receiver = Receiver(self.root, fleet.ledger)
        except Exception as exc:  # re-raised where the level runs
            self.error = exc

    def get(self) -> tuple[Path | None, Receiver | None]:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.root, self.receiver


def run_level(prepared: Prepared, fleet: fleet_mod.Fleet, prober: Prober, schedule: list[Any],
              sc: scenario_mod.Scenario, seed: int, truth_dir: Path,
              then: str | None) -> dict[str, Any]:
    level = prepared.level
    holders: dict[str, subprocess.Popen[bytes]] = {}
    faults.reset(fleet, holders)
    fleet.wait_healthy(30)
    root, receiver = prepared.get()
    approver = None
    upcoming = Prepared(then, fleet) if then else None
    if receiver is not None and root is not None:
        approver = Approver(root, seed, sc.humans)
        approver.start()
    prober.attach(receiver.url if receiver else None)
    prober.wait_ticks(2)
    t0 = time.time()
    incidents = {f.id: {"fault": f, "injected_at": None, "detected_at": None,
                        "resolved_at": None, "fixed_by_hand_at": None} for f in schedule}
    fixes: list[dict[str, Any]] = []
    fixers: list[threading.Thread] = []  # people work in parallel
    pending = sorted(schedule, key=lambda f: f.at)
    deadline = t0 + sc.level_timeout
    log(f"{level}: {len(schedule)} faults" + (f", receiver {receiver.url}" if receiver else
                                              ", no automation"))
    try:
        while time.time() < deadline:
            now = time.time()
            while pending and now - t0 >= pending[0].at:
                f = pending.pop(0)
                faults.inject(fleet, f, holders)
                incidents[f.id]["injected_at"] = time.time()
            snap = prober.snapshot
            for inc in incidents.values():
                f = inc["fault"]
                if inc["injected_at"] is None or inc["resolved_at"] is not None:
                    continue
                if snap.at > inc["injected_at"]:
                    if inc["detected_at"] is None and faults.broken(fleet, f, snap):
                        inc["detected_at"] = snap.at
                    elif inc["detected_at"] is not None and faults.healed(fleet, f, snap):
                        inc["resolved_at"] = snap.at
                if (inc["resolved_at"] is None and inc["fixed_by_hand_at"] is None
                        and now >= inc["injected_at"] + f.fix_delay):
                    inc["fixed_by_hand_at"] = time.time()
                    fixers.append(threading.Thread(target=faults.fix_by_hand,
                                                   args=(fleet, f, holders), daemon=True))
                    fixers[-1].start()
                    fixes.append({"kind": "fix", "fault": f.id, "at": inc["fixed_by_hand_at"]})
            if not pending and all(i["resolved_at"] for i in incidents.values()) and (
                    approver is None or not approver.busy()):
                break
            time.sleep(0.1)
        prober.wait_ticks(2)  # the last resolutions reach the receiver
        if approver is not None:
            idle_by = time.time() + 30
            while approver.busy() and time.time() < idle_by:
                time.sleep(0.2)
    finally:
        for t in fixers:
            t.join(timeout=60)
        if approver is not None:
            approver.stop()
        prober.resolve_all()
        time.sleep(0.5)
        sent = list(prober.sent)
        if receiver is not None:
            receiver.stop()
        faults.reset(fleet, holders)
    truth = [{**i["fault"].to_json(), "injected_at": i["injected_at"]}
             for i in incidents.values()]
    (truth_dir / f"truth-{level}.json").write_text(json.dumps(truth, indent=1))
    log(f"{level}: done in {time.time() - t0:.1f}s")
    result = {"level": level, "t0": t0, "incidents": incidents, "fixes": fixes,
            "touches": approver.touches if approver else [], "sent": sent,
            "project": str(root) if root else None, "truth": truth, "next": upcoming}
    return result


def keep_journals(results: list[dict[str, Any]], folder: Path) -> None:
    """Each level's journal, copied out (SQLite's backup API) before the fleet goes."""
    import sqlite3
    folder.mkdir(parents=True, exist_ok=True)
    for r in results:
        if r["project"]:
            src = sqlite3.connect(f"file:{r['project']}/.selfdrive/journal.db?mode=ro", uri=True)
            dst = sqlite3.connect(folder / f"{r['level']}.db")
            with dst:
                src.backup(dst)
            src.close()
            dst.close()


def parse_levels(text: str) -> list[str]:
    levels = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in levels if x not in LEVELS]
    if bad or not levels or len(set(levels)) != len(levels):
        raise scenario_mod.ScenarioError(
            f"--levels: {', '.join(bad) or 'repeated or empty'}: choose from "
            f"{','.join(LEVELS)}, each once")
    return levels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scenario", default="smoke", help="smoke, full, or a scenario file")
    ap.add_argument("--levels", default=",".join(LEVELS))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--print-schedule", action="store_true",
                    help="print the seeded fault schedule as JSON and exit (no fleet)")
    args = ap.parse_args(argv)
    started = time.time()
    if args.print_schedule:  # pure: no fleet, nothing to reap
        try:
            sc = scenario_mod.load(args.scenario)
        except scenario_mod.ScenarioError as exc:
            print(f"gameday: {exc}", file=sys.stderr)
            return 2
        print(json.dumps([f.to_json() for f in scenario_mod.schedule(sc, args.seed)], indent=1))
        return 0
    try:
        with fleet_mod.exclusive():
            # whatever an earlier harness left (killed with kill -9, say) goes first,
            # whether or not this run's input is good
            left = fleet_mod.reap()
            if left:
                log(f"removed what an earlier run left ({len(left)} items): "
                    + "; ".join(left[:3]) + ("; …" if len(left) > 3 else ""))
            try:
                sc = scenario_mod.load(args.scenario)
                levels = parse_levels(args.levels)
            except scenario_mod.ScenarioError as exc:
                print(f"gameday: {exc}", file=sys.stderr)
                return 2
            return _day(args, sc, levels, scenario_mod.schedule(sc, args.seed), started)
    except fleet_mod.FleetError as exc:
        print(f"gameday: {exc}", file=sys.stderr)
        return 1


def _day(args: argparse.Namespace, sc: scenario_mod.Scenario, levels: list[str],
         plan: list[Any], started: float) -> int:
    fleet = fleet_mod.Fleet()
    prober = load = None
    try:
        log(f"building the fleet ({len(fleet_mod.HOSTS)} hosts)")
        fleet.start()
        truth_dir = fleet_mod.STATE_ROOT / "truth"  # never under a project's folder
        truth_dir.mkdir(mode=0o700)
        prober = Prober(fleet)
        prober.start()
        load = Load(fleet)
        load.thread.start()
        log(f"fleet up in {time.time() - started:.1f}s; seed {args.seed}, "
            f"scenario {sc.name}, levels {','.join(levels)}")
        results = []
        prepared = Prepared(levels[0], fleet)
        for i in range(len(levels)):
            then = levels[i + 1] if i + 1 < len(levels) else None
            results.append(run_level(prepared, fleet, prober, plan, sc, args.seed, truth_dir,
                                     then))
            prepared = results[-1].pop("next")
        scored = {r["level"]: score.level(r, sc) for r in results}
        args.out.mkdir(parents=True, exist_ok=True)
        card = {"seed": args.seed, "scenario": sc.name,
                "levels": {lv: s["card"] for lv, s in scored.items()}}
        (args.out / "scorecard.json").write_text(json.dumps(card, indent=1) + "\n")
        details = {"seed": args.seed, "scenario": sc.name, "wall_seconds":
                   round(time.time() - started, 1), "schedule": [f.to_json() for f in plan],
                   "load": {"ok": load.ok, "failed": load.failed},
                   "levels": {lv: s["details"] for lv, s in scored.items()}}
        (args.out / "details.json").write_text(json.dumps(details, indent=1) + "\n")
        (args.out / "truth.json").write_text(json.dumps(
            {r["level"]: r["truth"] for r in results}, indent=1) + "\n")
        report.write(args.out, card, details)
        keep_journals(results, args.out / "journals")
        log(f"scorecard in {args.out / 'scorecard.json'} ({time.time() - started:.0f}s)")
        return 0
    finally:
        if load is not None:
            load.stop_event.set()
        if prober is not None:
            prober.stop()
        fleet_mod.reap()


if __name__ == "__main__":
    sys.exit(main())
