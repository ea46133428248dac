"""Alert-to-first-step latency and receiver throughput, on loopback.

A burst of N distinct alerts (Alertmanager webhook bodies, one alert each, distinct
fingerprints) is POSTed by a few client threads over keep-alive connections to a
real ``selfdrive serve`` subprocess (waitress) in a tmp project whose one runbook
matches them all. Then the same burst goes to a bare WSGI handler on the same server
framework (waitress, same thread count) in another subprocess of this script, which
reads the body and answers 202 with a small JSON: the floor any receiver on waitress
pays. And the burst goes to a *floor runner*, also on waitress in a subprocess: per
alert one fsync'd SQLite row before the 202, then a pool of as many worker processes
as selfdrive's that each write one fsync'd step row and spawn ``bash -c true``: the
least any system that journals an alert and then runs a shell step pays here.

* alert-to-first-step latency: for each alert, the ``started_at`` of the first live
  step of the run it started (the journal's ``steps`` row; wall clock, microseconds)
  minus the client's wall-clock time just before it sent the request. It spans the
  HTTP request, the alert's journal transaction, the worker queue, planning, policy,
  the run's journal records and the first step's intent.
* receiver throughput: alerts answered per second over the burst (first send to last
  answer), against the bare handler's.

    .venv/bin/python bench/alert_latency.py                  # 1000 alerts, 4 client threads
    .venv/bin/python bench/alert_latency.py -n 200 --threads 2 --json
    .venv/bin/python bench/alert_latency.py --rate 100       # paced: 100 alerts/s in all
    .venv/bin/python bench/alert_latency.py --dir /some/disk # put the journal there
    .venv/bin/python bench/alert_latency.py --postgres       # selfdrive on a PostgreSQL journal

With ``--postgres`` selfdrive's journal is a database on a throw-away PostgreSQL
cluster this script starts on loopback (Debian's ``postgresql`` package, as the tests
use it); the bare handler and the floor runner are the same as without it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

SELFDRIVE = str(Path(sys.executable).parent / "selfdrive")
RUNBOOK = '''
from selfdrive import Context, Risk, alert, runbook


@runbook(risk=Risk.LOW, triggers=[alert("BenchAlert", params={"n": "{{ labels.n }}"})])
def bench_step(ctx: Context, n: int) -> None:
    """One cheap step per alert."""
    ctx.run("true")
'''
CONFIG = """team = "bench"
level = "L4"
entry_points = false

[guardrails]
rate_limit_per_runbook = 1000000
rate_limit_total = 1000000

[receiver]
workers = {workers}
worker_nice = {nice}
threads = {server_threads}
"""


def body(n: int, tag: str) -> bytes:
    labels = {"alertname": "BenchAlert", "n": str(n), "instance": f"host-{n}"}
    return json.dumps({
        "version": "4", "groupKey": f"{{}}:{{n=\"{n}\"}}", "status": "firing",
        "receiver": "selfdrive", "groupLabels": {"n": str(n)}, "commonLabels": labels,
        "commonAnnotations": {}, "externalURL": "http://am.example", "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                    "startsAt": "2026-11-25T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prom.example", "fingerprint": f"{tag}-{n}"}],
    }).encode()


# -- the bare handler (a subprocess of this script) ----------------------------------


def bare_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    data = environ["wsgi.input"].read(length)
    out = json.dumps({"accepted": len(data)}).encode()
    start_response("202 Accepted", [("Content-Type", "application/json"),
                                    ("Content-Length", str(len(out)))])
    return [out]


def serve_bare(threads: int) -> None:
    from waitress.server import create_server

    server = create_server(bare_app, host="127.0.0.1", port=0, threads=threads,
                           ident="bare", asyncore_use_poll=True)
    print(f"listening on http://127.0.0.1:{server.effective_port}", file=sys.stderr,
          flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.run()


# -- the floor runner (a subprocess of this script) ----------------------------------
# The least an alert-to-step system can do on this machine: one fsync'd SQLite row per
# alert before the 202, then a pool of worker processes that each write one fsync'd
# step row and spawn ``bash -c true``: no matching, no policy, no plan, no run records.

_floor_conn: sqlite3.Connection | None = None


def _floor_db(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def floor_step(n: int, path: str) -> None:
    global _floor_conn
    if _floor_conn is None:
        _floor_conn = _floor_db(path)
    conn = _floor_conn
    conn.execute("BEGIN IMMEDIATE")
    cur = conn.execute("INSERT INTO steps (n, started_at) VALUES (?, ?)", (n, time.time()))
    conn.execute("COMMIT")
    subprocess.run(["bash", "-c", "true"], check=False, stdin=subprocess.DEVNULL,
                   capture_output=True)
    conn.execute("UPDATE steps SET finished_at = ? WHERE id = ?", (time.time(), cur.lastrowid))


def serve_floor(threads: int, workers: int, path: str) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from waitress.server import create_server

    conn = _floor_db(path)
    conn.execute("CREATE TABLE alerts (id INTEGER PRIMARY KEY, body TEXT, received_at REAL)")
    conn.execute("CREATE TABLE steps (id INTEGER PRIMARY KEY, n INTEGER, started_at REAL, "
                 "finished_at REAL)")
    lock = threading.Lock()
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    for future in [pool.submit(time.sleep, 0.2) for _ in range(workers)]:
        future.result()  # every worker process started before the first alert

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(length)
        n = int(json.loads(data)["alerts"][0]["labels"]["n"])
        with lock:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO alerts (body, received_at) VALUES (?, ?)",
                         (data.decode(), time.time()))
            conn.execute("COMMIT")
        pool.submit(floor_step, n, path)
        out = json.dumps({"accepted": n}).encode()
        start_response("202 Accepted", [("Content-Type", "application/json"),
                                        ("Content-Length", str(len(out)))])
        return [out]

    server = create_server(app, host="127.0.0.1", port=0, threads=threads, ident="floor",
                           asyncore_use_poll=True)
    print(f"listening on http://127.0.0.1:{server.effective_port}", file=sys.stderr,
          flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.run()
    finally:
        pool.shutdown(wait=True, cancel_futures=False)


# -- the client --------------------------------------------------------------------


def start(cmd: list[str], cwd: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    handle = log.open("w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFDRIVE_")}
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text()
        if "listening on http://127.0.0.1:" in text:
            return proc, int(text.split("listening on http://127.0.0.1:", 1)[1].split()[0])
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise SystemExit(f"{' '.join(cmd)} did not start:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def burst(port: int, path: str, n: int, threads: int, tag: str,
          rate: float | None) -> dict[str, Any]:
    """POST n distinct alerts with ``threads`` keep-alive clients; time each one."""
    bodies = [body(i, tag) for i in range(n)]
    sent: dict[int, float] = {}
    answered: dict[int, float] = {}
    statuses: list[int] = []
    lock = threading.Lock()
    t0 = time.perf_counter() + 0.05

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(k, n, threads):
            if rate:
                pause = t0 + i / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            wall, start_t = time.time(), time.perf_counter()
            conn.request("POST", path, body=bodies[i],
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            done = time.perf_counter()
            with lock:
                sent[i] = wall
                answered[i] = done - start_t
                statuses.append(resp.status)
        conn.close()

    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    began = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    bad = [s for s in statuses if s != 202]
    if bad:
        raise SystemExit(f"{len(bad)} request(s) to {path} were not accepted: {bad[:5]}")
    return {"sent": sent, "http": sorted(answered.values()), "elapsed": elapsed,
            "throughput": n / elapsed}


SELFDRIVE_FIRST_STEPS = (
    "SELECT r.params AS params, MIN(s.started_at) AS first FROM runs r "
    "JOIN steps s ON s.run_id = r.id AND s.phase NOT LIKE 'plan:%' "
    "WHERE r.runbook = 'bench-step' GROUP BY r.id")
FLOOR_FIRST_STEPS = "SELECT n, started_at FROM steps"


def _rows(journal: Path | str, sql: str) -> list[tuple[Any, ...]]:
    if isinstance(journal, str):  # a PostgreSQL address
        import psycopg

        with psycopg.connect(journal, autocommit=True) as pg:
            return list(pg.execute(sql).fetchall())
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def first_steps(journal: Path | str, n: int, timeout: float, *, floor: bool = False
                ) -> dict[int, float]:
    """Alert number → wall time of its run's first live step, once all n exist."""
    deadline = time.monotonic() + timeout
    found: dict[int, float] = {}
    while time.monotonic() < deadline:
        rows = _rows(journal, FLOOR_FIRST_STEPS if floor else SELFDRIVE_FIRST_STEPS)
        if floor:
            found = {int(k): float(v) for k, v in rows}
        else:
            found = {json.loads(p)["n"]: datetime.fromisoformat(f).timestamp()
                     for p, f in rows}
        if len(found) >= n:
            return found
        time.sleep(0.2)
    raise SystemExit(f"only {len(found)} of {n} runs reached their first step in "
                     f"{timeout:g}s")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="alerts in the burst")
    ap.add_argument("--threads", type=int, default=4, help="client threads")
    ap.add_argument("--server-threads", type=int, default=8, help="waitress threads (both)")
    ap.add_argument("--workers", type=int, default=2, help="receiver.workers")
    ap.add_argument("--nice", type=int, default=0, help="receiver.worker_nice")
    ap.add_argument("--rate", type=float, default=None,
                    help="pace the clients to this many alerts per second in all")
    ap.add_argument("--no-match", action="store_true",
                    help="no runbook matches: the receiver journals alerts and runs nothing")
    ap.add_argument("--dir", type=Path, default=None, help="where the tmp project goes")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--postgres", action="store_true",
                    help="selfdrive's journal on a throw-away PostgreSQL cluster")
    ap.add_argument("--no-floor", action="store_true",
                    help="skip the floor runner (journal row + worker process + bash per alert)")
    ap.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--floor-server", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_server:
        serve_bare(args.server_threads)
        return
    if args.floor_server:
        serve_floor(args.server_threads, args.workers, args.floor_server)
        return

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp) / "proj"
        (root / "runbooks").mkdir(parents=True)
        (root / "runbooks" / "bench.py").write_text(
            RUNBOOK.replace('alert("BenchAlert"', 'alert("NoSuchAlert"') if args.no_match
            else RUNBOOK)
        config = CONFIG.format(workers=args.workers, server_threads=args.server_threads,
                               nice=args.nice)
        journal: Path | str = root / ".selfdrive" / "journal.db"
        if args.postgres:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            import pg_support  # the tests' throw-away cluster, stopped when this exits

            url = pg_support.server(durable=True).url(
                pg_support.fresh_database(durable=True))
            os.environ["PGPASSWORD"] = pg_support.PASSWORD
            config = f'journal = "{url}"\n' + config
            journal = url
        (root / "selfdrive.toml").write_text(config)

        bare, bare_port = start([sys.executable, __file__, "--bare-server",
                                 "--server-threads", str(args.server_threads)],
                                root, Path(tmp) / "bare.log")
        try:
            burst(bare_port, "/alerts/alertmanager", min(args.n, 100), args.threads, "warm",
                  None)
            floor = burst(bare_port, "/alerts/alertmanager", args.n, args.threads, "bare",
                          args.rate)
        finally:
            stop(bare)

        floor_steps: dict[int, float] = {}
        floor_got: dict[str, Any] = {}
        if not (args.no_floor or args.no_match):
            floor_db = Path(tmp) / "floor.db"
            runner, floor_port = start([sys.executable, __file__, "--floor-server",
                                        str(floor_db), "--server-threads",
                                        str(args.server_threads), "--workers",
                                        str(args.workers)], root, Path(tmp) / "floor.log")
            try:
                floor_got = burst(floor_port, "/alerts/alertmanager", args.n, args.threads,
                                  "floor", args.rate)
                floor_steps = first_steps(floor_db, args.n, 600, floor=True)
            finally:
                stop(runner)

        receiver, port = start([SELFDRIVE, "serve", "--port", "0"], root,
                               Path(tmp) / "serve.log")
        try:
            got = burst(port, "/alerts/alertmanager", args.n, args.threads, "bench",
                        args.rate)
            steps = {} if args.no_match else first_steps(journal, args.n, 600)
        finally:
            stop(receiver)

    latency = [(steps[i] - got["sent"][i]) * 1000 for i in range(args.n)] if steps else [0.0]
    runner = ([(floor_steps[i] - floor_got["sent"][i]) * 1000 for i in range(args.n)]
              if floor_steps else None)
    result = {
        "alerts": args.n, "client_threads": args.threads, "rate": args.rate,
        "alert_to_first_step_ms": {"p50": pct(latency, 50), "p90": pct(latency, 90),
                                   "p99": pct(latency, 99), "max": max(latency),
                                   "mean": statistics.fmean(latency)},
        "floor_alert_to_step_ms": None if runner is None else {
            "p50": pct(runner, 50), "p90": pct(runner, 90), "p99": pct(runner, 99),
            "max": max(runner), "mean": statistics.fmean(runner)},
        "floor_per_s": None if runner is None else floor_got["throughput"],
        "receiver_http_ms": {"p50": pct(got["http"], 50) * 1000,
                             "p99": pct(got["http"], 99) * 1000},
        "bare_http_ms": {"p50": pct(floor["http"], 50) * 1000,
                         "p99": pct(floor["http"], 99) * 1000},
        "receiver_per_s": got["throughput"], "bare_per_s": floor["throughput"],
        "throughput_ratio": got["throughput"] / floor["throughput"],
        "last_first_step_after_burst_s": (max(steps.values()) - max(got["sent"].values())
                                          if steps else None),
        "no_match": args.no_match, "journal": "postgresql" if args.postgres else "sqlite",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    lat, rh, bh = (result["alert_to_first_step_ms"], result["receiver_http_ms"],
                   result["bare_http_ms"])
    print(f"{args.n} distinct alerts, {args.threads} client threads, "
          f"{result['journal']} journal"
          + (f", paced at {args.rate:g}/s" if args.rate else ", as fast as they go")
          + (", matching no runbook" if args.no_match else ""))
    if not args.no_match:
        print(f"  alert → first step   p50 {lat['p50']:8.1f} ms   p90 {lat['p90']:8.1f} ms   "
              f"p99 {lat['p99']:8.1f} ms   max {lat['max']:8.1f} ms")
    if runner is not None:
        fl = result["floor_alert_to_step_ms"]
        print(f"  floor runner         p50 {fl['p50']:8.1f} ms   p90 {fl['p90']:8.1f} ms   "
              f"p99 {fl['p99']:8.1f} ms   max {fl['max']:8.1f} ms   "
              f"{result['floor_per_s']:7.0f} alerts/s")
        print(f"  selfdrive / floor    p50 {lat['p50'] / fl['p50']:.2f}×   "
              f"p99 {lat['p99'] / fl['p99']:.2f}×")
    print(f"  receiver HTTP        p50 {rh['p50']:8.2f} ms   p99 {rh['p99']:8.2f} ms   "
          f"{result['receiver_per_s']:7.0f} alerts/s")
    print(f"  bare waitress        p50 {bh['p50']:8.2f} ms   p99 {bh['p99']:8.2f} ms   "
          f"{result['bare_per_s']:7.0f} requests/s")
    print(f"  throughput ratio     {result['throughput_ratio']:.2f} (target ≥ 0.5)"
          + ("" if args.no_match else
             f"; p99 target < 50 ms: {'met' if lat['p99'] < 50 else 'NOT met'}"))


if __name__ == "__main__":
    main()
