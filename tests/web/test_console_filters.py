"""The console's row filters (app/web/filters.py): what they print, and that they escape."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from app.web.filters import sev, tag_spans, when


def test_tags_are_sorted_by_key_and_escaped():
    html = str(tag_spans({"team": "<b>dba</b>", "env": 'pr"od'}))
    assert html == ('<span class="tag">env=pr&#34;od</span> '
                    '<span class="tag">team=&lt;b&gt;dba&lt;/b&gt;</span> ')


def test_a_time_shows_to_the_second_and_keeps_its_zone_for_the_machine():
    t = datetime(2026, 12, 3, 17, 4, 5, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert str(when(t)) == '<time datetime="2026-12-03T17:04:05.123456+01:00">2026-12-03 17:04:05</time>'
    assert str(when(None)) == "—"
    assert str(when("2026-12-03T17:04:05Z<x>")) == ('<time datetime="2026-12-03T17:04:05Z&lt;x&gt;">'
                                                    "2026-12-03 17:04:05</time>")


def test_a_severity_badge_escapes_what_it_is_given():
    assert str(sev(None)) == '<span class="sev sev-ok">ok</span>'
    assert str(sev('x"><script>')) == '<span class="sev sev-x&#34;&gt;&lt;script&gt;">x&#34;&gt;&lt;script&gt;</span>'
