"""The usage SQL composed from the catalogue (collectors/usage/tables.py, queries.py), with no
database: which measures a table is read for, how a row's value becomes a whole number, what a
pass groups and folds by, and how its rows are decoded into each view's sums. What the SQL
computes on a real database is test_usage.py's and test_look_back.py's."""

from __future__ import annotations

from exporter.cardinality import OTHER
from exporter.collectors.usage.queries import (
    OLD,
    RECENT,
    WINDOW,
    View,
    daily_reading,
    decode_folded,
    folded_query,
    other_group,
    rank_query,
    spend_log_reading,
)
from exporter.collectors.usage.tables import ENTITY_SOURCES, MEASURES, MONEY_UNITS, USER_SOURCE

EVERY_COLUMN = {m for measure in MEASURES for m in measure.needs} | {c for _, c in USER_SOURCE.columns} | {"updated_at"}
KEY = View("litellm_key", "api_key", ("model_group",), 2, "key")
GLOBAL = View("litellm", "model_group", ("model", "provider"), 100)


def text(composed) -> str:
    return composed.as_string(None)


def test_a_table_is_read_for_the_measures_it_has_and_its_views_publish():
    full = daily_reading(USER_SOURCE, EVERY_COLUMN)
    assert [m.column for m in full.measures] == [m.column for m in MEASURES]
    # No global view: the measures only the global families publish are not summed at all,
    # but the ranking measure always is.
    team = ENTITY_SOURCES["team"]
    columns = {m for measure in MEASURES for m in measure.needs} | {"team_id", "model_group"}
    per_entity = daily_reading(team, columns, per_entity_only=True)
    assert [m.column for m in per_entity.measures] == [m.column for m in MEASURES if m.per_entity]
    # An older table without a newer column: that measure is left out, the rest read.
    older = daily_reading(USER_SOURCE, EVERY_COLUMN - {"timed_requests", "updated_at"})
    assert "timed_requests" not in [m.column for m in older.measures] and older.updated is None
    # Too old to read at all: no request counts.
    assert daily_reading(USER_SOURCE, EVERY_COLUMN - {"api_requests"}) is None
    # The organisation's spend-log fallback needs the column its rows are chosen by.
    assert spend_log_reading(ENTITY_SOURCES["organization"], {"spend", "api_key"}) is None


def test_money_is_summed_in_whole_nano_dollars_and_counts_as_they_are():
    reading = daily_reading(USER_SOURCE, EVERY_COLUMN)
    spend = text(reading.values[0])
    assert spend == f'round((d."spend")::float8 * {MONEY_UNITS})::int8'
    requests = text(reading.values[1])
    assert requests == '(d."api_requests")::int8'


def test_a_pass_groups_by_part_and_every_label_folding_the_entities_not_shown():
    reading = daily_reading(USER_SOURCE, EVERY_COLUMN)
    members = frozenset({"k1", "k2"})
    query, params = folded_query(reading, (GLOBAL, KEY), (None, members), frozenset({"api_key"}))
    sql = text(query)
    assert params == {"m1": ["k1", "k2"]}
    assert "THEN 0 WHEN" in sql and "GROUP BY 1, 2, 3, 4, 5" in sql  # part, model_group, model, provider, key
    assert "= ANY(%(m1)s::text[]) THEN coalesce(d.\"api_key\"::text, '') ELSE '__other__' END" in sql
    # A poll reads the window alone, which is all one part.
    window, _ = folded_query(reading, (GLOBAL, KEY), (None, members), frozenset({"api_key"}), lo="start")
    assert text(window).startswith("SELECT 2, ") and "d.date >= %(start)s::text" in text(window)


def test_a_ranking_returns_each_capped_view_top_and_one_more():
    reading = daily_reading(USER_SOURCE, EVERY_COLUMN)
    user = View("litellm_user", "user_id", ("model_group",), 3, "user")
    sql = text(rank_query(reading, (KEY, user), (4, 5)))
    assert sql.count("UNION ALL") == 1 and "LIMIT 5" in sql and "LIMIT 6" in sql
    assert 'ORDER BY total DESC, "i0" COLLATE "C"' in sql  # ties by id, bytewise, on every server


def test_decoded_rows_are_each_views_sums_by_part_with_the_rest_as_other():
    # Rows: part, model_group, model, provider, api_key (as the pass folds it), sums (spend,
    # requests), rows, newest update.
    rows = [
        (OLD, "gpt", "gpt-4o", "openai", "k1", 10, 1, 1, 5.0),
        (OLD, "gpt", "gpt-4o-mini", "openai", "k9", 4, 1, 1, 5.0),
        (RECENT, "gpt", "gpt-4o", "openai", OTHER, 6, 2, 2, 6.0),
        (WINDOW, "gpt", "gpt-4o", "openai", "k1", 1, 1, 1, 9.0),
    ]
    found = decode_folded(rows, (GLOBAL, KEY), (None, frozenset({"k1"})), 2)
    old, recent, window = found.old, found.recent, found.window
    assert found.parts == (old, recent, window)
    assert {g: list(v) for g, v in old[0].items()} == {
        ("gpt", "gpt-4o", "openai"): [10, 1, 1],
        ("gpt", "gpt-4o-mini", "openai"): [4, 1, 1],
    }
    # k9 is not shown: summed into the overflow entity, which keeps the model group only.
    assert {g: list(v) for g, v in old[1].items()} == {("k1", "gpt"): [10, 1, 1], (OTHER, "gpt"): [4, 1, 1]}
    assert {g: list(v) for g, v in recent[1].items()} == {(OTHER, "gpt"): [6, 2, 2]}
    assert {g: list(v) for g, v in window[1].items()} == {("k1", "gpt"): [1, 1, 1]}
    assert found.latest_update == 9.0  # the window's newest update only


def test_the_overflow_entity_keeps_model_groups_and_status_codes_not_models():
    view = View("litellm", "model_group", ("model", "provider", "status_code"), 10)
    assert other_group(view, ("gpt", "gpt-4o", "openai", "429")) == (OTHER, "", "", "429")
