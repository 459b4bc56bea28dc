"""The entities LiteLLM accounts by, in one table: where LiteLLM keeps each (its own table with
its budget and aliases, its daily spend table), what the configuration offers for it (its usage
families' switch, cap and model-group label; its budget gauges' switch and cap), and the names
derived from it (``litellm_<entity>`` families, their caps, their labels).

A new LiteLLM entity is one row here: the usage catalogue (``collectors/usage/tables.py``)
reads its daily table, the budget collector its own table, the publisher its aliases, and the
configuration offers its keys. Tables that several entities share (the user table holds keys
and users; the error and tool rollups) stay in the catalogue, naming their entities from here.
"""

from __future__ import annotations

from dataclasses import dataclass

# Key hashes (sha256 of the virtual key) are shown by their first characters: enough to tell
# keys apart, not enough to be a credential anywhere.
KEY_HASH_LENGTH = 12


@dataclass(frozen=True)
class Record:
    """The entity's own table in LiteLLM: its spend in the current budget period, its budget
    and limits (its own columns, or ``LiteLLM_BudgetTable``'s through ``budget_id``, whichever
    this schema has), and the aliases that label its id."""

    table: str
    id: tuple[str, ...]  # the columns naming one row, labelled by ``Entity.ids``
    # Columns shown beside the id, each as a label of its own name ('' where NULL).
    aliases: tuple[str, ...] = ()
    # Where LiteLLM moves a deleted row: its aliases still label the usage counted before.
    deleted: str | None = None


@dataclass(frozen=True)
class DailyTable:
    """The entity's daily spend table (the columns of ``LiteLLM_DailyUserSpend`` with its own id
    column), and the same id in ``LiteLLM_SpendLogs`` for schemas without the daily table."""

    table: str
    column: str
    spend_log_column: str | None = None  # None: no spend-log fallback
    # A spend log whose column is empty has no row in the daily table.
    spend_log_required: bool = False


@dataclass(frozen=True)
class Entity:
    name: str
    noun: str  # as the families' descriptions name one
    ids: tuple[str, ...]  # the labels naming one, before its aliases
    # How the usage families' descriptions say "by ...", where it is more than the noun.
    by: str = ""
    record: Record | None = None
    daily: DailyTable | None = None
    # Ids shown by their first characters only (a key's hash).
    id_prefix: int | None = None
    # Usage families (None: none): the entities each shows by default, the top by all-time
    # spend; each with five counters per model group, the rest summed into __other__.
    usage_max_series: int | None = None
    # Whether they carry a model_group label by default (None: their tables have no model group).
    model_group: bool | None = True
    # Budget gauges (None: none): the rows each shows by default, up to nine gauges a row.
    budget_max_series: int | None = None
    # Every row has a budget (only_with_limits does not apply).
    always_limited: bool = False

    @property
    def family(self) -> str:
        """The prefix of its usage families, and what their caps are reported under."""
        return f"litellm_{self.name}"

    @property
    def budget_family(self) -> str:
        """What its budget gauges' cap is reported under."""
        return self.family if self.always_limited else f"{self.family}_budget"

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels of one entity's series: its ids, then its aliases."""
        return self.ids + (self.record.aliases if self.record else ())

    @property
    def described_by(self) -> str:
        return f" by {self.by or self.noun}"


# The README's series budget adds the caps up for a 10k-key, 1k-team deployment.
TABLE = (
    Entity(
        "key",
        "virtual key",
        ("key_hash",),
        record=Record(
            "LiteLLM_VerificationToken",
            ("token",),
            ("key_alias", "team_id"),
            deleted="LiteLLM_DeletedVerificationToken",
        ),
        id_prefix=KEY_HASH_LENGTH,
        usage_max_series=500,
        budget_max_series=500,
    ),
    Entity(
        "team",
        "team",
        ("team_id",),
        record=Record("LiteLLM_TeamTable", ("team_id",), ("team_alias",), deleted="LiteLLM_DeletedTeamTable"),
        daily=DailyTable("LiteLLM_DailyTeamSpend", "team_id", "team_id"),
        usage_max_series=200,
        budget_max_series=500,
    ),
    Entity(
        "user",
        "internal user",
        ("user_id",),
        record=Record("LiteLLM_UserTable", ("user_id",)),
        usage_max_series=200,
        budget_max_series=200,
    ),
    Entity(
        "organization",
        "organization",
        ("organization_id",),
        record=Record("LiteLLM_OrganizationTable", ("organization_id",), ("organization_alias",)),
        daily=DailyTable("LiteLLM_DailyOrganizationSpend", "organization_id", "organization_id", True),
        usage_max_series=50,
        budget_max_series=100,
    ),
    # End users are many, and callers' own ids: no model group unless asked for.
    Entity(
        "end_user",
        "end user",
        ("end_user",),
        by="end user (the caller's customer id)",
        record=Record("LiteLLM_EndUserTable", ("user_id",)),
        daily=DailyTable("LiteLLM_DailyEndUserSpend", "end_user_id", "end_user", True),
        usage_max_series=500,
        model_group=False,
        budget_max_series=200,
    ),
    Entity(
        "team_member",
        "team member",
        ("team_id", "user_id"),
        record=Record("LiteLLM_TeamMembership", ("team_id", "user_id")),
        budget_max_series=200,
    ),
    Entity(
        "tag",
        "tag",
        ("tag",),
        by="request tag",
        record=Record("LiteLLM_TagTable", ("tag_name",)),
        daily=DailyTable("LiteLLM_DailyTagSpend", "tag", "tag"),
        usage_max_series=100,
        budget_max_series=100,
    ),
    Entity(
        "agent", "agent", ("agent_id",), daily=DailyTable("LiteLLM_DailyAgentSpend", "agent_id"), usage_max_series=50
    ),
    Entity("task", "task type", ("task_type",), usage_max_series=20),
    Entity("tool", "tool", ("tool",), usage_max_series=100, model_group=None),
    Entity("guardrail", "guardrail", ("guardrail_id",), usage_max_series=50, model_group=None),
    Entity("policy", "policy", ("policy_id",), usage_max_series=50, model_group=None),
    # Spend per window of multi-window budgets (LiteLLM_BudgetWindowSpend).
    Entity(
        "budget_window",
        "budget window",
        ("entity_type", "entity_id", "window"),
        budget_max_series=500,
        always_limited=True,
    ),
)
BY_NAME = {entity.name: entity for entity in TABLE}
USAGE = tuple(e for e in TABLE if e.usage_max_series is not None)
BUDGETS = tuple(e for e in TABLE if e.budget_max_series is not None)
