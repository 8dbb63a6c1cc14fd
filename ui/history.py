"""A session's finished runs, to compare: what each one was, and which settings tell them apart.

No Streamlit here: the page keeps a tuple of ``HistoryEntry`` in its session state and draws the
table this module builds. Each run keeps the number it got when it first appeared (#1, #2, ...):
showing or pinning it again never renumbers it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from diffusion.config import PRESETS, ExperimentConfig, experiment_settings

MAX_ENTRIES = 20
MAX_LABEL_SETTINGS = 4  # settings named in a run's label; more are summed up as "+k more"


@dataclass(frozen=True)
class HistoryEntry:
    """One finished run as it was shown: its settings (sampler included) and its headline numbers."""

    config: ExperimentConfig
    source: str  # "trained", or "file:<digest>" for a model file
    final_loss: float | None  # None for a model file (no losses)
    energy_ratio: float  # energy distance / noise floor of its samples
    train_seconds: float
    points_name: str | None = None  # for a run on the user's points: "drawn" or the file's name
    number: int = 0  # the run's number in the session, the order it first appeared (set by ``record``)

    @property
    def key(self) -> tuple:
        """Entries are the same run when the weights and the sampler are the same."""
        return self.config.training, self.config.sampler, self.source


def record(history: tuple[HistoryEntry, ...], entry: HistoryEntry) -> tuple[HistoryEntry, ...]:
    """``history`` with ``entry`` last (most recently shown), at most ``MAX_ENTRIES`` long (the
    least recently shown go first). An entry of the same run keeps its number (and the name of its
    points); a new one takes the next number. The highest number given is always still in
    ``history`` (a new entry is last, so never the one dropped), so numbers are never reused."""
    earlier = next((e for e in history if e.key == entry.key), None)
    if earlier is not None:
        entry = dataclasses.replace(entry, number=earlier.number, points_name=entry.points_name or earlier.points_name)
    else:
        entry = dataclasses.replace(entry, number=max((e.number for e in history), default=0) + 1)
    kept = tuple(e for e in history if e.key != entry.key)
    return (*kept, entry)[-MAX_ENTRIES:]


def by_number(history: tuple[HistoryEntry, ...]) -> tuple[HistoryEntry, ...]:
    """The entries in the order they first appeared (the table's and the picker's order)."""
    return tuple(sorted(history, key=lambda e: e.number))


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


def closest_preset(config: ExperimentConfig) -> str:
    """The preset that needs the fewest settings changed to give ``config`` (the first of
    ``PRESETS`` on a tie): its own preset when it is one exactly."""
    def changes(name: str) -> int:
        preset = PRESETS[name]()
        return sum(preset.get(d.path) != config.get(d.path) for d in experiment_settings())

    return min(PRESETS, key=changes)


def _points_text(entry: HistoryEntry) -> str:
    points = entry.config.data.points
    if points is None:
        return ""
    return entry.points_name or f"points {points.digest[:8]}"


def _setting_text(entry: HistoryEntry, key: str, path: str | None) -> str:
    if key == "points":
        return _points_text(entry)
    value = entry.config.get(path)
    if key == "dataset":
        return _points_text(entry) if value == "points" else str(value)
    return f"{key}={_shown(value)}"


def telling(entry: HistoryEntry, keys: Iterable[str]) -> list[str]:
    """What tells ``entry`` apart among runs differing in ``keys``: each of those settings where
    it differs from its closest preset, as people read it ("T=50", "moons", "drawn"); and
    "model file" for a model loaded from a file."""
    paths = {d.key: d.path for d in experiment_settings()}
    preset = PRESETS[closest_preset(entry.config)]()
    parts = []
    for key in keys:
        if key == "points":
            if "dataset" not in keys:  # the dataset's entry already names the points
                parts.append(_points_text(entry))
            continue
        if entry.config.get(paths[key]) != preset.get(paths[key]):
            parts.append(_setting_text(entry, key, paths[key]))
    if entry.source != "trained":
        parts.append("model file")
    return [part for part in parts if part]


def label(entry: HistoryEntry, history: tuple[HistoryEntry, ...]) -> str:
    """The run's name in the picker: its number, its preset and what tells it apart from the
    other runs, e.g. "#3 · improved · T=50 · moons"."""
    parts = telling(entry, differing(e.config for e in history))
    if len(parts) > MAX_LABEL_SETTINGS:
        parts = [*parts[:MAX_LABEL_SETTINGS], f"+{len(parts) - MAX_LABEL_SETTINGS} more"]
    return " · ".join([f"#{entry.number}", closest_preset(entry.config), *parts])


def table(history: tuple[HistoryEntry, ...], baseline: HistoryEntry | None = None) -> dict[str, list]:
    """Columns of the history table, a row per run in the order they first appeared: its number
    (the baseline marked), the headline numbers first (final loss, energy distance over floor),
    then its preset and the settings that tell it apart (``telling``), and the training time."""
    entries = by_number(history)
    keys = differing(e.config for e in entries)
    pinned = baseline.key if baseline is not None else None
    return {
        "run": [f"#{e.number}" + (" (baseline)" if e.key == pinned else "") for e in entries],
        "final loss": ["file" if e.final_loss is None else f"{e.final_loss:.4f}" for e in entries],
        "energy distance / floor": [f"{e.energy_ratio:.2f}" for e in entries],
        "preset": [closest_preset(e.config) for e in entries],
        "settings": [", ".join(telling(e, keys)) for e in entries],
        "train s": [f"{e.train_seconds:.2f}" for e in entries],
    }


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
