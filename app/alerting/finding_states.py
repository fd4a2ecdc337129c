"""Finding state changes the alert side makes, each with its audit rows, in one statement:
silences that have run out re-open their findings, and acknowledgements from PagerDuty or Opsgenie
acknowledge the findings behind the acknowledged group. (The API makes the DBA's own changes.)"""

from __future__ import annotations

from datetime import datetime

import asyncpg

# Audit rows as the API writes them (app/api/findings.py): actor, finding.<state>, instance/check/object.
_AUDIT = """
audit as (
  insert into audit_log (at, actor, action, target, details, outcome)
  select $1, c.actor, 'finding.' || c.state, i.name || '/' || c."check" || '/' || c.object,
         jsonb_build_object('finding_id', c.id, 'from', c.before, 'note', c.state_note) || c.extra, 'ok'
  from changed c join instances i on i.id = c.instance_id
)"""

# Re-opened findings are flushed now rather than at their groups' next tick: the alert fires again
# at once. Groups are locked in key order, as ingest locks them, so two dispatchers never deadlock.
_FLUSH_NOW = """
due as (
  select g.group_key from alert_groups g
  where g.group_key in (select m.group_key from alert_group_members m join changed c using (fingerprint))
  order by g.group_key for update
), flushed as (
  update alert_groups g set next_flush_at = least(g.next_flush_at, $1) from due where g.group_key = due.group_key
)"""

_END_SILENCES = """
with changed as (
  update findings f set state = 'open', state_by = 'dbfleet', state_at = $1, state_note = 'the silence ended',
         state_until = null, state_severity = null
  where f.state = 'silenced' and f.state_until <= $1
  returning f.id, f.fingerprint, f.instance_id, f."check", f.object, f.state, f.state_note,
            'dbfleet'::text as actor, 'silenced'::text as before, '{}'::jsonb as extra
), """ + _AUDIT + "," + _FLUSH_NOW + """
select count(*) from changed
"""

# The group whose dedup key the receiver acknowledged (notification.dedup_key, worked out in SQL
# over the receiver's groups), and the open findings behind its firing alerts.
_ACKNOWLEDGE = """
with groups as (
  select group_key from alert_groups
  where receiver = $2 and 'dbfleet-' || encode(sha256(convert_to($2 || chr(31) || group_key, 'UTF8')), 'hex') = $3
), changed as (
  update findings f set state = 'acknowledged', state_by = $4, state_at = $1, state_note = $5,
         state_until = null, state_severity = f.severity
  from alert_group_members m join alerts a using (fingerprint)
  where m.group_key in (select group_key from groups) and a.status = 'firing' and f.fingerprint = a.fingerprint
    and f.state = 'open'
  returning f.id, f.fingerprint, f.instance_id, f."check", f.object, f.state, f.state_note,
            $4::text as actor, 'open'::text as before, jsonb_build_object('receiver', $2::text) as extra
), """ + _AUDIT + """
select id from changed order by id
"""


async def end_silences(conn: asyncpg.Connection, now: datetime) -> int:
    """Re-open the findings whose silence has run out; returns how many."""
    return await conn.fetchval(_END_SILENCES, now)


async def acknowledge_group(conn: asyncpg.Connection, receiver: str, dedup_key: str, who: str, note: str,
                            now: datetime) -> list[int]:
    """Acknowledge the open findings behind the receiver's group with this dedup key; their ids.
    Findings already acknowledged or silenced keep their state (and who set it)."""
    return [r["id"] for r in await conn.fetch(_ACKNOWLEDGE, now, receiver, dedup_key, who[:200], note)]
