"""Series caps count whole entities: a shown entity adds up to its database sum, everything a cap
leaves out is summed into ``__other__`` so that each family adds up to its table, the choice is
the database's alone, a change of it lets no counter fall, and the defaults keep a 10k-key,
1k-team deployment under the series budget the README gives."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import defaultdict
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from exporter.demo.entities import seed_world
from exporter.demo.traffic import Request, random_requests
from exporter.demo.writer import SpendWriter

from .support.exporters import collector, make_config, poll, scrape
from .support.ground_truth import TOLERANCE, mismatches

OTHER = "__other__"
# family -> (id label, daily table, the id as the table holds it, as the label shows it)
FAMILIES = {
    "litellm": ("model_group", "LiteLLM_DailyUserSpend", "coalesce(model_group, '')"),
    "litellm_key": ("key_hash", "LiteLLM_DailyUserSpend", "left(api_key, 12)"),
    "litellm_user": ("user_id", "LiteLLM_DailyUserSpend", "coalesce(user_id, '')"),
    "litellm_team": ("team_id", "LiteLLM_DailyTeamSpend", "coalesce(team_id, '')"),
    "litellm_organization": ("organization_id", "LiteLLM_DailyOrganizationSpend", "coalesce(organization_id, '')"),
    "litellm_end_user": ("end_user", "LiteLLM_DailyEndUserSpend", "coalesce(end_user_id, '')"),
    "litellm_tag": ("tag", "LiteLLM_DailyTagSpend", "coalesce(tag, '')"),
}
MEASURES = {"spend_usd": "spend", "requests": "api_requests", "input_tokens": "prompt_tokens"}
TIGHT = {"key": 7, "user": 5, "team": 3, "organization": 1, "end_user": 4, "tag": 2}


def with_caps(config, *, usage=None, budgets=None, global_max_series=None):
    if usage:
        entities = {**config.usage.entities, **usage}
        config = dataclasses.replace(config, usage=dataclasses.replace(config.usage, entities=entities))
    if global_max_series:
        config = dataclasses.replace(
            config, usage=dataclasses.replace(config.usage, global_max_series=global_max_series)
        )
    if budgets:
        entities = {**config.budgets.entities, **budgets}
        config = dataclasses.replace(config, budgets=dataclasses.replace(config.budgets, entities=entities))
    return config


def tight(config):
    usage = {name: dataclasses.replace(config.usage.entity(name), max_series=cap) for name, cap in TIGHT.items()}
    return with_caps(config, usage=usage, global_max_series=2)


def busy_deployment(conn, clock, *, keys: int, users: int, teams: int, requests: int) -> None:
    """A few hundred keys over four model groups and three days, flushed in proxy-sized batches."""
    rng = random.Random(keys)
    world = seed_world(conn, rng, organizations=3, teams=teams, users=users, keys=keys, end_users=40)
    writer = SpendWriter(conn)
    batch = random_requests(rng, world, requests, clock.now - timedelta(days=3), clock.now)
    batch.sort(key=lambda r: r.start_time)
    for i in range(0, len(batch), 200):
        writer.record(*batch[i : i + 200])
        writer.flush(batch[min(i + 199, len(batch) - 1)].start_time)


def by_entity(samples, family: str, measure: str) -> dict[str, float]:
    id_label = FAMILIES[family][0]
    totals: dict[str, float] = defaultdict(float)
    for labels, value in samples.get(f"{family}_{measure}_total", {}).items():
        totals[dict(labels)[id_label]] += value
    return totals


def check_whole(conn, samples, family: str) -> set[str]:
    """Every shown entity equals its database sum, and the family with ``__other__`` equals its
    table's total. Returns the entities shown."""
    _, table, id_sql = FAMILIES[family]
    shown: set[str] = set()
    for measure, column in MEASURES.items():
        got = by_entity(samples, family, measure)
        assert got, f"{family}_{measure}_total has no series"
        want = dict(conn.execute(f'SELECT {id_sql}, sum({column})::float8 FROM "{table}" GROUP BY 1').fetchall())
        for entity, value in got.items():
            if entity != OTHER:
                assert math.isclose(value, want[entity], rel_tol=1e-9, abs_tol=TOLERANCE), (family, measure, entity)
        table_total = sum(want.values())
        assert math.isclose(sum(got.values()), table_total, rel_tol=1e-9, abs_tol=TOLERANCE), (family, measure)
        if table == "LiteLLM_DailyUserSpend" or family == "litellm_team":
            # Every request has a key, a user ('' for none) and a team ('' for none).
            global_total = sum(samples[f"litellm_{measure}_total"].values())
            assert math.isclose(sum(got.values()), global_total, rel_tol=1e-9, abs_tol=TOLERANCE), (family, measure)
        shown = set(got) - {OTHER}
    return shown


def memberships(samples) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Per family: the entities shown, and the overflow series' identities."""
    result = {}
    for family, (id_label, _, _) in FAMILIES.items():
        series = samples.get(f"{family}_spend_usd_total", {})
        ids = frozenset(dict(labels)[id_label] for labels in series)
        overflow = frozenset(
            dict(labels).get("overflow_set", "") for labels in series if dict(labels)[id_label] == OTHER
        )
        result[family] = (ids, overflow)
    return result


def test_tight_caps_show_whole_entities_and_other_adds_up_to_the_total(make_exporter, conn, clock, litellm_dsn):
    busy_deployment(conn, clock, keys=300, users=120, teams=30, requests=3000)
    exporter = make_exporter(tight(make_config(litellm_dsn)))
    poll(exporter)
    samples = scrape(exporter)
    for family in FAMILIES:
        shown = check_whole(conn, samples, family)
        cap = TIGHT.get(family.removeprefix("litellm_"), 2)
        assert len(shown) == cap, family
        # The shown entities are the top by all-time spend, ties by id.
        _, table, id_sql = FAMILIES[family]
        top = conn.execute(
            f'SELECT {id_sql} FROM "{table}" GROUP BY 1 ORDER BY sum(spend) DESC, {id_sql} COLLATE "C" LIMIT %s', (cap,)
        ).fetchall()
        assert shown == {r[0] for r in top}, family
    # __other__: aliases empty, one series per model group, and an identity of its own.
    other = [dict(labels) for labels in samples["litellm_key_spend_usd_total"] if dict(labels)["key_hash"] == OTHER]
    assert {o["model_group"] for o in other} == {"gpt-4o", "gpt-4o-mini", "claude-sonnet", "gemini-flash"}
    assert all(o["key_alias"] == "" and o["team_id"] == "" and len(o["overflow_set"]) == 10 for o in other)
    shown_key = next(
        dict(labels) for labels in samples["litellm_key_spend_usd_total"] if dict(labels)["key_hash"] != OTHER
    )
    assert "overflow_set" not in shown_key
    over = samples["litellm_exporter_entities_over_cap"]
    want_keys = conn.execute('SELECT count(DISTINCT api_key) FROM "LiteLLM_DailyUserSpend"').fetchone()[0]
    assert over[frozenset({("family", "litellm_key")})] == want_keys - TIGHT["key"]


def test_shipped_caps_show_whole_entities(make_exporter, conn, clock, litellm_dsn):
    # More keys and users than the shipped caps show (500 and 200), fewer teams (200).
    busy_deployment(conn, clock, keys=600, users=250, teams=60, requests=4000)
    exporter = make_exporter()
    poll(exporter)
    samples = scrape(exporter)
    for family in FAMILIES:
        check_whole(conn, samples, family)
    assert len(by_entity(samples, "litellm_key", "spend_usd")) == 500 + 1
    assert len(by_entity(samples, "litellm_user", "spend_usd")) == 200 + 1
    assert OTHER not in by_entity(samples, "litellm_team", "spend_usd")
    # Without a cap in the way, every family matches the database series by series.
    assert mismatches(conn, samples, ("litellm", "litellm_team", "litellm_organization", "litellm_tag")) == []


def test_membership_is_the_same_for_two_replicas_and_after_a_restart(make_exporter, conn, clock, litellm_dsn):
    busy_deployment(conn, clock, keys=200, users=80, teams=20, requests=2000)
    config = tight(make_config(litellm_dsn))
    first, second = make_exporter(config), make_exporter(config)
    poll(first)
    poll(second)
    assert memberships(scrape(first)) == memberships(scrape(second))
    # The same database, a restarted exporter: the same entities, and the same overflow series.
    restarted = make_exporter(config)
    poll(restarted)
    assert memberships(scrape(restarted)) == memberships(scrape(first))
    usage = {n: s for n, s in scrape(first).items() if n.startswith("litellm_key_")}
    assert usage == {n: s for n, s in scrape(restarted).items() if n.startswith("litellm_key_")}


def test_a_membership_change_lets_no_counter_fall(make_exporter, conn, clock, litellm_dsn, entities):
    busy_deployment(conn, clock, keys=50, users=20, teams=5, requests=600)
    config = tight(make_config(litellm_dsn))
    exporter = make_exporter(config)
    poll(exporter)
    before = scrape(exporter)
    shown_before = memberships(before)["litellm_key"]
    # A new key spends more than any: between resyncs it is counted in __other__...
    token = entities.key("sk-newcomer", "newcomer")
    writer = SpendWriter(conn)
    writer.record(Request(token, "gpt-4o", "gpt-4o", "openai", 500.0, 10, 10, clock.now - timedelta(minutes=1)))
    writer.flush(clock.now)
    clock.advance(seconds=30)
    poll(exporter)
    between = scrape(exporter)
    assert memberships(between)["litellm_key"] == shown_before
    check_whole(conn, between, "litellm_key")
    # ...and at the next resync (on the hour) it is shown, and __other__ is a new series.
    clock.advance(hours=1)
    poll(exporter)
    after = scrape(exporter)
    shown_after, overflow_after = memberships(after)["litellm_key"]
    assert token[:12] in shown_after and token[:12] not in shown_before[0]
    assert overflow_after.isdisjoint(shown_before[1])
    check_whole(conn, after, "litellm_key")
    for name, series in between.items():
        if name.startswith("litellm_") and name.endswith("_total") and not name.startswith("litellm_exporter"):
            for labels, value in series.items():
                if labels in after[name]:
                    assert after[name][labels] >= value, (name, dict(labels))
    changes = after["litellm_exporter_cap_membership_changes_total"]
    assert changes[frozenset({("family", "litellm_key")})] == 1.0


def test_memory_follows_the_series_not_the_rows(make_exporter, conn, clock, litellm_dsn):
    rng = random.Random(7)
    world = seed_world(conn, rng, keys=40, users=15, teams=6)
    writer = SpendWriter(conn)
    tables = ("LiteLLM_DailyUserSpend", "LiteLLM_DailyTeamSpend", "LiteLLM_DailyTagSpend")

    def load(days_back: float, days: float) -> None:
        start = clock.now - timedelta(days=days_back)
        for request in random_requests(rng, world, int(400 * days), start, start + timedelta(days=days)):
            writer.record(request)
        writer.flush(clock.now)

    def kept():
        exporter = make_exporter(tight(make_config(litellm_dsn)))
        poll(exporter)
        usage = collector(exporter, "usage")
        states = [usage.state(t) for t in tables]
        assert all(s is not None for s in states)
        samples = scrape(exporter)
        series = sum(len(samples[f"{view.family}_spend_usd_total"]) for state in states for view in state.views)
        rows = conn.execute('SELECT count(*) FROM "LiteLLM_DailyUserSpend"').fetchone()[0]
        return states, series, rows

    load(40, 36)  # only old rows: nothing dated within the late margin
    states, series, small_rows = kept()
    # The engine keeps one sum per series it serves, and nothing for the rows it read.
    assert all(not window for state in states for window in state.window)
    assert sum(state.kept() for state in states) == series
    load(80, 40)  # twice the history, all of it old
    states, series_after, large_rows = kept()
    assert large_rows > 1.5 * small_rows
    assert sum(state.kept() for state in states) == series_after <= series + 10
    # Today's traffic adds at most one window sum per series, never one per row.
    load(0.2, 0.2)
    states, series_now, _ = kept()
    assert series_now <= sum(state.kept() for state in states) <= 2 * series_now


def count_series(exporter) -> dict[str, int]:
    text = exporter.exposition.render("")[0].decode()
    return {f.name: len(f.samples) for f in text_string_to_metric_families(text)}


def test_budget_cap_keeps_whole_rows_of_the_top_spenders(make_exporter, entities, writer, clock, conn, litellm_dsn):
    tokens = [entities.key(f"sk-cap-{i}", f"key-{i}", max_budget=100.0) for i in range(10)]
    for i, token in enumerate(tokens):
        conn.execute('UPDATE "LiteLLM_VerificationToken" SET spend = %s WHERE token = %s', (float(i % 7), token))
    config = make_config(litellm_dsn)
    config = with_caps(config, budgets={"key": dataclasses.replace(config.budgets.entities["key"], max_series=4)})
    exporter = make_exporter(config)
    poll(exporter)
    s = scrape(exporter)
    # The four keys spending most in their period (6, 5, 4, then 3 and 3 tie: by labels).
    shown = {dict(labels)["key_alias"] for labels in s["litellm_key_max_budget_usd"]}
    assert shown == {"key-6", "key-5", "key-4", "key-3"}
    for name in ("litellm_key_budget_spend_usd", "litellm_key_budget_remaining_usd"):
        assert {dict(labels)["key_alias"] for labels in s[name]} == shown
    assert s["litellm_exporter_entities_over_cap"][frozenset({("family", "litellm_key_budget")})] == 6.0


def test_defaults_keep_a_10k_key_1k_team_deployment_under_the_series_budget(make_exporter, conn, clock):
    # 10k keys in 1k teams and 10k users, each key on three model groups, every key and team
    # with a budget and limits, 1k end users and 300 tags: written in bulk, as LiteLLM's tables
    # would hold them after a busy month.
    day = clock.now.date().isoformat()
    conn.execute(
        """
        INSERT INTO "LiteLLM_TeamTable" (team_id, team_alias, max_budget, soft_budget, budget_reset_at, tpm_limit,
                                         rpm_limit, spend, updated_at)
        SELECT 'team-' || t, 'Team ' || t, 100, 80, now() + interval '10 days', 1000, 100, t % 97, now()
        FROM generate_series(1, 1000) t;
        INSERT INTO "LiteLLM_UserTable" (user_id, max_budget, spend)
        SELECT 'user-' || u, 10, u % 13 FROM generate_series(1, 10000) u;
        INSERT INTO "LiteLLM_VerificationToken" (token, key_alias, team_id, user_id, max_budget, budget_reset_at,
                                                 tpm_limit, rpm_limit, expires, spend)
        SELECT md5('k' || k), 'key-' || k, 'team-' || (k % 1000 + 1), 'user-' || k, 50, now() + interval '7 days',
               1000, 60, now() + interval '90 days', k % 101
        FROM generate_series(1, 10000) k;
        """
    )
    for table, column, ids in (
        ("LiteLLM_DailyUserSpend", "user_id", "'user-' || k"),
        ("LiteLLM_DailyTeamSpend", "team_id", "'team-' || (k %% 1000 + 1)"),
        ("LiteLLM_DailyEndUserSpend", "end_user_id", "'customer-' || (k %% 1000)"),
        ("LiteLLM_DailyTagSpend", "tag", "'tag-' || (k %% 300)"),
    ):
        conn.execute(
            f'INSERT INTO "{table}" (id, {column}, date, api_key, model, model_group, custom_llm_provider,'
            " spend, api_requests, prompt_tokens, completion_tokens, updated_at)"
            f" SELECT md5(k || '-' || m), {ids}, %s, md5('k' || k), 'model-' || m, 'group-' || m, 'openai',"
            " (k %% 50) + m, 1, 10, 10, now()"
            " FROM generate_series(1, 10000) k, generate_series(1, 3) m"
            " ON CONFLICT DO NOTHING",
            (day,),
        )
    exporter = make_exporter()
    poll(exporter)
    series = count_series(exporter)
    total = sum(series.values())
    assert 20_000 < total < 50_000, total
    s = scrape(exporter)
    over = s["litellm_exporter_entities_over_cap"]
    assert over[frozenset({("family", "litellm_key")})] == 10_000 - 500
    assert over[frozenset({("family", "litellm_team")})] == 1_000 - 200
    assert over[frozenset({("family", "litellm_key_budget")})] == 10_000 - 500
    # Every capped family still adds up to the global counter.
    for family in ("litellm_key", "litellm_user", "litellm_team"):
        total_spend = sum(by_entity(s, family, "spend_usd").values())
        assert math.isclose(total_spend, sum(s["litellm_spend_usd_total"].values()), rel_tol=1e-9), family
