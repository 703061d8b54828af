"""Sustained load on loopback: the service at a fixed request rate, then the ledger audited.

1. Starts the service as operators do, ``clinical-mlops serve`` (uvicorn, one process),
   on a demo workspace (made with ``clinical-mlops demo`` when missing).
2. Measures capacity briefly: ``--clients`` closed-loop clients for ``--probe-seconds``.
3. Drives it open-loop at a fixed rate (``--rate``, default ``--load`` x capacity) for
   ``--duration`` seconds from ``--clients`` client threads, each with its own keep-alive
   connection; request *i* is due at ``i / rate`` s. Latency is measured from the time a
   request was due, so queueing behind a slow answer counts (no coordinated omission).
4. Stops the service, verifies the ledger, and checks that it holds exactly one
   ``inference`` record per accepted request (by request id) and none for a failed one.

Writes the ``load`` section of docs/RELIABILITY.md with the command, machine and date.
Run: ``.venv/bin/python bench/load_bench.py --duration 300`` (about 6 minutes plus the demo
workspace the first time).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _sections import update_section
from _servers import free_port, wait_ready
from _workspace import ensure_workspace, test_rows

HERE = Path(__file__).resolve().parent
RELIABILITY = HERE.parent / "docs" / "RELIABILITY.md"
BIN = Path(sys.executable).parent


def request_bodies(path: Path) -> list[dict[str, Any]]:
    """Return one request body per locked test stay of the served release (demo patients)."""
    data = test_rows(path)
    return [
        {
            "subject_id": subject,
            "purpose": "direct_care",
            "setting": data["setting"],
            "features": features,
        }
        for subject, features in zip(data["subjects"], data["rows"], strict=True)
    ]


class Service:
    """``clinical-mlops serve`` on a free loopback port, with a fresh JWT secret."""

    def __init__(self, workspace: Path, scratch: Path):
        from clinical_mlops.serving.auth import AuthConfig

        secret = secrets.token_hex(32)
        secret_file = scratch / "jwt-secret.txt"
        secret_file.write_text(secret, encoding="utf-8")
        secret_file.chmod(0o600)
        token = AuthConfig.from_secret(secret).issue(
            subject="load.bench", roles=["clinician"], ttl_seconds=24 * 3600
        )
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                str(BIN / "clinical-mlops"),
                "serve",
                "--workspace",
                str(workspace),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--jwt-secret-file",
                str(secret_file),
            ],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        wait_ready(self.port, "/readyz", self.proc, self.headers)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown closes the ledger
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Client:
    """One keep-alive connection; ``send`` returns (status, audit_seq or None)."""

    def __init__(self, service: Service):
        self.service = service
        self.conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)

    def send(self, body: bytes) -> tuple[int, int | None]:
        try:
            self.conn.request("POST", "/v1/predict", body=body, headers=self.service.headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.service.port, timeout=30)
            return 0, None
        if response.status != 200:
            return response.status, None
        return 200, json.loads(data).get("audit_seq")


def payloads(bodies: list[dict[str, Any]], prefix: str, n: int) -> list[tuple[str, bytes]]:
    """Return ``n`` serialised requests with ids ``<prefix>-<i>``, cycling through the patients."""
    out = []
    for i in range(n):
        rid = f"{prefix}-{i}"
        out.append((rid, json.dumps(bodies[i % len(bodies)] | {"request_id": rid}).encode()))
    return out


def probe(service: Service, bodies: list[dict[str, Any]], *, clients: int, seconds: float) -> dict:
    """Closed loop: every client sends its next request as soon as the last one returns."""
    work = payloads(bodies, "probe", 200_000)
    lock = threading.Lock()
    cursor = iter(range(len(work)))
    accepted: list[str] = []
    errors = [0]
    stop_at = time.monotonic() + seconds

    def run() -> None:
        client = Client(service)
        while time.monotonic() < stop_at:
            with lock:
                i = next(cursor)
            status, _ = client.send(work[i][1])
            with lock:
                if status == 200:
                    accepted.append(work[i][0])
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=run) for _ in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return {"rps": len(accepted) / elapsed, "accepted": accepted, "errors": errors[0]}


def fixed_rate(
    service: Service, bodies: list[dict[str, Any]], *, clients: int, rate: float, seconds: float
) -> dict:
    """Open loop at ``rate`` requests/s; client ``k`` sends requests ``k, k + clients, ...``."""
    n = int(rate * seconds)
    work = payloads(bodies, "load", n)
    latency = np.full(n, np.nan)
    service_time = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int32)
    t0 = time.monotonic() + 1.0

    def run(k: int) -> None:
        client = Client(service)
        for i in range(k, n, clients):
            due = t0 + i / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            sent = time.monotonic()
            code, _ = client.send(work[i][1])
            done = time.monotonic()
            status[i] = code
            latency[i] = done - due
            service_time[i] = done - sent

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    ok = status == 200
    return {
        "requests": n,
        "accepted_ids": [work[i][0] for i in range(n) if ok[i]],
        "errors": int((~ok).sum()),
        "error_statuses": {int(c): int((status == c).sum()) for c in np.unique(status[~ok])},
        "elapsed_s": elapsed,
        "achieved_rps": n / elapsed,
        "latency_ms": {
            f"p{q:g}": float(np.nanpercentile(latency, q) * 1000) for q in (50, 90, 99, 99.9)
        }
        | {"max": float(np.nanmax(latency) * 1000)},
        "service_ms": {
            f"p{q:g}": float(np.nanpercentile(service_time, q) * 1000) for q in (50, 99)
        },
    }


def audit(workspace: Path, start: int) -> dict[str, Any]:
    """Return the ledger verification and the request ids of inference records from ``start``."""
    from clinical_mlops.ledger import Ledger
    from clinical_mlops.workspace import Workspace

    with Ledger.open(Workspace.open(workspace), create=False) as ledger:
        report = ledger.verify()
        ids: list[str] = []
        for seq in range(start, ledger.size()):
            if ledger.entry(seq).type == "inference":
                payload = ledger.read(seq).payload or {}
                ids.append(str(payload.get("request_id")))
        return {"ok": report.ok, "entries": report.entries, "problems": len(report.problems)} | {
            "ids": ids
        }


def one_per_accepted(accepted: list[str], recorded: list[str], prefix: str) -> dict[str, int]:
    """Return counts comparing accepted request ids with inference records of ``prefix``."""
    mine = [r for r in recorded if r.startswith(prefix + "-")]
    return {
        "accepted": len(accepted),
        "records": len(mine),
        "duplicates": len(mine) - len(set(mine)),
        "lost": len(set(accepted) - set(mine)),
        "orphans": len(set(mine) - set(accepted)),
    }


def render(args: argparse.Namespace, result: dict[str, Any]) -> str:
    run, lat, svc = result["run"], result["run"]["latency_ms"], result["run"]["service_ms"]
    load, probe_ = result["load_records"], result["probe_records"]
    lines = [
        f"Machine state: {args.note}",
        "",
        f"Capacity probe: {args.clients} closed-loop clients for {args.probe_seconds:g} s: "
        f"**{result['capacity_rps']:.1f} requests/s**, {result['probe_errors']} errors.",
        "",
        "| held | value |",
        "|---|---|",
        f"| target rate | {result['rate']:.1f} requests/s ({result['rate_source']}) |",
        f"| clients | {args.clients} (one keep-alive connection each) |",
        f"| duration | {run['elapsed_s']:.0f} s |",
        f"| requests sent | {run['requests']:,} |",
        f"| achieved rate | {run['achieved_rps']:.1f} requests/s |",
        f"| accepted (200) | {len(run['accepted_ids']):,} |",
        f"| errors | {run['errors']} {run['error_statuses'] or ''} |",
        f"| latency from due time p50 / p90 / p99 / p99.9 / max | "
        f"{lat['p50']:.1f} / {lat['p90']:.1f} / {lat['p99']:.1f} / {lat['p99.9']:.1f} / "
        f"{lat['max']:.1f} ms |",
        f"| service time p50 / p99 | {svc['p50']:.1f} / {svc['p99']:.1f} ms |",
        "",
        "Afterwards (service stopped):",
        "",
        "| ledger check | value |",
        "|---|---|",
        f"| `verify` | {'ok' if result['verify']['ok'] else 'FAILED'} "
        f"({result['verify']['entries']:,} entries, {result['verify']['problems']} problems) |",
        f"| inference records for the run / accepted requests | "
        f"{load['records']:,} / {load['accepted']:,} |",
        f"| records lost / duplicated / for failed requests | "
        f"{load['lost']} / {load['duplicates']} / {load['orphans']} |",
        f"| probe: records / accepted, lost, duplicated, orphans | {probe_['records']:,} / "
        f"{probe_['accepted']:,}, {probe_['lost']}, {probe_['duplicates']}, {probe_['orphans']} |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="demo workspace (made when missing)")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds at the fixed rate")
    parser.add_argument("--rate", type=float, help="requests/s (default: --load x capacity)")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of measured capacity")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--probe-seconds", type=float, default=20.0)
    parser.add_argument(
        "--note",
        default="shared development machine, other engineers' jobs running",
        help="what else ran on the machine (goes into the report)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="load-bench-"))
    workspace = (args.workspace or scratch / "workspace").resolve()
    ensure_workspace(workspace)
    bodies = request_bodies(workspace)
    from clinical_mlops.ledger import Ledger
    from clinical_mlops.workspace import Workspace

    with Ledger.open(Workspace.open(workspace), create=False) as ledger:
        start = ledger.size()
    service = Service(workspace, scratch)
    try:
        measured = probe(service, bodies, clients=args.clients, seconds=args.probe_seconds)
        rate = args.rate or args.load * measured["rps"]
        source = "given" if args.rate else f"{args.load:g} x measured capacity"
        print(f"capacity {measured['rps']:.1f} requests/s; running {rate:.1f}/s", flush=True)
        run = fixed_rate(service, bodies, clients=args.clients, rate=rate, seconds=args.duration)
    finally:
        service.stop()
    checked = audit(workspace, start)
    result = {
        "capacity_rps": measured["rps"],
        "probe_errors": measured["errors"],
        "rate": rate,
        "rate_source": source,
        "run": run,
        "verify": {k: v for k, v in checked.items() if k != "ids"},
        "load_records": one_per_accepted(run["accepted_ids"], checked["ids"], "load"),
        "probe_records": one_per_accepted(measured["accepted"], checked["ids"], "probe"),
    }
    body = render(args, result)
    print(body)
    command = "python bench/load_bench.py " + " ".join(sys.argv[1:])
    if not args.no_write:
        update_section(
            "load",
            "Sustained load on loopback",
            body,
            command=command.strip(),
            path=RELIABILITY,
        )
    held = result["load_records"]
    bad = held["lost"] or held["duplicates"] or held["orphans"] or not checked["ok"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
