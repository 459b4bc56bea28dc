"""What the usage counters must equal: sums computed by PostgreSQL over the daily tables.

Written independently of the exporter's queries on purpose: these are whole-table
aggregates, the slow and obviously right way.
"""

from __future__ import annotations

import math

import psycopg

from .exporters import Samples

MEASURES = {
    "spend_usd": "spend",
    "requests": "api_requests",
    "requests_failed": "failed_requests",
    "input_tokens": "prompt_tokens",
    "output_tokens": "completion_tokens",
}
GLOBAL_ONLY = {
    "cache_read_input_tokens": "cache_read_input_tokens",
    "cache_creation_input_tokens": "cache_creation_input_tokens",
}

# family prefix -> (SELECT list of "expression AS label", FROM clause)
_MG = "coalesce(d.model_group, '') AS model_group"
QUERIES = {
    "litellm": (
        f"{_MG}, coalesce(d.model, '') AS model, coalesce(d.custom_llm_provider, '') AS provider",
        '"LiteLLM_DailyUserSpend" d',
    ),
    "litellm_key": (
        "left(d.api_key, 12) AS key_hash,"
        " coalesce(CASE WHEN v.token IS NULL THEN dv.key_alias ELSE v.key_alias END, '') AS key_alias,"
        " coalesce(CASE WHEN v.token IS NULL THEN dv.team_id ELSE v.team_id END, '') AS team_id,"
        f" {_MG}",
        '"LiteLLM_DailyUserSpend" d LEFT JOIN "LiteLLM_VerificationToken" v ON v.token = d.api_key'
        ' LEFT JOIN (SELECT DISTINCT ON (token) token, key_alias, team_id FROM "LiteLLM_DeletedVerificationToken"'
        " ORDER BY token, deleted_at DESC) dv ON dv.token = d.api_key",
    ),
    "litellm_user": (f"coalesce(d.user_id, '') AS user_id, {_MG}", '"LiteLLM_DailyUserSpend" d'),
    "litellm_team": (
        "coalesce(d.team_id, '') AS team_id,"
        " coalesce(CASE WHEN t.team_id IS NULL THEN dt.team_alias ELSE t.team_alias END, '') AS team_alias,"
        f" {_MG}",
        '"LiteLLM_DailyTeamSpend" d LEFT JOIN "LiteLLM_TeamTable" t ON t.team_id = d.team_id'
        ' LEFT JOIN (SELECT DISTINCT ON (team_id) team_id, team_alias FROM "LiteLLM_DeletedTeamTable"'
        " ORDER BY team_id, deleted_at DESC) dt ON dt.team_id = d.team_id",
    ),
    "litellm_organization": (
        "coalesce(d.organization_id, '') AS organization_id,"
        f" coalesce(o.organization_alias, '') AS organization_alias, {_MG}",
        '"LiteLLM_DailyOrganizationSpend" d'
        ' LEFT JOIN "LiteLLM_OrganizationTable" o ON o.organization_id = d.organization_id',
    ),
    "litellm_end_user": ("coalesce(d.end_user_id, '') AS end_user", '"LiteLLM_DailyEndUserSpend" d'),
    "litellm_tag": (f"coalesce(d.tag, '') AS tag, {_MG}", '"LiteLLM_DailyTagSpend" d'),
}


def expected(conn: psycopg.Connection, prefix: str, column: str) -> dict[frozenset[tuple[str, str]], float]:
    select, source = QUERIES[prefix]
    positions = ", ".join(str(i + 1) for i in range(select.count(" AS ")))
    cur = conn.execute(f"SELECT {select}, sum(d.{column}) FROM {source} GROUP BY {positions}")
    names = [c.name for c in cur.description][:-1]
    return {frozenset(zip(names, row[:-1], strict=True)): float(row[-1]) for row in cur.fetchall()}


def families(prefix: str) -> dict[str, str]:
    """Sample name -> daily column, for every counter of one family prefix."""
    measures = dict(MEASURES)
    if prefix == "litellm":
        measures.update(GLOBAL_ONLY)
    return {f"{prefix}_{name}_total": column for name, column in measures.items()}


def mismatches(conn: psycopg.Connection, samples: Samples, prefixes: tuple[str, ...] = tuple(QUERIES)) -> list[str]:
    """Every difference between the exposition and the database, as readable lines."""
    problems = []
    for prefix in prefixes:
        for sample_name, column in families(prefix).items():
            want = expected(conn, prefix, column)
            got = samples.get(sample_name, {})
            for labels in want.keys() | got.keys():
                if labels not in got:
                    problems.append(f"{sample_name}{dict(labels)}: missing, database says {want[labels]!r}")
                elif labels not in want:
                    problems.append(f"{sample_name}{dict(labels)}: {got[labels]!r} is not in the database")
                elif not math.isclose(got[labels], want[labels], rel_tol=1e-9, abs_tol=1e-12):
                    problems.append(f"{sample_name}{dict(labels)}: {got[labels]!r} != database {want[labels]!r}")
    return problems
