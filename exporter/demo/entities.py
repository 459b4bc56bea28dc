"""The entities LiteLLM's traffic refers to, written as the proxy's admin API leaves them: keys,
users, teams, team members, organisations, end users, tags and budgets; a seeded world of them
for the tests and the demo, and budgets on it.

This module writes; the exporter itself never imports it.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg import sql

from ..entities import BY_NAME
from .traffic import Caller, World, hash_token
from .writer import naive_utc


class Entities:
    """Creates the keys, users, teams, organisations and tags that traffic refers to."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def budget(self, budget_id: str, **columns: object) -> str:
        """A LiteLLM_BudgetTable row: max_budget, soft_budget, budget_reset_at, tpm_limit, ..."""
        self._insert(
            "LiteLLM_BudgetTable", {"budget_id": budget_id, "created_by": "test", "updated_by": "test", **columns}
        )
        return budget_id

    def organization(self, organization_id: str, alias: str, *, budget_id: str | None = None) -> str:
        budget = budget_id or self.budget(f"budget-{organization_id}")
        self._conn.execute(
            'INSERT INTO "LiteLLM_OrganizationTable" (organization_id, organization_alias, budget_id,'
            " created_by, updated_by) VALUES (%s, %s, %s, 'test', 'test')",
            (organization_id, alias, budget),
        )
        return organization_id

    def team(self, team_id: str, alias: str | None, *, organization_id: str | None = None, **columns: object) -> str:
        self._insert(
            "LiteLLM_TeamTable",
            {"team_id": team_id, "team_alias": alias, "organization_id": organization_id, **columns},
        )
        return team_id

    def user(self, user_id: str, **columns: object) -> str:
        self._insert("LiteLLM_UserTable", {"user_id": user_id, **columns})
        return user_id

    def team_member(self, team_id: str, user_id: str, *, budget_id: str | None = None) -> None:
        self._insert("LiteLLM_TeamMembership", {"team_id": team_id, "user_id": user_id, "budget_id": budget_id})

    def key(
        self,
        secret: str,
        alias: str | None,
        *,
        team_id: str | None = None,
        user_id: str | None = None,
        **columns: object,
    ) -> str:
        token = hash_token(secret)
        self._insert(
            "LiteLLM_VerificationToken",
            {"token": token, "key_alias": alias, "team_id": team_id, "user_id": user_id, **columns},
        )
        return token

    def end_user(self, user_id: str, **columns: object) -> str:
        self._insert("LiteLLM_EndUserTable", {"user_id": user_id, **columns})
        return user_id

    def tag(self, name: str, **columns: object) -> str:
        self._insert("LiteLLM_TagTable", {"tag_name": name, **columns})
        return name

    def rename_key(self, token: str, alias: str) -> None:
        self._conn.execute('UPDATE "LiteLLM_VerificationToken" SET key_alias = %s WHERE token = %s', (alias, token))

    def rename_team(self, team_id: str, alias: str) -> None:
        self._conn.execute('UPDATE "LiteLLM_TeamTable" SET team_alias = %s WHERE team_id = %s', (alias, team_id))

    def delete_key(self, token: str) -> None:
        """Move a key to the deleted-keys table, as the proxy's /key/delete does."""
        self._delete("key", token)

    def delete_team(self, team_id: str) -> None:
        self._delete("team", team_id)

    def _delete(self, entity: str, entity_id: str) -> None:
        """Move a row to the table LiteLLM keeps deleted ones in (``Record.deleted``), with its
        id, aliases and spend."""
        record = BY_NAME[entity].record
        assert record is not None and record.deleted is not None
        (id_column,) = record.id
        kept = sql.SQL(", ").join(map(sql.Identifier, (id_column, *record.aliases, "spend")))
        table = sql.Identifier(record.table)
        with self._conn.transaction():
            self._conn.execute(
                sql.SQL("INSERT INTO {} (id, {}, deleted_at) SELECT %s, {}, now() FROM {} WHERE {} = %s").format(
                    sql.Identifier(record.deleted), kept, kept, table, sql.Identifier(id_column)
                ),
                (str(uuid.uuid4()), entity_id),
            )
            self._conn.execute(
                sql.SQL("DELETE FROM {} WHERE {} = %s").format(table, sql.Identifier(id_column)), (entity_id,)
            )

    def _insert(self, table: str, columns: dict[str, object]) -> None:
        columns = {k: _maybe_naive(v) for k, v in columns.items()}
        if table in _NEEDS_UPDATED_AT:
            columns.setdefault("updated_at", datetime.now(timezone.utc).replace(tzinfo=None))
        self._conn.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(table),
                sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                sql.SQL(", ").join(sql.Placeholder() * len(columns)),
            ),
            list(columns.values()),
        )


_NEEDS_UPDATED_AT = {"LiteLLM_TeamTable"}


def _maybe_naive(value: object) -> object:
    return naive_utc(value) if isinstance(value, datetime) else value


def seed_world(
    conn: psycopg.Connection,
    rng: random.Random,
    *,
    organizations: int = 2,
    teams: int = 4,
    users: int = 6,
    keys: int = 10,
    end_users: int = 5,
) -> World:
    """Create organisations, teams, users, keys, end users and tags, with awkward names."""
    entities = Entities(conn)
    orgs = [entities.organization(f"org-{i}", f"Org {i}") for i in range(organizations)]
    team_ids = [
        entities.team(f"team-{i}", f'Team "{i}" \\ Équipe', organization_id=orgs[i % len(orgs)] if orgs else None)
        for i in range(teams)
    ]
    user_ids = [entities.user(f"user-{i}@example.com") for i in range(users)]
    callers = []
    for i in range(keys):
        team = team_ids[i % len(team_ids)] if team_ids and i % 5 != 4 else None
        user = user_ids[i % len(user_ids)] if user_ids and i % 3 != 2 else None
        token = entities.key(f"sk-test-{i}-{rng.random()}", f"key {i}" if i % 4 else None, team_id=team, user_id=user)
        org = orgs[team_ids.index(team) % len(orgs)] if team and orgs else None
        callers.append(Caller(token, team, user, org))
    for tag in ("prod", "batch", "line\nbreak"):
        entities.tag(tag)
    return World(
        callers=tuple(callers),
        end_users=tuple(entities.end_user(f"customer-{i}") for i in range(end_users)),
        tags=("prod", "batch", "line\nbreak", "User-Agent: python-requests/2.32", "task:summarize"),
        agents=("agent-research", "agent-support"),
        tools=("github-mcp__create_issue", "search-mcp__web"),
        guardrails=("presidio-pii", "lakera-prompt-injection"),
        policies=("default-policy",),
    )


def add_budgets(conn: psycopg.Connection, world: World, now: datetime) -> None:
    """Give the world's teams and some keys budgets, one key an expiry, and add a blocked key."""
    naive = naive_utc(now)
    teams = sorted({c.team_id for c in world.callers if c.team_id})
    for i, team_id in enumerate(teams):
        max_budget = 2.0 * (i + 1)
        conn.execute(
            'UPDATE "LiteLLM_TeamTable" SET max_budget = %s, soft_budget = %s, budget_duration = %s,'
            " budget_reset_at = %s, tpm_limit = %s, rpm_limit = %s WHERE team_id = %s",
            (max_budget, 0.8 * max_budget, "30d", naive + timedelta(days=10 + i), 100_000, 600, team_id),
        )
    for i, caller in enumerate(world.callers):
        if i % 3 == 0:
            conn.execute(
                'UPDATE "LiteLLM_VerificationToken" SET max_budget = %s, budget_duration = %s, budget_reset_at = %s'
                " WHERE token = %s",
                (1.0 + i, "7d", naive + timedelta(days=3), caller.api_key),
            )
    conn.execute(
        'UPDATE "LiteLLM_VerificationToken" SET expires = %s WHERE token = %s',
        (naive + timedelta(days=3), world.callers[-1].api_key),
    )
    Entities(conn).key("sk-demo-blocked", "blocked key", blocked=True)
