"""A session's finished runs, to compare: what each one was, and which settings tell them apart.

No Streamlit here: the page keeps a tuple of ``HistoryEntry`` in its session state and draws the
table this module builds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from diffusion.config import ExperimentConfig, experiment_settings

MAX_ENTRIES = 20


@dataclass(frozen=True)
class HistoryEntry:
    """One finished run as it was shown: its settings (sampler included) and its headline numbers."""

    config: ExperimentConfig
    source: str  # "trained", or "file:<digest>" for a model file
    final_loss: float | None  # None for a model file (no losses)
    energy_ratio: float  # energy distance / noise floor of its samples
    train_seconds: float

    @property
    def key(self) -> tuple:
        """Entries are the same run when the weights and the sampler are the same."""
        return self.config.training, self.config.sampler, self.source


def record(history: tuple[HistoryEntry, ...], entry: HistoryEntry) -> tuple[HistoryEntry, ...]:
    """``history`` with ``entry`` last (an earlier entry of the same run is replaced), at most
    ``MAX_ENTRIES`` long (the oldest go first)."""
    kept = tuple(e for e in history if e.key != entry.key)
    return (*kept, entry)[-MAX_ENTRIES:]


def differing(configs: Iterable[ExperimentConfig]) -> list[str]:
    """The link keys of the settings whose values differ between the configs, in sidebar order
    (``points`` when they train on different point sets)."""
    configs = list(configs)
    keys = []
    for d in experiment_settings():
        if len({repr(config.get(d.path)) for config in configs}) > 1:
            keys.append(d.key)
    if len({config.data.points.digest if config.data.points else None for config in configs}) > 1:
        keys.append("points")
    return keys


def table(history: tuple[HistoryEntry, ...], baseline: HistoryEntry | None = None) -> dict[str, list]:
    """Columns of the history table: a mark for the baseline, the settings that differ, the
    final loss, energy distance over floor and training time."""
    paths = {d.key: d.path for d in experiment_settings()}
    columns: dict[str, list] = {"baseline": ["📌" if baseline is not None and e.key == baseline.key else ""
                                             for e in history]}
    for key in differing(e.config for e in history):
        if key == "points":
            columns[key] = [e.config.data.points.digest[:8] if e.config.data.points else "" for e in history]
        else:
            columns[key] = [_shown(e.config.get(paths[key])) for e in history]
    columns["final loss"] = ["file" if e.final_loss is None else f"{e.final_loss:.4f}" for e in history]
    columns["energy distance / floor"] = [f"{e.energy_ratio:.2f}" for e in history]
    columns["train s"] = [f"{e.train_seconds:.2f}" for e in history]
    return columns


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
