"""Notification pipeline stages, one small file each: silence → inhibit → finding_mute (acknowledged
and silenced findings) → mute (time intervals) → dedup (notification log) → retry (backoff with
jitter) → record. Pure where they can be."""
