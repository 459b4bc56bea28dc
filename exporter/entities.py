"""The entities LiteLLM accounts by, in one table: what the configuration offers for each (its
usage families' switch, cap and model-group label; its budget gauges' switch and cap), and the
names derived from it (``litellm_<entity>`` families, their caps). A new LiteLLM entity is one
row here, then its table in ``collectors/usage/tables.py`` or its spec in ``collectors/budgets.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

# Key hashes (sha256 of the virtual key) are shown by their first characters: enough to tell
# keys apart, not enough to be a credential anywhere.
KEY_HASH_LENGTH = 12


@dataclass(frozen=True)
class Entity:
    name: str
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


# The README's series budget adds the caps up for a 10k-key, 1k-team deployment.
TABLE = (
    Entity("key", usage_max_series=500, budget_max_series=500),
    Entity("team", usage_max_series=200, budget_max_series=500),
    Entity("user", usage_max_series=200, budget_max_series=200),
    Entity("organization", usage_max_series=50, budget_max_series=100),
    # End users are many, and callers' own ids: no model group unless asked for.
    Entity("end_user", usage_max_series=500, model_group=False, budget_max_series=200),
    Entity("team_member", budget_max_series=200),
    Entity("tag", usage_max_series=100, budget_max_series=100),
    Entity("agent", usage_max_series=50),
    Entity("task", usage_max_series=20),
    Entity("tool", usage_max_series=100, model_group=None),
    Entity("guardrail", usage_max_series=50, model_group=None),
    Entity("policy", usage_max_series=50, model_group=None),
    # Spend per window of multi-window budgets (LiteLLM_BudgetWindowSpend).
    Entity("budget_window", budget_max_series=500, always_limited=True),
)
BY_NAME = {entity.name: entity for entity in TABLE}
USAGE = tuple(e for e in TABLE if e.usage_max_series is not None)
BUDGETS = tuple(e for e in TABLE if e.budget_max_series is not None)
