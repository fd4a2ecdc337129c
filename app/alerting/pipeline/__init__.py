"""Notification pipeline stages, one small file each: silence → inhibit → mute (time intervals) →
dedup (notification log) → retry (backoff with jitter) → record. Pure where they can be."""
