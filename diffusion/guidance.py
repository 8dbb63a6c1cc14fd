"""What classifier-free guidance does to the samples, measured (issue 25).

A conditional model (``train.conditional``) sampled at guidance scale w follows u + w (c - u)
(``Denoiser.guided``). ``guidance_rows`` samples it at several w for every class at once (point i
asks for class i mod K, the same x_T and noise at every w) and scores each class's samples against
that class's data (``metrics.class_scores``): the energy distance over its floor (quality) and the
spread against the class's (diversity). Guidance typically trades the second for the first up to a
point; at large w the samples leave the data, crowd towards one side of their class and the
distance rises again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .config import ExperimentConfig, SamplerConfig
from .datasets import Dataset
from .denoiser import Denoiser
from .metrics import class_scores
from .paths import ObjectivePath
from .samplers import sample_model

GUIDANCE_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)
GUIDANCE_COLUMNS = ("guidance", "class", "name", "count", "energy_distance", "energy_distance_floor",
                    "energy_distance_ratio", "spread_ratio")


@dataclass(frozen=True)
class Sweep:
    """A conditional model sampled at each scale: samples[i] at scales[i], point j for class
    labels[j] (the same x_T and noise at every scale), in the model's units; rows: one dict of
    ``GUIDANCE_COLUMNS`` per scale and class."""

    scales: tuple[float, ...]
    samples: tuple[np.ndarray, ...]  # (N, 2) each
    labels: np.ndarray  # (N,)
    rows: tuple[dict, ...]


def guidance_sweep(
    model: Denoiser, schedule: ObjectivePath, sampler: SamplerConfig, dataset: Dataset, names: tuple[str, ...], *,
    scales: tuple[float, ...] = GUIDANCE_SCALES, run_salt: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> Sweep:
    """``sampler`` at each scale in ``scales`` for every class (its own scale and class are not
    used), each class's samples scored against that class's data (``metrics.class_scores``).
    ``progress(done, total, scale)`` after each scale."""
    if not model.num_classes:
        raise ValueError("the guidance sweep needs a conditional model (train.conditional)")
    samples, rows, labels = [], [], None
    for done, scale in enumerate(scales):
        trajectory = sample_model(model, schedule, dataclasses.replace(sampler, guidance=float(scale), class_label=-1),
                                  run_salt=run_salt)
        samples.append(trajectory.samples)
        labels = trajectory.labels
        rows += [{"guidance": float(scale), **score.to_dict()}
                 for score in class_scores(trajectory.samples, labels, dataset, names)]
        if progress is not None:
            progress(done + 1, len(scales), float(scale))
    return Sweep(tuple(float(w) for w in scales), tuple(samples), labels, tuple(rows))


def guidance_rows(
    model: Denoiser, schedule: ObjectivePath, config: ExperimentConfig, dataset: Dataset, *,
    scales: tuple[float, ...] = GUIDANCE_SCALES, run_salt: int | None = None,
) -> list[dict]:
    """The sweep's rows for ``config``'s sampler. Scales other than 1 need a model trained with
    label dropout (ValueError otherwise)."""
    if config.train.label_dropout == 0 and any(w != 1 for w in scales):
        raise ValueError("scales other than 1 need the unconditional model: train with train.label_dropout above 0")
    sweep = guidance_sweep(model, schedule, config.sampler, dataset, config.data.classes, scales=scales, run_salt=run_salt)
    return list(sweep.rows)
