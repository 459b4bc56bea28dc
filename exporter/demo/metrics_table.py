"""METRICS.md: every metric family the exporter serves, as a table built from a live exposition.

The table is produced from the families the collectors return, never written by hand:
``tests/test_metrics_table.py`` builds a populated database, polls every collector, and checks
METRICS.md against what it gets (``LITELLM_EXPORTER_WRITE_METRICS=1`` writes the file instead).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..families import Family

HEADER = """# Metrics

Every metric family litellm-exporter serves, generated from a live exposition by
`tests/test_metrics_table.py` (it fails when this file and the code disagree). Besides these,
`process_*` and `python_info` come from prometheus-client. A family appears only where the
database has what it is read from (see the README's "Older LiteLLM versions").

| metric | type | labels | help |
| --- | --- | --- | --- |
"""


def table(families: Iterable[Family]) -> str:
    rows: dict[str, str] = {}
    for family in families:
        name = f"{family.name}_total" if family.kind == "counter" else family.name
        labels = ", ".join(
            f"`{label}`" + (" (on `__other__` only)" if label in family.omit_empty else "") for label in family.labels
        )
        help_text = family.documentation.replace("|", "\\|")
        rows[name] = f"| `{name}` | {family.kind} | {labels} | {help_text} |"
    return HEADER + "\n".join(rows[name] for name in sorted(rows)) + "\n"
