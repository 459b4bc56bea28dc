"""Whether the LiteLLM database answers: ``litellm_db_up``."""

from __future__ import annotations

from ..config import DatabaseProbeConfig
from ..db import Database
from ..families import Family, gauge
from .base import Collector

_UP_HELP = "Whether the exporter's last probe of the LiteLLM database succeeded (1) or not (0)."


class DatabaseCollector(Collector):
    name = "database"

    def __init__(self, config: DatabaseProbeConfig) -> None:
        self.interval = config.interval

    def poll(self, db: Database) -> list[Family]:
        with db.snapshot() as conn:
            conn.execute("SELECT 1").fetchone()
        return [gauge("litellm_db_up", _UP_HELP, 1.0)]

    def on_failure(self, exc: BaseException) -> list[Family]:
        return [gauge("litellm_db_up", _UP_HELP, 0.0)]
