"""DDPM and flow matching on 2-D points: the pipeline, one module per stage.

    config -> datasets -> paths (the interface) -> schedules (DDPM) | flow (flow matching)
    -> objectives (the lookup) -> denoiser -> training -> samplers -> metrics
    (the views' maths: monitoring, ideal, budget; + forward, trajectory, checkpoints;
    ``python -m diffusion`` runs a whole job headless)

Nothing here imports streamlit or plotly: the dashboard draws what this package computes.
"""

from .config import PRESETS, ExperimentConfig, flow_matching, improved, reference
from .objectives import path_of
from .schedules import NoiseSchedule, make_schedule

__all__ = ["ExperimentConfig", "PRESETS", "NoiseSchedule", "flow_matching", "improved", "make_schedule", "path_of",
           "reference"]
