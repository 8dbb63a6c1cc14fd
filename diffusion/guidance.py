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

from .config import ExperimentConfig
from .datasets import Dataset
from .denoiser import Denoiser
from .metrics import class_scores
from .paths import ObjectivePath
from .samplers import sample_model

GUIDANCE_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)
GUIDANCE_COLUMNS = ("guidance", "class", "name", "count", "energy_distance", "energy_distance_floor",
                    "energy_distance_ratio", "spread_ratio")


def guidance_rows(
    model: Denoiser, schedule: ObjectivePath, config: ExperimentConfig, dataset: Dataset, *,
    scales: tuple[float, ...] = GUIDANCE_SCALES, run_salt: int | None = None, progress=None,
) -> list[dict]:
    """One row per scale and class (``GUIDANCE_COLUMNS``): the model sampled with ``config``'s
    sampler for every class at each scale in ``scales``, each class's samples scored against its
    data. Scales other than 1 need a model trained with label dropout (ValueError otherwise)."""
    names = config.data.classes
    if not model.num_classes:
        raise ValueError("the guidance sweep needs a conditional model (train.conditional)")
    if config.train.label_dropout == 0 and any(w != 1 for w in scales):
        raise ValueError("scales other than 1 need the unconditional model: train with train.label_dropout above 0")
    rows = []
    for done, scale in enumerate(scales):
        sampler = dataclasses.replace(config.sampler, guidance=float(scale), class_label=-1)
        trajectory = sample_model(model, schedule, sampler, run_salt=run_salt)
        for score in class_scores(trajectory.samples, trajectory.labels, dataset, names):
            rows.append({"guidance": float(scale), **score.to_dict()})
        if progress is not None:
            progress(done + 1, len(scales))
    return rows
