"""Budget and limit gauges equal LiteLLM's entity tables, through resets and live spend."""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from exporter.demo.entities import Entities
from exporter.demo.traffic import Request, hash_token, random_requests
from exporter.demo.writer import SpendWriter

from .support.exporters import Samples, make_config, poll, scrape

RESET = datetime(2026, 12, 1, tzinfo=timezone.utc)
EXPIRES = datetime(2026, 11, 27, 8, 30, tzinfo=timezone.utc)


def epoch(moment: datetime) -> float:
    return moment.timestamp()


@pytest.fixture
def budgeted(conn: psycopg.Connection, entities: Entities) -> dict[str, str]:
    """One entity of each kind with a budget, and ones without any."""
    entities.budget("b-org", max_budget=1000.0, soft_budget=800.0, budget_duration="30d", budget_reset_at=RESET)
    entities.budget("b-member", max_budget=50.0, budget_duration="1d", budget_reset_at=RESET, rpm_limit=None)
    entities.budget("b-end-user", max_budget=5.0, soft_budget=4.0, tpm_limit=1000)
    entities.budget("b-tag", max_budget=200.0)
    entities.budget("b-key-soft", soft_budget=20.0)
    org = entities.organization("org-1", 'Acme "R&D"', budget_id="b-org")
    entities.team(
        "team-1",
        "Search",
        organization_id=org,
        max_budget=100.0,
        soft_budget=80.0,
        budget_duration="30d",
        budget_reset_at=RESET,
        tpm_limit=50000,
        rpm_limit=100,
    )
    entities.team("team-plain", "No budget")
    entities.team("team-blocked", "Blocked", blocked=True)
    entities.user("alice", max_budget=10.0, budget_reset_at=RESET, rpm_limit=60)
    entities.user("bob")
    entities.team_member("team-1", "alice", budget_id="b-member")
    entities.team_member("team-1", "bob")
    keys = {
        "budget": entities.key(
            "sk-budget",
            "search-prod",
            team_id="team-1",
            user_id="alice",
            max_budget=25.0,
            budget_id="b-key-soft",
            budget_duration="7d",
            budget_reset_at=RESET,
            tpm_limit=10000,
            rpm_limit=20,
        ),
        "expiring": entities.key("sk-expiring", "ci", expires=EXPIRES),
        "blocked": entities.key("sk-blocked", "leaked", blocked=True, team_id="team-blocked"),
        "plain": entities.key("sk-plain", "no limits"),
    }
    entities.end_user("customer-1", budget_id="b-end-user")
    entities.end_user("customer-plain")
    entities.tag("premium", budget_id="b-tag")
    entities.tag("free")
    return keys


def gauges(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(labels)): value for labels, value in samples.get(name, {}).items()}


def key_labels(token: str, alias: str, team: str = "") -> tuple[tuple[str, str], ...]:
    return tuple(sorted({("key_hash", token[:12]), ("key_alias", alias), ("team_id", team)}))


def test_gauges_equal_the_entity_tables(make_exporter, budgeted):
    exporter = make_exporter()
    poll(exporter)
    s = scrape(exporter)
    budget, expiring, blocked = budgeted["budget"], budgeted["expiring"], budgeted["blocked"]

    k = key_labels(budget, "search-prod", "team-1")
    assert gauges(s, "litellm_key_max_budget_usd") == {k: 25.0}
    assert gauges(s, "litellm_key_soft_budget_usd") == {k: 20.0}
    assert gauges(s, "litellm_key_budget_spend_usd") == {
        k: 0.0,
        key_labels(expiring, "ci"): 0.0,
        key_labels(blocked, "leaked", "team-blocked"): 0.0,
    }
    assert gauges(s, "litellm_key_budget_remaining_usd") == {k: 25.0}
    assert gauges(s, "litellm_key_budget_reset_timestamp_seconds") == {k: epoch(RESET)}
    assert gauges(s, "litellm_key_expires_timestamp_seconds") == {key_labels(expiring, "ci"): epoch(EXPIRES)}
    assert gauges(s, "litellm_key_tpm_limit") == {k: 10000.0}
    assert gauges(s, "litellm_key_rpm_limit") == {k: 20.0}
    assert gauges(s, "litellm_key_blocked") == {
        k: 0.0,
        key_labels(expiring, "ci"): 0.0,
        key_labels(blocked, "leaked", "team-blocked"): 1.0,
    }

    team = (("team_alias", "Search"), ("team_id", "team-1"))
    blocked_team = (("team_alias", "Blocked"), ("team_id", "team-blocked"))
    assert gauges(s, "litellm_team_max_budget_usd") == {team: 100.0}
    assert gauges(s, "litellm_team_soft_budget_usd") == {team: 80.0}
    assert gauges(s, "litellm_team_budget_remaining_usd") == {team: 100.0}
    assert gauges(s, "litellm_team_budget_reset_timestamp_seconds") == {team: epoch(RESET)}
    assert gauges(s, "litellm_team_tpm_limit") == {team: 50000.0}
    assert gauges(s, "litellm_team_rpm_limit") == {team: 100.0}
    assert gauges(s, "litellm_team_blocked") == {team: 0.0, blocked_team: 1.0}

    assert gauges(s, "litellm_user_max_budget_usd") == {(("user_id", "alice"),): 10.0}
    assert gauges(s, "litellm_user_rpm_limit") == {(("user_id", "alice"),): 60.0}
    org = (("organization_alias", 'Acme "R&D"'), ("organization_id", "org-1"))
    assert gauges(s, "litellm_organization_max_budget_usd") == {org: 1000.0}
    assert gauges(s, "litellm_organization_soft_budget_usd") == {org: 800.0}
    assert gauges(s, "litellm_organization_budget_reset_timestamp_seconds") == {org: epoch(RESET)}
    assert gauges(s, "litellm_end_user_max_budget_usd") == {(("end_user", "customer-1"),): 5.0}
    assert gauges(s, "litellm_end_user_tpm_limit") == {(("end_user", "customer-1"),): 1000.0}
    assert gauges(s, "litellm_team_member_max_budget_usd") == {(("team_id", "team-1"), ("user_id", "alice")): 50.0}
    assert gauges(s, "litellm_tag_max_budget_usd") == {(("tag", "premium"),): 200.0}


def test_entities_without_limits_are_left_out_by_default(make_exporter, budgeted):
    exporter = make_exporter()
    poll(exporter)
    text = "\n".join(str(labels) for series in scrape(exporter).values() for labels in series)
    for absent in (budgeted["plain"][:12], "team-plain", "bob", "customer-plain", "'free'"):
        assert absent not in text, absent


def test_every_entity_when_asked_and_null_budgets_have_no_sample(make_exporter, budgeted, litellm_dsn):
    config = make_config(litellm_dsn)
    every = {
        name: dataclasses.replace(entity, only_with_limits=False) for name, entity in config.budgets.entities.items()
    }
    exporter = make_exporter(dataclasses.replace(config, budgets=dataclasses.replace(config.budgets, entities=every)))
    poll(exporter)
    s = scrape(exporter)
    plain = key_labels(budgeted["plain"], "no limits")
    assert gauges(s, "litellm_key_budget_spend_usd")[plain] == 0.0
    assert gauges(s, "litellm_key_blocked")[plain] == 0.0
    for name in (
        "max_budget_usd",
        "soft_budget_usd",
        "budget_remaining_usd",
        "budget_reset_timestamp_seconds",
        "tpm_limit",
        "rpm_limit",
        "expires_timestamp_seconds",
    ):
        assert plain not in gauges(s, f"litellm_key_{name}"), name
    assert (("user_id", "bob"),) in gauges(s, "litellm_user_budget_spend_usd")
    assert (("user_id", "bob"),) not in gauges(s, "litellm_user_max_budget_usd")
    assert (("tag", "free"),) in gauges(s, "litellm_tag_budget_spend_usd")
    assert (("tag", "free"),) not in gauges(s, "litellm_tag_budget_remaining_usd")
    for series in s.values():
        assert all(math.isfinite(v) for v in series.values())


def test_gauges_follow_live_spend_and_budget_resets(make_exporter, budgeted, conn, clock):
    token = budgeted["budget"]
    writer = SpendWriter(conn)
    exporter = make_exporter()
    poll(exporter)
    for spend in (7.5, 12.25, 9.0):  # the third request takes the key over its budget
        writer.record(
            Request(
                token,
                "gpt-4o",
                "gpt-4o",
                "openai",
                spend,
                100,
                10,
                clock.now,
                user_id="alice",
                team_id="team-1",
                organization_id="org-1",
                tags=("premium",),
            )
        )
        writer.flush(clock.now)
        poll(exporter)
        s = scrape(exporter)
        spent, max_budget = conn.execute(
            'SELECT spend, max_budget FROM "LiteLLM_VerificationToken" WHERE token = %s', (token,)
        ).fetchone()
        k = key_labels(token, "search-prod", "team-1")
        assert gauges(s, "litellm_key_budget_spend_usd")[k] == spent
        assert gauges(s, "litellm_key_budget_remaining_usd")[k] == max_budget - spent
    assert gauges(s, "litellm_key_budget_remaining_usd")[k] == pytest.approx(-3.75)
    team = (("team_alias", "Search"), ("team_id", "team-1"))
    assert gauges(s, "litellm_team_budget_spend_usd")[team] == pytest.approx(28.75)
    assert gauges(s, "litellm_team_member_budget_spend_usd")[(("team_id", "team-1"), ("user_id", "alice"))] == (
        pytest.approx(28.75)
    )
    assert gauges(s, "litellm_tag_budget_spend_usd")[(("tag", "premium"),)] == pytest.approx(28.75)
    assert gauges(s, "litellm_organization_budget_spend_usd")[
        (("organization_alias", 'Acme "R&D"'), ("organization_id", "org-1"))
    ] == pytest.approx(28.75)

    # LiteLLM's reset job: spend back to 0 and the reset time moved one period on.
    next_reset = RESET + timedelta(days=7)
    conn.execute(
        'UPDATE "LiteLLM_VerificationToken" SET spend = 0, budget_reset_at = %s WHERE token = %s',
        (next_reset.replace(tzinfo=None), token),
    )
    conn.execute("""UPDATE "LiteLLM_TeamTable" SET spend = 0 WHERE team_id = 'team-1'""")
    poll(exporter)
    s = scrape(exporter)
    assert gauges(s, "litellm_key_budget_spend_usd")[k] == 0.0
    assert gauges(s, "litellm_key_budget_remaining_usd")[k] == 25.0
    assert gauges(s, "litellm_key_budget_reset_timestamp_seconds")[k] == epoch(next_reset)
    assert gauges(s, "litellm_team_budget_spend_usd")[team] == 0.0


def test_alias_change_leaves_one_series(make_exporter, budgeted, entities):
    exporter = make_exporter()
    poll(exporter)
    entities.rename_key(budgeted["budget"], "search-prod-v2")
    entities.rename_team("team-1", "Search & Ads")
    poll(exporter)
    s = scrape(exporter)
    assert list(gauges(s, "litellm_key_max_budget_usd")) == [key_labels(budgeted["budget"], "search-prod-v2", "team-1")]
    assert list(gauges(s, "litellm_team_max_budget_usd")) == [(("team_alias", "Search & Ads"), ("team_id", "team-1"))]


def test_gauges_match_tables_under_random_traffic(make_exporter, conn, clock, litellm_dsn):
    rng = random.Random(3)
    entities = Entities(conn)
    tokens = []
    for i in range(12):
        entities.team(f"t{i}", f"team {i}", max_budget=rng.choice([None, 50.0, 500.0]))
        tokens.append(entities.key(f"sk-r{i}", f"k{i}", team_id=f"t{i}", max_budget=rng.choice([None, 10.0, 100.0])))
    from exporter.demo.traffic import Caller, World

    world = World(tuple(Caller(t, f"t{i}", None, None) for i, t in enumerate(tokens)), (), ())
    writer = SpendWriter(conn)
    exporter = make_exporter()
    for _ in range(4):
        writer.record(*random_requests(rng, world, 80, clock.now - timedelta(minutes=5), clock.now))
        writer.flush(clock.now)
        poll(exporter)
        s = scrape(exporter)
        want = {
            key_labels(token, alias, team): (spend, max_budget)
            for token, alias, team, spend, max_budget in conn.execute(
                'SELECT token, key_alias, team_id, spend, max_budget FROM "LiteLLM_VerificationToken"'
            )
        }
        with_budget = {labels: v for labels, v in want.items() if v[1] is not None}
        assert gauges(s, "litellm_key_budget_spend_usd") == {labels: v[0] for labels, v in with_budget.items()}
        assert gauges(s, "litellm_key_budget_remaining_usd") == {
            labels: v[1] - v[0] for labels, v in with_budget.items()
        }
    assert hash_token("sk-r0") == tokens[0]


def test_a_failed_poll_leaves_the_cap_report_as_the_last_good_poll_left_it(
    make_exporter, entities, litellm_dsn, monkeypatch
):
    from exporter.collectors import budgets as budgets_module
    from exporter.config import parse

    for n in range(3):
        entities.team(f"capped-{n}", f"Capped {n}", max_budget=10.0 + n)
    capped = {"budgets": {"entities": {"team": {"max_series": 1}}}}
    exporter = make_exporter(parse({"database": {"dsn": litellm_dsn}, "collectors": capped}))
    collector = next(c for c in exporter.runner.collectors if c.name == "budgets")
    assert exporter.runner.poll_once(collector)
    over = scrape(exporter)["litellm_exporter_entities_over_cap"]
    assert over[frozenset({("family", "litellm_team_budget")})] == 2.0

    # More teams over the cap, and a poll that fails after reading them, in its last query.
    for n in range(3, 6):
        entities.team(f"capped-{n}", f"Capped {n}", max_budget=10.0 + n)

    def failing(self, conn, limit):
        raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")

    monkeypatch.setattr(budgets_module.BudgetsCollector, "_windows", failing)
    assert not exporter.runner.poll_once(collector)
    assert scrape(exporter)["litellm_exporter_entities_over_cap"] == over  # nothing of the failed poll

    monkeypatch.undo()
    assert exporter.runner.poll_once(collector)
    after = scrape(exporter)["litellm_exporter_entities_over_cap"]
    assert after[frozenset({("family", "litellm_team_budget")})] == 5.0
