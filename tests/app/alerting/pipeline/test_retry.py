import random
from datetime import timedelta

from app.alerting.config import RetryConfig
from app.alerting.pipeline.retry import backoff


def test_backoff_grows_is_jittered_and_capped():
    cfg = RetryConfig(initial="1s", max_backoff="60s")
    rng = random.Random(7)
    waits = [backoff(n, cfg, rng) for n in range(1, 12)]
    assert timedelta(seconds=0.5) <= waits[0] <= timedelta(seconds=1)
    assert timedelta(seconds=8) <= waits[4] <= timedelta(seconds=16)
    assert all(w <= timedelta(seconds=60) for w in waits)
    assert len({backoff(5, cfg, rng) for _ in range(5)}) > 1  # jitter: not all the same
