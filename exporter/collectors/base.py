"""What every collector is: a named poll of the database on its own interval."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..config import Config
from ..db import Database
from ..families import Family


class Collector(ABC):
    """Polls the database and returns a complete snapshot of its metric families.

    A poll either returns every family the collector owns or raises; a partial
    snapshot is never published.
    """

    name: str
    interval: float

    @property
    def problem(self) -> str | None:
        """Something about the database a user must fix, in one sentence, for /ready to say."""
        return None

    @property
    def progress(self) -> str | None:
        """How far a long poll under way has got, in a few words; None when none is."""
        return None

    @property
    def enabled(self) -> bool:
        """A disabled collector is not polled and reports nothing."""
        return True

    @abstractmethod
    def poll(self, db: Database) -> list[Family]:
        """Query the database and return the families to serve until the next poll."""

    @abstractmethod
    def reconfigure(self, config: Config) -> None:
        """Take a reloaded configuration, keeping what was counted."""

    def on_failure(self, db: Database, exc: BaseException) -> list[Family] | None:
        """Families to serve after a failed poll; None keeps serving the last good snapshot."""
        return None
