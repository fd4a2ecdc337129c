"""Runs run_dispatcher in a process of its own, so a test can SIGKILL it in the middle of a send."""

import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from app.alerting.config import load_config  # noqa: E402
from app.alerting.dispatcher import run_dispatcher  # noqa: E402
from app.db import Store  # noqa: E402


async def main() -> None:
    store = Store(os.environ["DBF_AL_STORE"], pool_size=2)
    config = load_config(json.loads(os.environ["DBF_AL_CONFIG"]))
    await run_dispatcher(store, None, asyncio.Event(), config=config)


asyncio.run(main())
