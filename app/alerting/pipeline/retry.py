"""Retry stage: exponential backoff with jitter, for retryable failures only."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from app.alerting.config import RetryConfig


def backoff(attempt: int, config: RetryConfig, rng: random.Random | None = None) -> timedelta:
    """"Equal jitter": uniform in [c/2, c] with c = min(max, initial * 2^(attempt-1)), so retries
    back off for sure yet a recovering receiver is not hit by every dispatcher at the same instant."""
    ceiling = min(config.max_backoff.total_seconds(), config.initial.total_seconds() * 2 ** max(0, attempt - 1))
    return timedelta(seconds=(rng or random).uniform(ceiling / 2, ceiling))


def give_up(created_at: datetime, now: datetime, config: RetryConfig) -> bool:
    return now - created_at >= config.give_up_after
