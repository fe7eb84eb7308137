"""Audit trail under load: chart opens through gunicorn on PostgreSQL, and verify_audit.

    .venv/bin/python bench/audit_bench.py [--requests 3000] [--events 1000000]

Creates its own PostgreSQL databases (PREFIX, PREFIX_audit, PREFIX_verify),
migrates and seeds them, then:

1. drives bounded, concurrent chart opens from 127.0.0.1 at gunicorn, once with
   the portal as shipped and once with the audit write replaced by a no-op
   (bench/unaudited_wsgi.py), and reports opens per second for each;
2. appends --trail synthetic views of the patient to the trail (never
   analysed: autovacuum is off here) and drives the audited opens once more,
   so the table shows whether an open slows down as the trail grows;
3. checks that the audit events written equal the successful audited opens
   and that verify_audit finds the chain intact;
4. writes --events synthetic chained events and times the chain verifier.

Targets (DESIGN.md): 150 audited opens/s on 2 cores, 200,000 events/s verified.
Every loop is bounded in count and time; only 127.0.0.1 is contacted.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOST = "127.0.0.1"


def main() -> None:
    options = _arguments()
    data_dir = tempfile.mkdtemp(prefix="ehr-bench-")
    names = {
        "default": options.prefix,
        "audit": f"{options.prefix}_audit",
        "verify": f"{options.prefix}_verify",
    }
    for name in names.values():
        _recreate_database(options.pg_url, name)
    try:
        _measure(options, names, data_dir)
    finally:
        # The bench leaves nothing behind on the server: a million synthetic
        # events are gigabytes nobody needs.
        for name in names.values():
            _drop_database(options.pg_url, name)
        shutil.rmtree(data_dir, ignore_errors=True)


def _measure(options, names: dict, data_dir: str) -> None:
    env = _portal_env(options.pg_url, names["default"], names["audit"], data_dir)

    _manage(env, "migrate", "--noinput", "-v0")
    _manage(env, "migrate", "--database", "audit", "--noinput", "-v0")
    seeded = json.loads(_phase(env, "seed"))

    # Rounds alternate the two servers, so that a busy moment on the machine
    # does not land on one of them only; the median round is reported.
    runs = {"audited": [], "unaudited": []}
    for _round in range(options.rounds):
        for label, application in (
            ("audited", "ehr_portal.wsgi:application"),
            ("unaudited", "bench.unaudited_wsgi:application"),
        ):
            runs[label].append(_drive(env, application, seeded, options))
    rows = [(label, *_combined(results)) for label, results in runs.items()]

    # The same opens once the patient's trail is long: what each open reads
    # of the trail (the chart's recent-access panel) must not grow with it.
    if options.trail:
        _phase(env, "trail", str(options.trail), seeded["patient"])
        label = f"audited, {options.trail:,}-event trail"
        long = _drive(env, "ehr_portal.wsgi:application", seeded, options)
        rows.append((label, *_combined([long])))

    verified = _manage(env, "verify_audit", capture=True)
    verify_env = {**env, "AUDIT_DATABASE_URL": f"{options.pg_url}/{names['verify']}"}
    _manage(verify_env, "migrate", "--database", "audit", "--noinput", "-v0")
    verify_rate = _phase(verify_env, "verify", str(options.events))

    _report(rows, verified, verify_rate, options)


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432"),
    )
    parser.add_argument("--prefix", default="ehr_i6_bench")
    parser.add_argument("--requests", type=int, default=1000, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60, help="cap per run")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--trail", type=int, default=50_000,
        help="events about the patient already in the trail for a last round",
    )  # fmt: skip
    return parser.parse_args()


def _recreate_database(pg_url: str, name: str) -> None:
    import psycopg

    _drop_database(pg_url, name)
    with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')


def _drop_database(pg_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _portal_env(pg_url: str, default: str, audit: str, data_dir: str) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DJANGO_SETTINGS_MODULE": "ehr_portal.settings",
        "PORTAL_MODE": "development",
        "PORTAL_DATA_DIR": data_dir,
        "PORTAL_LOG_LEVEL": "WARNING",
        # As in production: gunicorn's workers keep their connections.
        "PORTAL_DB_CONN_MAX_AGE": "60",
        "DATABASE_URL": f"{pg_url}/{default}",
        "AUDIT_DATABASE_URL": f"{pg_url}/{audit}",
    }


def _manage(env: dict, *args: str, capture: bool = False) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=REPO, env=env, check=True, text=True, timeout=600,
        capture_output=capture,
    )  # fmt: skip
    return result.stdout.strip() if capture else ""


def _phase(env: dict, name: str, *args: str) -> str:
    result = subprocess.run(
        [PYTHON, str(Path(__file__).with_name("_phases.py")), name, *args],
        cwd=REPO, env=env, check=True, text=True, timeout=900, capture_output=True,
    )  # fmt: skip
    return result.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _drive(env: dict, application: str, seeded: dict, options) -> tuple[dict, int]:
    """Opens per second, and the chart-view events the measured opens wrote."""
    port = _free_port()
    server = subprocess.Popen(
        [
            PYTHON, "-m", "gunicorn", application, "--bind", f"{HOST}:{port}",
            "--workers", str(options.workers), "--log-level", "warning",
        ],
        cwd=REPO, env=env,
    )  # fmt: skip
    try:
        _wait_for_port(port)
        path = f"/patients/{seeded['patient']}/"
        _open_charts(port, path, seeded["cookie"], 20, 1, 10)  # warm-up
        before = int(_phase(env, "count"))
        cpu_before = _cpu_seconds(server.pid)
        started = time.perf_counter()
        counts = _open_charts(
            port, path, seeded["cookie"], options.requests, options.clients,
            options.seconds,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        cpu_after = _cpu_seconds(server.pid)
        written = int(_phase(env, "count")) - before
    finally:
        server.terminate()
        server.wait(timeout=30)
    cpu = {
        side: (cpu_after[side] - cpu_before[side]) / max(counts["ok"], 1)
        for side in cpu_before
    }
    return {
        **counts, "seconds": elapsed, "rate": counts["ok"] / elapsed, "cpu": cpu,
    }, written  # fmt: skip


def _cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the gunicorn processes and by PostgreSQL.

    Read from /proc (Linux): per open, it says whether the portal's Python or
    the database is the side to make cheaper. Elsewhere both read zero.
    """
    totals = {"portal": 0.0, "database": 0.0}
    proc = Path("/proc")
    if not proc.is_dir():
        return totals
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        # Fields 3 and 13-14 of stat (after the name): parent, user and system time.
        parent, used = int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks
        if int(entry.name) == server_pid or parent == server_pid:
            totals["portal"] += used
        elif name.startswith("postgres"):
            totals["database"] += used
    return totals


def _combined(results: list[tuple[dict, int]]) -> tuple[dict, int]:
    rates = sorted(result["rate"] for result, _written in results)
    total = {
        key: sum(result[key] for result, _written in results)
        for key in ("ok", "failed", "seconds")
    }
    total["rate"] = rates[len(rates) // 2]
    total["cpu"] = {
        side: statistics.median(result["cpu"][side] for result, _written in results)
        for side in ("portal", "database")
    }
    return total, sum(written for _result, written in results)


def _wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not start")


def _open_charts(port, path, cookie, total, clients, seconds) -> dict:
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    share = [
        total // clients + (1 if n < total % clients else 0) for n in range(clients)
    ]

    def client(requests: int) -> None:
        for _ in range(requests):
            if time.monotonic() > deadline:
                return
            connection = http.client.HTTPConnection(HOST, port, timeout=30)
            try:
                connection.request("GET", path, headers={"Cookie": cookie})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
            finally:
                connection.close()
            with lock:
                counts["ok" if ok else "failed"] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in share]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


def _report(rows, verified: str, verify_rate: str, options) -> None:
    print()
    print(
        f"Chart opens through gunicorn ({options.workers} workers, "
        f"{options.clients} clients, {os.cpu_count()} cores), PostgreSQL"
    )
    print(f"{'run':<30} {'opens':>7} {'failed':>7} {'seconds':>8} "
          f"{'median opens/s':>15} {'events':>7} {'portal CPU':>11} "
          f"{'database CPU':>13}")  # fmt: skip
    for label, result, written in rows:
        print(
            f"{label:<30} {result['ok']:>7} {result['failed']:>7} "
            f"{result['seconds']:>8.2f} {result['rate']:>15.1f} {written:>7} "
            f"{result['cpu']['portal'] * 1e3:>8.2f} ms "
            f"{result['cpu']['database'] * 1e3:>10.2f} ms"
        )
    print("(CPU: median per successful open, gunicorn processes and PostgreSQL)")
    audited, unaudited = rows[0][1], rows[1][1]
    print(
        f"audited/unaudited rate: {audited['rate'] / unaudited['rate']:.2f} "
        f"(target: >= 150 audited opens/s; {audited['rate']:.0f} measured)"
    )
    if len(rows) > 2:
        long = rows[2][1]
        print(
            f"long trail / short trail, audited: {long['rate'] / audited['rate']:.2f}"
            " (the panel reads its own index: no slower as the trail grows)"
        )
    events_match = all(written == result["ok"] for label, result, written in rows
                       if label.startswith("audited"))  # fmt: skip
    print(
        f"audit events = successful audited opens: {events_match} "
        f"({rows[0][2]} vs {audited['ok']} in the first run)"
    )
    print(f"verify_audit after the load: {verified}")
    print(
        f"verify_audit on {options.events:,} synthetic events: "
        f"{float(verify_rate):,.0f} events/s (target: 200,000/s)"
    )
    if not events_match or "intact" not in verified:
        sys.exit(1)


if __name__ == "__main__":
    main()
