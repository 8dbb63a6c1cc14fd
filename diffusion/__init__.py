"""DDPM on 2-D points: the pipeline, one module per stage.

    config -> datasets -> schedules -> forward -> denoiser -> training -> samplers -> metrics
    (flow matching's path and solvers: flow; the views' maths: monitoring, ideal, budget;
    + checkpoints; ``python -m diffusion`` runs a whole job headless)

Nothing here imports streamlit or plotly: the dashboard draws what this package computes.
"""

from .config import PRESETS, ExperimentConfig, flow_matching, improved, reference
from .schedules import NoiseSchedule, make_schedule

__all__ = ["ExperimentConfig", "PRESETS", "NoiseSchedule", "flow_matching", "improved", "make_schedule", "reference"]
