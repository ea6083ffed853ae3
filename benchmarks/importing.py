"""Item 3: importing a CSV of codes into one pool through ``robot.pools.import_codes``.

Each run happens in a child process so its peak RSS (VmHWM) is the import's own. The floor is
what this machine's crypto alone allows: an HMAC fingerprint plus an AES-256-GCM encryption
per code, in a plain loop, with no parsing and no database.

The CSV holds random synthetic codes; they are never printed.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import Result, scratch_db
from robot import audit
from robot.db import make_engine
from robot.pools import create_pool, import_codes
from robot.vault import init_key_file, open_vault

TARGETS = {"sqlite": 50_000, "postgresql": 25_000, "mysql": 25_000}
RSS_LIMIT_MB = 250


def write_csv(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("code,cost\n")
        for _ in range(count):
            fh.write(f"BN-{secrets.token_hex(8).upper()},9.90\n")


def crypto_floor(key_file: Path, count: int) -> float:
    """Codes/s for fingerprint + encrypt alone."""
    vault = open_vault(key_file)
    secrets_ = [f"BN-{secrets.token_hex(8).upper()}" for _ in range(count)]
    started = time.perf_counter()
    for i, s in enumerate(secrets_):
        fp = vault.fingerprint(s)
        vault.encrypt(s, code_id=i, pool_id=1, fingerprint=fp)
    return count / (time.perf_counter() - started)


def _hwm_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def worker(url: str, csv: Path, key_file: Path) -> None:
    """Child process: import ``csv`` into pool ``bench``; print seconds and peak RSS as JSON."""
    engine = make_engine(url)
    audit.bind(engine, key_file)  # the import's audit entry is sealed with the run's key
    vault = open_vault(key_file)
    create_pool(engine, "bench", actor="bench")
    base = _hwm_kb()
    started = time.perf_counter()
    report = import_codes(engine, vault, "bench", csv, actor="bench")
    elapsed = time.perf_counter() - started
    engine.dispose()
    print(json.dumps({"seconds": elapsed, "imported": report.imported,
                      "hwm_kb": _hwm_kb(), "hwm_before_kb": base}))


def run(backends: Sequence[str], count: int) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="robot-bench-import-") as tmp:
        root = Path(tmp)
        csv = root / "codes.csv"
        write_csv(csv, count)
        key_file = root / "robot.key"
        init_key_file(key_file)
        floor = crypto_floor(key_file, min(count, 200_000))
        for backend in backends:
            with scratch_db(backend) as db:
                out = subprocess.run(  # noqa: S603 - our own module, fixed arguments
                    [sys.executable, "-m", "benchmarks.importing", db.url, str(csv),
                     str(key_file)],
                    check=True, capture_output=True, text=True,
                )
            data = json.loads(out.stdout.strip().splitlines()[-1])
            if int(data["imported"]) != count:
                raise RuntimeError(f"import took {data['imported']} of {count} codes")
            rate = count / float(data["seconds"])
            rss_mb = int(data["hwm_kb"]) / 1024
            target = TARGETS[backend]
            results.append(Result(
                "import", backend, f"{count:,} codes, 1 pool", floor, rate, "codes/s",
                f">= {target:,}/s, RSS <= {RSS_LIMIT_MB} MB",
                rate >= target and rss_mb <= RSS_LIMIT_MB,
                f"peak RSS {rss_mb:.0f} MB (before import {int(data['hwm_before_kb']) / 1024:.0f})"
                "; floor = crypto only",
            ))
            print(f"  import {backend}: {rate:,.0f} codes/s, peak RSS {rss_mb:.0f} MB", flush=True)
    return results


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
