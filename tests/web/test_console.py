"""The console in a real browser: Debian's Chromium driven by Playwright against a real `dbfleet
serve` on a loopback port, over a store of its own with findings and query stats planted through
the write path, and a real PostgreSQL database with a partitioned table for the Apply button."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright

from app.auth import Role, create_key
from app.db import Store, migrate
from app.findings import InstanceRef, record_run
from app.store_partitions import maintain_store_partitions
from collectors.spec import Finding, QueryStat, Result, Severity
from tests.conftest import create_database, drop_database, wait_for_serve

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS_QUERY = "<script>window.__dbfleet_xss = 1</script> select * from orders where id = $1"
XSS_OBJECT = 'public."<img src=x onerror=window.__dbfleet_xss=2>"'
MONTH = date.today().replace(day=1)
HOOK_SECRET = "hook-secret-" + uuid.uuid4().hex


def _month(offset: int) -> date:
    y, m = divmod(MONTH.month - 1 + offset, 12)
    return date(MONTH.year + y, m + 1, 1)


PG_SCHEMA = f"""
create table events (id bigint not null, at timestamptz not null) partition by range (at);
create table events_now partition of events for values from ('{_month(0)}') to ('{_month(1)}');
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _instance(conn, name: str, engine: str, tags: dict, dbname: str = "", port: int = 5432,
                    cloud: dict | None = None) -> int:
    return await conn.fetchval(
        "insert into instances (name, engine, host, port, dbname, \"user\", tls_mode, tags, cloud) "
        "values ($1, $2, '127.0.0.1', $5, $3, 'postgres', 'prefer', $4::text::jsonb, $6::text::jsonb) returning id",
        name, engine, dbname, json.dumps(tags), port, json.dumps(cloud or {}))


# A primary and its standby as the runs detected them, and the lag the primary reported for it.
_TOPOLOGY = """
insert into instance_topology (instance_id, role, server_id, database, upstream_host, upstream_port,
                               upstream_streaming, stream_name, read_only, reachable, checked_at)
values ($1, 'primary', 'sys-web', 'app', '', 0, false, '', false, true, now()),
       ($2, 'standby', 'sys-web', 'app', '127.0.0.1', 5432, true, 'web-pg-standby', true, true, now());
insert into samples (ts, instance_id, collector, metric, object, value)
select greatest(date_trunc('day', now()), now() - k * interval '4 minutes'), $1, 'replication',
       'replication_lag_seconds', 'web-pg-standby', 0.5 + k % 4
from generate_series(0, 11) k
"""


async def _plant(store: Store, part_db: str) -> None:
    now = datetime.now(timezone.utc)
    async with store.raw() as conn:
        await maintain_store_partitions(conn, premake_days=2, retention_days=14)
        primary = await _instance(conn, "web-pg", "postgres", {"env": "prod", "team": "core"}, part_db)
        standby = await _instance(conn, "web-pg-standby", "postgres", {"env": "prod", "team": "core"}, part_db,
                                  port=5433)
        identities, lag = _TOPOLOGY.split(";")
        await conn.execute(identities, primary, standby)
        await conn.execute(lag, primary)
        await record_run(conn, InstanceRef(standby, "web-pg-standby", "postgres", {}), "health", Result(),
                         now - timedelta(seconds=5), 1.0)
        xss = await _instance(conn, "web-xss", "postgres", {"env": "prod", "team": "pay"})
        ref = InstanceRef(xss, "web-xss", "postgres", {"env": "prod", "team": "pay"})
        findings = [
            Finding("unused_index", XSS_OBJECT, Severity.warning, "Index is never scanned",
                    {"sql": "select * from pg_stat_user_indexes where idx_scan = 0"}, "DROP INDEX CONCURRENTLY x;"),
            Finding("xid_wraparound", "app", Severity.critical, "Transaction IDs near wraparound", {"age": 1}, "VACUUM"),
            Finding("fk_without_index", "public.orders", Severity.info, "Foreign key without an index", {}, "CREATE INDEX"),
        ]
        for k in range(4):  # four intervals of history for the chart
            stat = QueryStat("q1", "app", "app", calls=10 + k, total_ms=100.0 * (k + 1), rows=5, interval_s=60,
                             text=XSS_QUERY)
            await record_run(conn, ref, "health", Result(findings=findings, query_stats=[stat]),
                             now - timedelta(minutes=40 - 10 * k), 1.0)
        clouds = [{"provider": "aws", "region": "eu-west-1", "instance_id": "web-my-0"},
                  {"provider": "azure", "region": "westeurope"}, None]
        for i in range(3):
            iid = await _instance(conn, f"web-my-{i}", "mysql", {"env": "dev", "team": "shop"}, cloud=clouds[i])
            await record_run(conn, InstanceRef(iid, f"web-my-{i}", "mysql", {}), "health", Result(
                findings=[Finding("connections_near_limit", "server", Severity.warning, "Connections near the limit",
                                  {}, "")]), now - timedelta(minutes=1), 1.0)


@pytest.fixture(scope="module")
async def console():
    """A migrated store of this module's own, planted, and `dbfleet serve` on a free loopback port."""
    tag = uuid.uuid4().hex[:8]
    store_db, part_db = f"dbf_web_store_{tag}", f"dbf_web_part_{tag}"
    url = await create_database(store_db)
    await create_database(part_db, PG_SCHEMA)
    await asyncio.to_thread(migrate, url)
    store = Store(url, pool_size=2)
    await _plant(store, part_db)
    keys = {}
    async with store.sessions() as session, session.begin():
        for role in Role:
            keys[role.name] = await create_key(session, f"web-{role.name}", role)
    ARTIFACTS.mkdir(exist_ok=True)
    config = ARTIFACTS / f"config-{tag}.yaml"  # git-ignored with the screenshots
    config.write_text(json.dumps({"console": {"proxy_sign_in": {
        "header": "X-Auth-User", "trusted_proxies": ["127.0.0.1/32"], "roles": {"web-proxy-op": "operator"}}},
        "partitions": {"policies": [
        {"instances": ["web-pg"], "table": "public.events", "interval": "1 month", "premake": 2}]},
        "alerting": {"route": {"receiver": "ops", "group_by": ["alertname", "instance"], "routes": [
            {"matchers": ['severity="critical"'], "receiver": "pager", "continue": True}]},
            "receivers": [{"type": "webhook", "name": "ops", "url": "http://127.0.0.1:9/ops",
                           "hmac_secret_ref": "env:DBFLEET_CRED_WEB_HOOK"},
                          {"type": "webhook", "name": "pager", "url": "http://127.0.0.1:9/pager"}]}}))
    port = _free_port()
    env = {**os.environ, "DBFLEET_DATABASE_URL": url, "DBFLEET_CONFIG": str(config),
           "DBFLEET_CRED_WEB_HOOK": HOOK_SECRET}
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / "serve.log").open("wb")  # a file, not a pipe: a full pipe would stall the server
    server = subprocess.Popen([str(Path(sys.executable).parent / "dbfleet"), "serve", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_for_serve(base, server, ARTIFACTS / "serve.log")
        yield {"base": base, "keys": keys, "store": store, "part_db": part_db}
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
        config.unlink(missing_ok=True)
        await store.dispose()
        await drop_database(store_db)
        await drop_database(part_db)


@pytest.fixture(scope="module")
async def browser():
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def _signed_in(browser, console, role: str, width: int = 1280, height: int = 900):
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    await page.goto(console["base"] + "/")
    assert page.url.endswith("/signin"), "pages need a session"
    await page.get_by_label("API key").fill(console["keys"][role])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(console["base"] + "/")
    return context, page


async def _shot(page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def _finding_ids(console, check: str) -> list[int]:
    async with console["store"].raw() as conn:
        return [r[0] for r in await conn.fetch("select id from findings where \"check\" = $1 order by id", check)]


async def test_sign_in_gives_a_strict_http_only_session_and_sign_out_ends_it(browser, console):
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(console["base"] + "/signin")
    await page.get_by_label("API key").fill("dbf_not-a-key")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("alert").filter(has_text="unknown or revoked API key").wait_for()
    await context.close()

    context, page = await _signed_in(browser, console, "viewer")
    cookie, = [c for c in await context.cookies() if c["name"] == "dbfleet_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]  # plain http here
    assert cookie["value"] not in (console["keys"]["viewer"],)
    async with console["store"].raw() as conn:
        hashes = [r[0] for r in await conn.fetch("select token_hash from web_sessions")]
        assert cookie["value"] not in hashes, "the store keeps the token's hash, not the token"
        before = len(hashes)
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/signin")
    async with console["store"].raw() as conn:
        assert await conn.fetchval("select count(*) from web_sessions") == before - 1
    # The old token is dead on the server even if the browser kept it.
    await context.add_cookies([{**cookie}])
    await page.goto(console["base"] + "/findings")
    assert page.url.endswith("/signin")
    await context.close()


async def test_revoking_the_key_ends_its_console_sessions(browser, console):
    async with console["store"].sessions() as session, session.begin():
        key = await create_key(session, "web-short-lived", Role.operator)
    console["keys"]["short-lived"] = key
    context, page = await _signed_in(browser, console, "short-lived")
    async with console["store"].raw() as conn:
        await conn.execute("update api_keys set revoked_at = now() where name = 'web-short-lived'")
    await page.goto(console["base"] + "/findings")
    assert page.url.endswith("/signin")
    await context.close()

async def test_every_page_opens_and_is_screenshotted(browser, console):
    context, page = await _signed_in(browser, console, "admin")
    counts = page.get_by_label("Fleet counts")
    assert "1 critical" in " ".join((await counts.inner_text()).split())
    assert "3 warning" in " ".join((await counts.inner_text()).split())
    # web-pg never ran, web-xss's last run is 10 minutes old: both past 3 intervals of the 60 s health check.
    assert "2 stale" in " ".join((await counts.inner_text()).split())
    await _shot(page, "fleet")
    await page.get_by_label("Engine").select_option("mysql")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url("**engine=mysql**")
    names = await page.locator("table.grid tbody td:first-child").all_inner_texts()
    assert names == ["web-my-0", "web-my-1", "web-my-2"]
    await page.get_by_label("Name").fill("my-1")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url("**q=my-1**")
    assert await page.locator("table.grid tbody td:first-child").all_inner_texts() == ["web-my-1"]

    for path, name in [("/findings", "findings"), (f"/findings/{(await _finding_ids(console, 'unused_index'))[0]}",
                                                     "finding"),
                       ("/instances/web-xss", "instance"), ("/instances/web-pg/partitions", "partitions"),
                       ("/alerts", "alerts"), ("/audit", "audit")]:
        response = await page.goto(console["base"] + path)
        assert response.status == 200, path
        await page.locator("h1").wait_for()
        await _shot(page, name)
        html = await page.content()
        assert not [s for s in [HOOK_SECRET, *console["keys"].values()] if s in html], f"a secret on {path}"
    await context.close()
    phone, page = await _signed_in(browser, console, "viewer", width=390, height=844)
    await page.goto(console["base"] + "/findings")
    await _shot(page, "findings-phone")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390 + 1, "no sideways scroll of the page"
    await phone.close()


async def test_query_texts_and_object_names_render_as_text(browser, console):
    context, page = await _signed_in(browser, console, "viewer")
    await page.goto(console["base"] + "/instances/web-xss")
    await page.locator("td.sql code").filter(has_text="<script>window.__dbfleet_xss = 1</script>").wait_for()
    await page.locator("td.obj").filter(has_text="<img src=x").wait_for()
    await page.wait_for_function("document.querySelector('.chart canvas') !== null")  # uPlot drew the history
    await page.goto(console["base"] + "/findings")
    await page.locator("td.obj").filter(has_text="<img src=x").wait_for()
    assert await page.evaluate("window.__dbfleet_xss") is None
    assert await page.locator("main script, main img").count() == 0
    await context.close()


async def test_operator_filters_acknowledges_and_silences(browser, console):
    context, page = await _signed_in(browser, console, "operator")
    await page.goto(console["base"] + "/findings")
    await page.evaluate("window.__same_page = true")
    await page.get_by_label("Check").select_option("connections_near_limit")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url("**check=connections_near_limit**")
    await page.locator("#results td.check").first.filter(has_text="connections_near_limit").wait_for()
    assert await page.evaluate("window.__same_page") is True, "htmx swapped the results in, no full reload"
    rows = page.locator("#results table.grid tbody tr")
    assert await rows.count() == 3
    assert set(await page.locator("#results td.check").all_inner_texts()) == {"connections_near_limit"}

    first, second = (await _finding_ids(console, "connections_near_limit"))[:2]
    await page.get_by_label(f"select finding {first}").check()
    await page.get_by_label("Action").select_option("acknowledge")
    await page.get_by_label("Note").fill("looking at the pool")
    await page.get_by_role("button", name="Apply to selected").click()
    await page.get_by_role("status").filter(has_text="acknowledge: 1 done").wait_for()

    await page.get_by_label(f"select finding {second}").check()
    await page.get_by_label("Action").select_option("silence")
    await page.get_by_label("Silence for").fill("4h")
    await page.get_by_role("button", name="Apply to selected").click()
    await page.get_by_role("status").filter(has_text="silence: 1 done").wait_for()
    async with console["store"].raw() as conn:
        rows = {r["id"]: r for r in await conn.fetch(
            "select id, state, state_by, state_note, state_until from findings where id = any($1)", [first, second])}
    assert (rows[first]["state"], rows[first]["state_by"], rows[first]["state_note"]) == \
        ("acknowledged", "web-operator", "looking at the pool")
    until = rows[second]["state_until"] - datetime.now(timezone.utc)
    assert rows[second]["state"] == "silenced" and timedelta(hours=3, minutes=59) < until <= timedelta(hours=4)

    await page.goto(console["base"] + f"/findings/{first}")
    history = page.locator("table.grid").last
    await history.filter(has_text="web-operator").wait_for()
    assert "open → acknowledged" in await history.inner_text()
    await _shot(page, "finding-history")

    third = (await _finding_ids(console, "connections_near_limit"))[2]
    await page.goto(console["base"] + f"/findings/{third}")
    await page.get_by_label("Action").select_option("resolve")
    await page.get_by_label("Note").fill("pool resized")
    await page.get_by_role("button", name="Change").click()
    await page.get_by_role("status").filter(has_text="resolve: 1 done").wait_for()
    assert "open → resolved" in await page.locator("table.grid").last.inner_text()
    await context.close()


async def test_viewer_sees_no_action_and_the_server_refuses_one(browser, console):
    context, page = await _signed_in(browser, console, "viewer")
    await page.goto(console["base"] + "/findings")
    assert await page.get_by_role("button", name="Apply to selected").count() == 0
    await page.goto(console["base"] + "/instances/web-pg/partitions")
    await page.locator("pre.ddl").first.wait_for()
    assert await page.get_by_role("button", name="Apply").count() == 0
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    ids = await _finding_ids(console, "xid_wraparound")
    refused = await context.request.post(console["base"] + "/findings/change", form={
        "csrf": csrf, "action": "resolve", "ids": str(ids[0])}, max_redirects=0)
    assert refused.status == 403
    refused = await context.request.post(console["base"] + "/instances/web-pg/partitions/apply",
                                         form={"csrf": csrf, "confirm": "yes"}, max_redirects=0)
    assert refused.status == 403
    async with console["store"].raw() as conn:
        assert await conn.fetchval("select state from findings where id = $1", ids[0]) == "open"
        assert await conn.fetchval("select count(*) from audit_log where action = 'partitions.apply'") == 0
    await context.close()


async def test_a_form_without_the_sessions_csrf_token_is_refused(browser, console):
    context, page = await _signed_in(browser, console, "admin")
    ids = await _finding_ids(console, "xid_wraparound")
    refused = await context.request.post(console["base"] + "/findings/change", form={
        "csrf": "forged", "action": "resolve", "ids": str(ids[0])}, max_redirects=0)
    assert refused.status == 403
    async with console["store"].raw() as conn:
        assert await conn.fetchval("select state from findings where id = $1", ids[0]) == "open"
    await context.close()


async def test_admin_applies_the_partition_plan_after_reading_the_ddl(browser, console):
    context, page = await _signed_in(browser, console, "admin")
    await page.goto(console["base"] + "/instances/web-pg/partitions")
    ddl = [t.strip() for t in await page.locator("pre.ddl").all_inner_texts()]
    assert len(ddl) == 2 and all(s.startswith("CREATE TABLE") for s in ddl)
    asked = []
    page.on("dialog", lambda d: (asked.append(d.message), asyncio.ensure_future(d.accept())))
    await page.get_by_label("I have read the statements above").check()
    await page.get_by_role("button", name="Apply").click()
    await page.get_by_role("heading", name="Applied").wait_for()
    assert asked and "Run 2 statement(s) on web-pg" in asked[0]
    assert await page.locator("table.grid tbody td:first-child").all_inner_texts() == ["ok", "ok"]
    await _shot(page, "partitions-applied")
    async with console["store"].raw() as conn:
        audited = [r[0] for r in await conn.fetch(
            "select details->>'sql' from audit_log where action = 'partitions.apply' and actor = 'web-admin' "
            "order by id")]
    assert audited == ddl
    await context.close()


async def test_operator_tests_a_route_and_creates_then_expires_a_silence(browser, console):
    context, page = await _signed_in(browser, console, "operator")
    await page.goto(console["base"] + "/alerts")
    await page.get_by_label("Labels").fill("alertname=xid_wraparound severity=critical instance=web-xss")
    await page.get_by_role("button", name="Test route").click()
    reached = page.get_by_label("Receivers reached")
    await reached.wait_for()
    assert [t.split()[0] for t in await reached.locator("li").all_inner_texts()] == ["pager"]
    await page.get_by_label("Labels").fill("alertname=connections_near_limit severity=warning instance=web-my-0")
    await page.get_by_role("button", name="Test route").click()
    await page.wait_for_url("**severity%3Dwarning**")
    assert [t.split()[0] for t in await reached.locator("li").all_inner_texts()] == ["ops"], "the root catches it"

    await page.get_by_label("Matchers, one a line").fill("instance=web-xss")
    await page.get_by_label("For", exact=True).fill("2h")
    await page.get_by_label("Comment").fill("maintenance window")
    await page.get_by_role("button", name="Create silence").click()
    await page.get_by_role("status").filter(has_text="created").wait_for()
    async with console["store"].raw() as conn:
        made = await conn.fetchrow("select id, created_by, ends_at from silences where comment = 'maintenance window'")
    assert made["created_by"] == "web-operator"
    assert timedelta(hours=1, minutes=59) < made["ends_at"] - datetime.now(timezone.utc) <= timedelta(hours=2)
    await page.get_by_role("button", name=f"Expire silence {made['id']}").click()
    await page.get_by_role("status").filter(has_text="expired").wait_for()
    async with console["store"].raw() as conn:
        assert await conn.fetchval("select ends_at <= now() from silences where id = $1", made["id"])
    await context.close()


async def test_proxy_sign_in_is_believed_from_the_trusted_peer_only(browser, console):
    header = {"X-Auth-User": "web-proxy-op"}
    # From the proxy (127.0.0.1), which also says who the browser is: the socket peer decides.
    async with httpx.AsyncClient(base_url=console["base"]) as client:
        signed = await client.get("/signin", headers={**header, "X-Forwarded-For": "203.0.113.9"})
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        set_cookie = signed.headers["set-cookie"].lower()
        assert "dbfleet_session=" in set_cookie and "httponly" in set_cookie and "samesite=strict" in set_cookie
        fleet = await client.get("/")
        assert fleet.status_code == 200 and "proxy:web-proxy-op (operator)" in fleet.text
        # Someone else at the same browser: the proxy's word beats the cookie left behind.
        other = await client.get("/", headers={"X-Auth-User": "web-proxy-other"})
        assert other.status_code == 303 and other.headers["location"] == "/signin"
        again = await client.get("/signin", headers={"X-Auth-User": "web-proxy-other"})
        assert again.status_code == 303 and "proxy:web-proxy-other (viewer)" in (await client.get(
            "/", headers={"X-Auth-User": "web-proxy-other"})).text
    async with console["store"].raw() as conn:
        assert await conn.fetchval("select role from api_keys where name = 'proxy:web-proxy-op'") == "operator"
    # The same header from another peer (127.0.0.2, even claiming to be the proxy) signs nobody in.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=console["base"], transport=transport) as client:
        form = await client.get("/signin", headers={**header, "X-Forwarded-For": "127.0.0.1"})
        assert form.status_code == 200 and "dbfleet_session" not in form.cookies and 'name="key"' in form.text
        refused = await client.get("/findings", headers=header)
        assert refused.status_code == 303 and refused.headers["location"] == "/signin"
    # A browser through the proxy lands on the fleet signed in, with no key typed.
    context = await browser.new_context(extra_http_headers={"X-Auth-User": "web-proxy-viewer"})
    page = await context.new_page()
    await page.goto(console["base"] + "/findings")
    await page.wait_for_url(console["base"] + "/")
    assert "proxy:web-proxy-viewer (viewer)" in await page.locator("header").inner_text()
    await context.close()


async def test_fleet_filters_by_cloud_and_region(browser, console):
    context, page = await _signed_in(browser, console, "viewer")
    rows = page.locator("table.grid tbody td:first-child")
    await page.get_by_label("Cloud").select_option("aws")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url("**cloud=aws**")
    assert await rows.all_inner_texts() == ["web-my-0"]
    assert "1 instances" in " ".join((await page.get_by_label("Fleet counts").inner_text()).split())
    await page.get_by_label("Cloud").select_option("")
    await page.get_by_label("Region").select_option("westeurope")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url("**region=westeurope**")
    assert await rows.all_inner_texts() == ["web-my-1"]
    await page.get_by_label("Region").select_option("")
    await page.get_by_label("Cloud").select_option("none")  # not in a cloud
    await page.get_by_label("Team").select_option("shop")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url("**team=shop**")
    assert await rows.all_inner_texts() == ["web-my-2"]
    await context.close()


async def test_instance_page_draws_the_replication_set_and_lag_chart(browser, console):
    context, page = await _signed_in(browser, console, "viewer")
    await page.goto(console["base"] + "/instances/web-pg")
    diagram = page.locator(".topology-diagram svg")
    await diagram.wait_for()
    nodes = diagram.locator("a.node")
    assert await nodes.count() == 2
    assert await diagram.locator("a.node.primary.me").get_attribute("aria-label") == "primary web-pg"
    assert await diagram.locator("a.node.standby").get_attribute("href") == "/instances/web-pg-standby"
    edge = diagram.locator("line.edge")
    assert await edge.count() == 1 and "web-pg → web-pg-standby" in await edge.locator("title").text_content()
    await page.wait_for_function("document.querySelector('.lag-chart canvas') !== null")  # uPlot drew the lag
    assert "Lag of web-pg-standby on web-pg" in await page.locator("figure.lag figcaption").inner_text()
    await page.locator("#replication").scroll_into_view_if_needed()
    await _shot(page, "instance-replication")
    await page.goto(console["base"] + "/instances/web-pg-standby")  # the same set, seen from the standby
    assert await page.locator(".topology-diagram a.node.standby.me").count() == 1
    await context.close()


async def test_a_refused_action_is_an_html_page(browser, console):
    context, page = await _signed_in(browser, console, "viewer")
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    ids = await _finding_ids(console, "xid_wraparound")
    refused = await context.request.post(console["base"] + "/findings/change", form={
        "csrf": csrf, "action": "acknowledge", "ids": str(ids[0])}, max_redirects=0)
    assert refused.status == 403 and refused.headers["content-type"].startswith("text/html")
    body = await refused.text()
    assert "<h1>403 Forbidden</h1>" in body and "this needs the operator role; you are viewer" in body
    missing = await page.goto(console["base"] + "/instances/no-such-instance")
    assert missing.status == 404 and await page.locator("h1").inner_text() == "404 Not Found"
    await _shot(page, "error-404")
    await context.close()


_UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map(el => el.outerHTML.slice(0, 160))"""


_WIDER_THAN_VIEWPORT = """() => [...document.querySelectorAll('main *')]
  .filter(el => el.getBoundingClientRect().right > window.innerWidth + 1)
  .slice(0, 5).map(el => el.tagName + '.' + el.className + ' ' + Math.round(el.getBoundingClientRect().right))"""


async def test_every_control_is_labelled_and_pages_fit_a_phone(browser, console):
    finding = (await _finding_ids(console, "unused_index"))[0]
    paths = ["/", "/findings", f"/findings/{finding}", "/instances/web-pg", "/instances/web-xss",
             "/instances/web-pg/partitions", "/alerts", "/audit"]
    for width, height in ((1280, 900), (390, 844)):
        context, page = await _signed_in(browser, console, "admin", width=width, height=height)
        for path in paths:
            await page.goto(console["base"] + path)
            await page.locator("h1").wait_for()
            assert await page.evaluate(_UNLABELLED) == [], f"controls without a label on {path}"
            scroll = await page.evaluate("document.documentElement.scrollWidth")
            wide = await page.evaluate(_WIDER_THAN_VIEWPORT)
            assert scroll <= width + 1, f"{path} scrolls sideways at {width} px ({scroll} px wide): {wide}"
        await page.goto(console["base"] + "/")
        await _shot(page, f"fleet-{width}")
        await context.close()


async def test_the_fleet_is_usable_by_keyboard(browser, console):
    context, page = await _signed_in(browser, console, "viewer")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    await page.get_by_label("Name").focus()
    await page.keyboard.type("my-2")
    await page.keyboard.press("Enter")  # submits the filter form
    await page.wait_for_url("**q=my-2**")
    assert await page.locator("table.grid tbody td:first-child").all_inner_texts() == ["web-my-2"]
    await page.locator("table.grid tbody a").first.focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/instances/web-my-2")
    await context.close()


async def test_fleet_and_findings_page_through_everything_once(browser, console):
    """Runs last: it adds 110 instances, each with an info finding, to walk real pages."""
    async with console["store"].raw() as conn:
        for i in range(110):
            iid = await _instance(conn, f"web-zz-{i:03d}", "postgres", {"env": "test"})
            await record_run(conn, InstanceRef(iid, f"web-zz-{i:03d}", "postgres", {}), "health", Result(
                findings=[Finding("pg_stat_statements_missing", "app", Severity.info, "pg_stat_statements is missing",
                                  {}, "CREATE EXTENSION pg_stat_statements")]), datetime.now(timezone.utc), 1.0)
        live = {r[0] for r in await conn.fetch("select id from findings where state <> 'resolved'")}
        instances = await conn.fetchval("select count(*) from instances")
    context, page = await _signed_in(browser, console, "viewer")
    names = await page.locator("table.grid tbody td:first-child").all_inner_texts()
    await page.get_by_role("link", name="next →").click()
    await page.wait_for_url("**page=2**")
    names += await page.locator("table.grid tbody td:first-child").all_inner_texts()
    assert await page.get_by_role("link", name="next →").count() == 0
    assert len(names) == len(set(names)) == instances and names == sorted(names)

    await page.goto(console["base"] + "/findings")
    seen: list[int] = []
    while True:
        hrefs = await page.locator("#results td a[href^='/findings/']").evaluate_all("as => as.map(a => a.getAttribute('href'))")
        seen += [int(h.rsplit("/", 1)[1]) for h in hrefs]
        nxt = page.get_by_role("link", name="next →")
        if not await nxt.count():
            break
        before = page.url
        await nxt.click()
        await page.wait_for_url(lambda url: url != before)
    assert len(seen) == len(set(seen)) == len(live) and set(seen) == live
    await context.close()
