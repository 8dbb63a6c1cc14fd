"""The lookup: which path (``paths.ObjectivePath``) each objective of ``ScheduleConfig`` names.

    ddpm   schedules.NoiseSchedule   the beta schedule's path, eps as the target, DDPM / DDIM
    flow   flow.FlowPath             the straight line, the velocity as the target, Euler / Heun

Everything else reaches an objective's behaviour through ``path_of(config)`` (or, knowing only the
objective or a sampler, ``path_class`` and ``objective_of``), never by testing its name.
"""

from __future__ import annotations

from typing import get_args

from .config import SAMPLERS_OF, Objective, SamplerKind, ScheduleConfig
from .flow import FlowPath
from .paths import ObjectivePath
from .schedules import NoiseSchedule

PATHS: dict[Objective, type[ObjectivePath]] = {"ddpm": NoiseSchedule, "flow": FlowPath}


def path_class(objective: Objective) -> type[ObjectivePath]:
    """The class of ``objective``'s path; ValueError naming the allowed objectives otherwise."""
    if objective not in PATHS:
        raise ValueError(f"objective must be one of {', '.join(get_args(Objective))}; got {objective!r}")
    return PATHS[objective]


def path_of(config: ScheduleConfig) -> ObjectivePath:
    """The path of ``config``'s objective, derived from ``config``."""
    return path_class(config.objective).from_config(config)


def objective_of(kind: SamplerKind) -> Objective:
    """The objective whose samplers include ``kind`` (``config.SAMPLERS_OF``)."""
    for objective, kinds in SAMPLERS_OF.items():
        if kind in kinds:
            return objective
    raise ValueError(f"sampler must be one of {', '.join(get_args(SamplerKind))}; got {kind!r}")
