"""Series caps: the top series by spend are kept, the rest are counted, and the defaults keep a
10k-key, 1k-team deployment under the series budget the README gives."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import BudgetEntityConfig, EntityConfig
from exporter.spend_writer import Request

from .conftest import make_config, poll, scrape
from .ground_truth import mismatches


def with_caps(config, *, usage=None, budgets=None):
    if usage:
        entities = {**config.usage.entities, **usage}
        config = dataclasses.replace(config, usage=dataclasses.replace(config.usage, entities=entities))
    if budgets:
        entities = {**config.budgets.entities, **budgets}
        config = dataclasses.replace(config, budgets=dataclasses.replace(config.budgets, entities=entities))
    return config


def test_usage_cap_keeps_the_top_keys_by_spend_and_counts_the_rest(
    make_exporter, entities, writer, clock, conn, litellm_dsn
):
    tokens = [entities.key(f"sk-cap-{i}", f"key-{i}", max_budget=100.0) for i in range(10)]
    for i, token in enumerate(tokens):
        # key-7 spends most, then key-3, key-9; the rest spend less.
        spend = {7: 50.0, 3: 40.0, 9: 30.0}.get(i, 1.0 + i / 10)
        writer.record(Request(token, "gpt-4o", "gpt-4o", "openai", spend, 10, 10, clock.now - timedelta(days=i)))
    writer.flush(clock.now)
    config = with_caps(
        make_config(litellm_dsn),
        usage={"key": EntityConfig(model_group=False, max_series=3)},
        budgets={"key": BudgetEntityConfig(max_series=4)},
    )
    exporter = make_exporter(config)
    poll(exporter)
    poll(exporter)
    s = scrape(exporter)

    kept = {dict(labels)["key_alias"] for labels in s["litellm_key_spend_usd_total"]}
    want = conn.execute(
        'SELECT v.key_alias FROM "LiteLLM_DailyUserSpend" d JOIN "LiteLLM_VerificationToken" v ON v.token = d.api_key'
        " GROUP BY 1 ORDER BY sum(d.spend) DESC LIMIT 3"
    ).fetchall()
    assert kept == {r[0] for r in want} == {"key-7", "key-3", "key-9"}
    for measure in ("requests", "requests_failed", "input_tokens", "output_tokens"):
        assert {dict(labels)["key_alias"] for labels in s[f"litellm_key_{measure}_total"]} == kept
    assert s["litellm_exporter_series_over_cap"][frozenset({("family", "litellm_key")})] == 7.0
    assert s["litellm_exporter_series_dropped_total"][frozenset({("family", "litellm_key")})] == 14.0  # two polls
    # Budgets: the four keys spending most in their period.
    assert {dict(labels)["key_alias"] for labels in s["litellm_key_max_budget_usd"]} == {
        "key-7",
        "key-3",
        "key-9",
        "key-8",
    }
    assert s["litellm_exporter_series_over_cap"][frozenset({("family", "litellm_key_budget")})] == 6.0
    # The global families and the uncapped entities are untouched and exact.
    assert mismatches(conn, s, ("litellm", "litellm_team", "litellm_user", "litellm_tag")) == []
    assert s["litellm_exporter_series_over_cap"][frozenset({("family", "litellm_team")})] == 0.0


def count_series(exporter) -> dict[str, int]:
    text = generate_latest(exporter.registry).decode()
    return {f.name: len(f.samples) for f in text_string_to_metric_families(text)}


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
    over = scrape(exporter)["litellm_exporter_series_over_cap"]
    assert over[frozenset({("family", "litellm_key")})] == 30_000 - 1_500
    assert over[frozenset({("family", "litellm_key_budget")})] == 10_000 - 500
