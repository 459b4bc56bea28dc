"""The entity table (``exporter/entities.py``) and what is derived from it: the configuration's
entity keys, the usage views and their labels, the budget readings and the alias lookups. No
database: these hold the derivations, the ground-truth tests hold the values."""

from __future__ import annotations

from exporter import config as config_module
from exporter.collectors import budgets
from exporter.collectors.usage import publish, tables
from exporter.entities import BUDGETS, BY_NAME, KEY_HASH_LENGTH, TABLE, USAGE, DailyTable, Entity


def test_every_entity_is_offered_by_the_configuration_with_its_defaults():
    config = config_module.parse({"database": {"dsn": "postgresql://x"}})
    assert list(config.usage.entities) == [e.name for e in USAGE]
    assert list(config.budgets.entities) == [e.name for e in BUDGETS]
    for entity in USAGE:
        assert config.usage.entities[entity.name].max_series == entity.usage_max_series
        assert config.usage.entities[entity.name].model_group == bool(entity.model_group)
    for entity in BUDGETS:
        assert config.budgets.entities[entity.name].max_series == entity.budget_max_series


def test_every_usage_entity_is_read_by_a_view_named_for_it():
    views = [view for source in tables.ALL_SOURCES for view in source.views if view.entity is not None]
    assert {view.entity for view in views} == {e.name for e in USAGE}
    for view in views:
        assert view.family == BY_NAME[view.entity].family
    # An entity with a daily table of its own has that table as a source, keyed by its first label.
    for entity in TABLE:
        if entity.daily is not None:
            source = tables.ENTITY_SOURCES[entity.name]
            assert source.table == entity.daily.table
            assert source.columns[0] == (entity.ids[0], entity.daily.column)
            assert [v.entity for v in source.views] == [entity.name]


def test_a_new_entity_with_a_daily_table_is_one_entry(monkeypatch):
    # What tables derives for an entity it has never seen: its source, view and spend-log fallback.
    project = Entity(
        "project",
        "project",
        ("project_id",),
        daily=DailyTable("LiteLLM_DailyProjectSpend", "project_id", "project_id", True),
    )
    monkeypatch.setitem(BY_NAME, "project", project)
    assert project.daily is not None
    source = tables._entity_source(project, project.daily)
    assert source.table == "LiteLLM_DailyProjectSpend"
    assert source.logical == {"project_id", "model_group"}
    assert source.spend_log_columns == (("project_id", "project_id"), ("model_group", "model_group"))
    assert source.spend_log_required == "project_id"
    (view,) = source.views
    assert (view.entity, view.id, view.key) == ("project", "project_id", "litellm_project")
    assert project.labels == ("project_id",) and project.described_by == " by project"


def test_budget_entities_are_read_from_their_own_tables_and_budget_windows_apart():
    assert [e.name for e in budgets.ENTITIES] == [e.name for e in BUDGETS if e.name != "budget_window"]
    assert {e.budget_family for e in BUDGETS} >= {"litellm_key_budget", "litellm_budget_window"}


def _columns(**extra: set[str]) -> dict[str, set[str]]:
    found = {
        "LiteLLM_BudgetTable": {"budget_id", "max_budget", "soft_budget", "tpm_limit", "rpm_limit", "budget_reset_at"},
        "LiteLLM_VerificationToken": {
            "token",
            "key_alias",
            "team_id",
            "spend",
            "max_budget",
            "budget_reset_at",
            "tpm_limit",
            "rpm_limit",
            "blocked",
            "expires",
            "budget_id",
        },
        "LiteLLM_UserTable": {"user_id", "spend", "max_budget", "budget_reset_at", "tpm_limit", "rpm_limit"},
        "LiteLLM_OrganizationTable": {"organization_id", "organization_alias", "spend", "budget_id"},
    }
    found.update(extra)
    return found


def test_a_budget_is_the_entitys_own_column_else_its_budget_tables_else_the_first_set():
    found = _columns()
    key = budgets._reading(BY_NAME["key"], found)
    assert key is not None
    assert key.label_sql == (
        f"left(e.token, {KEY_HASH_LENGTH})",
        "coalesce(e.key_alias, '')",
        "coalesce(e.team_id, '')",
    )
    assert key.values["max_budget"] == "coalesce(e.max_budget, b.max_budget)"
    assert key.values["soft_budget"] == "b.soft_budget"  # keys have none of their own
    assert key.values["expires"] == "e.expires" and key.values["blocked"] == "e.blocked"
    assert key.joins_budget
    user = budgets._reading(BY_NAME["user"], found)
    assert user is not None and not user.joins_budget  # no budget_id: its own columns only
    assert user.values["soft_budget"] is None and user.values["max_budget"] == "e.max_budget"
    org = budgets._reading(BY_NAME["organization"], found)
    assert org is not None
    assert org.values["max_budget"] == "b.max_budget" and org.values["spend"] == "e.spend"
    assert budgets._reading(BY_NAME["tag"], found) is None  # no such table here


def test_a_schema_without_a_column_reads_no_value_and_an_older_alias_as_empty():
    found = _columns(LiteLLM_OrganizationTable={"organization_id", "spend"})
    org = budgets._reading(BY_NAME["organization"], found)
    assert org is not None
    assert org.label_sql == ("e.organization_id", "''")
    assert org.values["max_budget"] is None and not org.joins_budget
    query = budgets._select(org, only_with_limits=True, limit=None).as_string(None)
    assert "WHERE FALSE" in query  # nothing could be a limit: no row is one


def test_the_capped_budget_query_keeps_the_most_spent_first_and_counts_them_all():
    key = budgets._reading(BY_NAME["key"], _columns())
    assert key is not None
    query = budgets._select(key, only_with_limits=True, limit=500).as_string(None)
    assert 'LEFT JOIN "LiteLLM_BudgetTable" b ON b.budget_id = e.budget_id' in query
    assert "count(*) OVER ()" in query and query.endswith("ORDER BY 4 DESC NULLS LAST, 1, 2, 3 LIMIT 500")
    assert "e.blocked IS TRUE" in query


def test_aliases_are_looked_up_for_the_entities_that_have_them_deleted_rows_first():
    assert publish.METADATA_TABLES == (
        "LiteLLM_DeletedVerificationToken",
        "LiteLLM_VerificationToken",
        "LiteLLM_DeletedTeamTable",
        "LiteLLM_TeamTable",
        "LiteLLM_OrganizationTable",
    )
    assert BY_NAME["key"].labels == ("key_hash", "key_alias", "team_id")
    assert BY_NAME["team_member"].labels == ("team_id", "user_id")
