"""Shared by the bench scripts: the store, the fleet's inventory, RSS sampling, docs sections."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.db import Store, migrate  # noqa: E402
from app.inventory.io import parse_yaml  # noqa: E402
from app.inventory.store import upsert_instances  # noqa: E402
from app.store_partitions import maintain_store_partitions  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
STORE_DB = "dbf_bench_store"
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def store_url() -> str:
    return os.environ.get("DBFLEET_DATABASE_URL") or f"postgresql://postgres@127.0.0.1:5432/{STORE_DB}"


async def fresh_store(url: str) -> Store:
    """Create (if needed) and migrate the bench store, then empty it: each run starts clean."""
    db = url.rsplit("/", 1)[1]
    if not db.startswith("dbf_bench_"):
        raise SystemExit(f"refusing to empty store {db!r}: the bench store's name must start with dbf_bench_")
    admin = await asyncpg.connect(ADMIN)
    try:
        if not await admin.fetchval("select 1 from pg_database where datname = $1", db):
            await admin.execute(f'create database "{db}"')
    finally:
        await admin.close()
    await asyncio.to_thread(migrate, url)
    store = Store(url, pool_size=int(os.environ.get("DBFLEET_STORE__POOL_SIZE", "32")))
    async with store.raw() as conn:
        await conn.execute("truncate instances, outbox, samples, query_stats, query_texts restart identity cascade")
        await maintain_store_partitions(conn, premake_days=2, retention_days=14)
    return store


def select_inventory(path: Path, n: int) -> list[dict]:
    """The first n-2 fleet databases plus the primary/standby pair (the file's last two entries)."""
    items = yaml.safe_load(path.read_text())["instances"]
    pair = [i for i in items if i["tags"].get("pgcluster") == "repl"]
    rest = [i for i in items if i["tags"].get("pgcluster") != "repl"]
    if n - len(pair) > len(rest):
        raise SystemExit(f"{path} has {len(rest) + len(pair)} instances; asked for {n}")
    return rest[: n - len(pair)] + pair


async def import_inventory(store: Store, items: list[dict]) -> None:
    parsed = parse_yaml(yaml.safe_dump({"instances": items}))
    async with store.sessions() as session, session.begin():
        await upsert_instances(session, parsed, actor="bench")


@dataclass
class RssSampler:
    """Peak RSS of this process, sampled every 20 ms in a thread (an event loop could starve it)."""

    interval_s: float = 0.02
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def reset(self) -> None:
        self.peak = self._proc.memory_info().rss

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = psutil.virtual_memory().total / 2**30
    return (f"{os.cpu_count()} vCPU ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, asyncpg {asyncpg.__version__}, PostgreSQL 15 "
            f"(fleet clusters and store on the same machine)")


def update_doc(heading: str, key: str, body: str, intro: str = "") -> None:
    """Replace (or add) the block `key` inside section `heading` of docs/benchmarks.md.

    Only that block changes; other sections (owned by other scripts) are left as they are.
    """
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if heading not in text:
        text = text.rstrip() + f"\n\n{heading}\n\n{intro.strip()}\n\n{block}\n".replace("\n\n\n", "\n\n")
    elif start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        at = text.index(heading) + len(heading)
        nxt = text.find("\n## ", at)
        nxt = len(text) if nxt < 0 else nxt
        text = text[:nxt].rstrip() + f"\n\n{block}\n" + text[nxt:]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def now_utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
