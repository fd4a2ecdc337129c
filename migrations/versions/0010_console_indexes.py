"""The console's reads without scans: a stored severity rank with the findings list's sort
indexes, and each instance's health (open findings by severity, unreachable, last good run)
kept by triggers, so the fleet overview's counts read 5,000 rows, not a million findings.

- findings.severity_rank is GENERATED ALWAYS ... STORED: every writer (the run statement in
  app/findings.py, the API's state changes, a DBA's SQL) gets it without knowing it exists.
- instance_health is kept by statement-level triggers over transition tables on findings and
  collector_runs: one grouped delta per statement, applied in instance id order. A statement
  that changes no open finding's state or severity (the usual run: last_seen bumps) writes
  nothing there and takes no lock; counters move by deltas (c = c + d), so concurrent writers
  of one instance add up instead of overwriting each other. One that does change them holds the
  instance's row until it commits: two such writers of one instance (a run and a bulk
  acknowledge) queue there, and may deadlock if each already holds a finding the other wants
  (PostgreSQL then aborts one).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 14:30:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same checks app/web/fleet.py calls "unreachable".
_UNREACHABLE = "('instance_unreachable', 'login_failed', 'credential_unavailable')"

# One signed row per changed finding (+1 new image, -1 old image), summed per instance.
_DELTA = f"""
select instance_id,
       sum(n * (state = 'open' and severity = 'critical')::int) as c,
       sum(n * (state = 'open' and severity = 'warning')::int) as w,
       sum(n * (state = 'open' and severity = 'info')::int) as i,
       sum(n * (state = 'open' and "check" in {_UNREACHABLE})::int) as u
from ({{rows}}) x
group by instance_id
having sum(n * (state = 'open' and severity = 'critical')::int) <> 0
    or sum(n * (state = 'open' and severity = 'warning')::int) <> 0
    or sum(n * (state = 'open' and severity = 'info')::int) <> 0
    or sum(n * (state = 'open' and "check" in {_UNREACHABLE})::int) <> 0
order by instance_id
"""
_NEW = 'select instance_id, state, severity, "check", 1 as n from new_rows'
_OLD = 'select instance_id, state, severity, "check", -1 as n from old_rows'
_ADD = """
insert into instance_health as h (instance_id, open_critical, open_warning, open_info, open_unreachable)
{delta}
on conflict (instance_id) do update set open_critical = h.open_critical + excluded.open_critical,
    open_warning = h.open_warning + excluded.open_warning, open_info = h.open_info + excluded.open_info,
    open_unreachable = h.open_unreachable + excluded.open_unreachable
"""

_FUNCTIONS = (f"""
create function dbfleet_health_findings() returns trigger language plpgsql as $$
begin
  if tg_op = 'INSERT' then
    {_ADD.format(delta=_DELTA.format(rows=_NEW))};
  elsif tg_op = 'UPDATE' then
    {_ADD.format(delta=_DELTA.format(rows=_NEW + ' union all ' + _OLD))};
  elsif tg_op = 'DELETE' then
    -- Update only: a cascade from a deleted instance has already taken its health row.
    update instance_health h set open_critical = h.open_critical + d.c, open_warning = h.open_warning + d.w,
           open_info = h.open_info + d.i, open_unreachable = h.open_unreachable + d.u
    from ({_DELTA.format(rows=_OLD)}) d where h.instance_id = d.instance_id;
  else  -- TRUNCATE
    update instance_health set open_critical = 0, open_warning = 0, open_info = 0, open_unreachable = 0;
  end if;
  return null;
end $$""", """
create function dbfleet_health_runs() returns trigger language plpgsql as $$
begin
  if tg_op = 'INSERT' then
    insert into instance_health as h (instance_id, last_ok)
    select instance_id, max(started_at) from new_rows where status = 'ok' group by instance_id order by instance_id
    on conflict (instance_id) do update set last_ok = greatest(h.last_ok, excluded.last_ok);
  else  -- TRUNCATE
    update instance_health set last_ok = null;
  end if;
  return null;
end $$""")

_TRIGGERS = (
    ("create trigger findings_health_insert after insert on findings referencing new table as new_rows "
     "for each statement execute function dbfleet_health_findings()"),
    ("create trigger findings_health_update after update on findings referencing old table as old_rows "
     "new table as new_rows for each statement execute function dbfleet_health_findings()"),
    ("create trigger findings_health_delete after delete on findings referencing old table as old_rows "
     "for each statement execute function dbfleet_health_findings()"),
    ("create trigger findings_health_truncate after truncate on findings "
     "for each statement execute function dbfleet_health_findings()"),
    ("create trigger collector_runs_health_insert after insert on collector_runs referencing new table as new_rows "
     "for each statement execute function dbfleet_health_runs()"),
    ("create trigger collector_runs_health_truncate after truncate on collector_runs "
     "for each statement execute function dbfleet_health_runs()"),
)

_BACKFILL = f"""
insert into instance_health (instance_id, open_critical, open_warning, open_info, open_unreachable, last_ok)
select i.id, coalesce(f.c, 0), coalesce(f.w, 0), coalesce(f.i, 0), coalesce(f.u, 0), r.last_ok
from instances i
left join (select instance_id, count(*) filter (where severity = 'critical') as c,
                  count(*) filter (where severity = 'warning') as w, count(*) filter (where severity = 'info') as i,
                  count(*) filter (where "check" in {_UNREACHABLE}) as u
           from findings where state = 'open' group by instance_id) f on f.instance_id = i.id
left join (select instance_id, max(started_at) as last_ok from collector_runs where status = 'ok'
           group by instance_id) r on r.instance_id = i.id
where f.instance_id is not null or r.instance_id is not null
"""


def upgrade() -> None:
    # Same ranks as before (app/api/findings.py); any other severity has none and sorts as it did.
    op.execute("""alter table findings add column severity_rank smallint generated always as (
                    case severity when 'critical' then 3 when 'warning' then 2 when 'info' then 1 end) stored""")
    # The findings list's sorts, each with id as its tie-break and cursor: an ordered index walk.
    # Not last_seen: every sweep moves it on every finding still seen, and an index on it would
    # turn each of those bumps from a HOT update into a new entry in every index of the table.
    # A last_seen sort reads the filtered rows (state, severity, check, instance) and sorts them.
    op.execute("create index ix_findings_severity_rank_id on findings (severity_rank, id)")
    op.execute("create index ix_findings_first_seen_id on findings (first_seen, id)")
    # The overview row's worst open finding: one probe per instance on the page.
    op.execute("create index ix_findings_open_worst on findings (instance_id, severity_rank desc, id) "
               "where state = 'open'")
    op.execute("""create table instance_health (
        instance_id integer primary key references instances (id) on delete cascade,
        open_critical integer not null default 0, open_warning integer not null default 0,
        open_info integer not null default 0, open_unreachable integer not null default 0,
        last_ok timestamptz)""")
    for statement in _FUNCTIONS + _TRIGGERS:
        op.execute(statement)
    op.execute(_BACKFILL)


def downgrade() -> None:
    for trigger, table in (("findings_health_insert", "findings"), ("findings_health_update", "findings"),
                           ("findings_health_delete", "findings"), ("findings_health_truncate", "findings"),
                           ("collector_runs_health_insert", "collector_runs"),
                           ("collector_runs_health_truncate", "collector_runs")):
        op.execute(f"drop trigger {trigger} on {table}")
    op.execute("drop function dbfleet_health_findings()")
    op.execute("drop function dbfleet_health_runs()")
    op.execute("drop table instance_health")
    for index in ("ix_findings_open_worst", "ix_findings_first_seen_id",
                  "ix_findings_severity_rank_id"):
        op.execute(f"drop index {index}")
    op.execute("alter table findings drop column severity_rank")
