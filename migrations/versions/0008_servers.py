"""Servers: the inventory's upper level. A server (host and port, or a cloud id) holds the database
entries (PostgreSQL databases, MySQL schema sets) that are collected; findings stay on the entries,
so their history is kept.

Every instance row is linked to its server by a trigger, whoever writes the row (import, API,
cloud discovery, the demo, a DBA's SQL): an instance still on its linked server keeps it; one
that is not (new, or its endpoint changed) joins the server with its cloud id, else the server
at its endpoint (engine family, host case-folded, port), else a new server is made for it. The
existing inventory is linked the same way, then each server takes the connection fields and tags
all its instances share.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# collectors.registry.ENGINE_FAMILY, for the store: entries of one engine family share a server.
_FUNCTIONS = ("""
create function dbfleet_engine_family(engine text) returns text language sql immutable as $$
  select case when engine in ('postgres', 'aurora-postgres') then 'postgres'
              when engine in ('mysql', 'mariadb', 'aurora-mysql') then 'mysql' else engine end $$""", """
-- An RDS ARN or an Azure resource id: what a cloud server is, whatever its endpoint.
create function dbfleet_cloud_id(cloud jsonb) returns text language sql immutable as $$
  select lower(coalesce(cloud->>'arn', cloud->>'resource_id')) $$""", """
create function dbfleet_server_name(inst instances) returns text language plpgsql as $$
declare
  base text := coalesce(inst.cloud->>'instance_id',
                        case when dbfleet_cloud_id(inst.cloud) is not null then inst.name end,
                        inst.host || ':' || inst.port);
  candidate text;
  n int := 1;
begin
  -- The instance name rules: letters, digits and _ . : -, starting with a letter or digit.
  base := left(regexp_replace(base, '[^A-Za-z0-9_.:-]', '_', 'g'), 190);
  if base !~ '^[A-Za-z0-9]' then base := 's' || base; end if;
  candidate := base;
  while exists (select 1 from servers where name = candidate) loop
    n := n + 1;
    candidate := base || '-' || n;
  end loop;
  return candidate;
end $$""", """
create function dbfleet_link_server() returns trigger language plpgsql as $$
declare
  fam text := dbfleet_engine_family(new.engine);
  cid text := dbfleet_cloud_id(new.cloud);
  found int;
begin
  if new.server_id is not null then
    select s.id into found from servers s
    where s.id = new.server_id and dbfleet_engine_family(s.engine) = fam
      and (dbfleet_cloud_id(s.cloud) = cid
           or (cid is null or dbfleet_cloud_id(s.cloud) is null) and lower(s.host) = lower(new.host) and s.port = new.port);
    if found is not null then
      -- A cloud server's identity (role, version, region) is what discovery last said of it.
      if cid is not null then
        update servers set cloud = new.cloud, updated_at = now() where id = found and cloud is distinct from new.cloud;
      end if;
      return new;
    end if;
  end if;
  -- One writer at a time makes servers, so two entries of a new server do not make two.
  perform pg_advisory_xact_lock(hashtext('dbfleet.servers'));
  if cid is not null then
    select id into found from servers where dbfleet_cloud_id(cloud) = cid order by id limit 1;
  end if;
  if found is null then
    select id into found from servers
    where dbfleet_engine_family(engine) = fam and lower(host) = lower(new.host) and port = new.port
      and (cid is null or dbfleet_cloud_id(cloud) is null)
    order by id limit 1;
    if found is not null and cid is not null then
      -- A manual server that discovery now knows: it takes the cloud identity.
      update servers set cloud = new.cloud, updated_at = now() where id = found;
    end if;
  end if;
  if found is null then
    insert into servers (name, engine, host, port, cloud, tags, "user", credential, tls_mode)
    values (dbfleet_server_name(new), new.engine, new.host, new.port,
            case when cid is null then '{}'::jsonb else new.cloud end, coalesce(new.tags, '{}'),
            coalesce(new."user", ''), new.credential, coalesce(new.tls_mode, 'prefer'))
    returning id into found;
  end if;
  new.server_id := found;
  return new;
end $$""", """
create trigger instances_link_server before insert or update of engine, host, port, cloud, server_id
on instances for each row execute function dbfleet_link_server()""")

# Each server takes what all its instances share; a field they disagree on keeps its default.
_COMMON_FIELDS = """
update servers s set
  "user" = coalesce(c.user_, ''), credential = c.credential, tls_mode = coalesce(c.tls_mode, 'prefer'),
  tags = coalesce((select jsonb_object_agg(t.key, t.value) from (
           select e.key, e.value from instances i, jsonb_each(i.tags) e where i.server_id = s.id
           group by e.key, e.value having count(*) = c.n) t), '{}'::jsonb)
from (select server_id, count(*) as n,
             case when count(distinct "user") = 1 then min("user") end as user_,
             case when count(distinct coalesce(credential, '')) = 1 then min(credential) end as credential,
             case when count(distinct tls_mode) = 1 then min(tls_mode) end as tls_mode
      from instances group by server_id) c
where c.server_id = s.id
"""


def upgrade() -> None:
    op.create_table('servers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('engine', sa.String(length=32), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('cloud', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('tags', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('databases', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('user', sa.String(length=200), server_default='', nullable=False),
    sa.Column('credential', sa.String(length=500), nullable=True),
    sa.Column('tls_mode', sa.String(length=16), server_default='prefer', nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_servers')),
    sa.UniqueConstraint('name', name=op.f('uq_servers_name'))
    )
    op.add_column('instances', sa.Column('server_id', sa.Integer(), nullable=True))
    op.add_column('instances', sa.Column('schemas', postgresql.JSONB(astext_type=sa.Text()),
                                         server_default=sa.text("'[]'::jsonb"), nullable=False))
    op.create_foreign_key(op.f('fk_instances_server_id_servers'), 'instances', 'servers', ['server_id'], ['id'],
                          ondelete='CASCADE')
    op.create_index('ix_instances_server_id', 'instances', ['server_id'])
    for statement in _FUNCTIONS:
        op.execute(statement)
    op.execute("create index ix_servers_endpoint on servers (dbfleet_engine_family(engine), lower(host), port)")
    op.execute("create index ix_servers_cloud_id on servers (dbfleet_cloud_id(cloud)) "
               "where dbfleet_cloud_id(cloud) is not null")
    # In id order, so the oldest instance of a server names it; no findings row is touched.
    op.execute("do $$ declare r record; begin for r in select id from instances order by id loop "
               "update instances set server_id = null where id = r.id; end loop; end $$")
    op.execute(_COMMON_FIELDS)
    op.alter_column('instances', 'server_id', nullable=False)


def downgrade() -> None:
    op.execute("drop trigger instances_link_server on instances")
    op.drop_index('ix_instances_server_id', table_name='instances')
    op.drop_constraint(op.f('fk_instances_server_id_servers'), 'instances', type_='foreignkey')
    op.drop_column('instances', 'schemas')
    op.drop_column('instances', 'server_id')
    op.drop_table('servers')
    for function in ("dbfleet_link_server()", "dbfleet_server_name(instances)", "dbfleet_cloud_id(jsonb)",
                     "dbfleet_engine_family(text)"):
        op.execute(f"drop function {function}")
