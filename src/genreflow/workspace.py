"""What one task of a run works with, opened once: its settings, its store, its run id
and, read at most once, the champion it is compared with."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from genreflow import layout, registry
from genreflow.config import Settings
from genreflow.storage import Store, open_store


@dataclass
class Workspace:
    settings: Settings
    store: Store
    run_id: str = ""

    @classmethod
    def open(cls, settings: Settings, run_id: str = "") -> Workspace:
        return cls(settings, open_store(settings.store), run_id)

    @cached_property
    def champion(self) -> registry.Champion:
        """The champion as this task first read it: a publish's compare-and-swap expects
        latest to hold the same version."""
        return registry.read_champion(self.store)

    @property
    def run_dir(self) -> str:
        return layout.run_dir(self.run_id)
