"""Words the page uses in more than one place: a sampler is named the same in the sidebar and in
the sampling budget, and the frames setting says what it sets."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import charts
from diffusion.budget import BudgetRow
from diffusion.config import SamplerConfig, declared, flow_matching
from diffusion.objectives import path_of
from diffusion.samplers import sample

SETTING = {d.name: d for d in declared(SamplerConfig)}


@pytest.mark.parametrize("kind", ["euler", "heun"])
def test_a_flow_solver_has_one_name_in_the_sidebar_and_the_budget(kind):
    sidebar = SETTING["kind"].setting.labels[kind]
    rows = [BudgetRow(kind, None, steps, steps, 0.01, 0.02, 0.01) for steps in (5, 10)]
    (trace,) = [t for t in charts.budget_figure(rows, None).data if t.name != "your setting"]
    assert sidebar == charts.sampler_family(kind, None) == trace.name == f"{kind.capitalize()} (flow)"


@pytest.mark.parametrize("kind, eta", [("ddpm", None), ("ddim", 0.0), ("ddim", 1.0)])
def test_a_ddpm_family_starts_with_its_sampler_s_sidebar_name(kind, eta):
    name = SETTING["kind"].setting.labels[kind].split(" (")[0]  # "DDPM (ancestral)" -> "DDPM"
    assert charts.sampler_family(kind, eta).startswith(name)


def test_the_frames_setting_says_it_is_a_most_and_a_flow_run_keeps_steps_plus_one():
    config = flow_matching()
    path = path_of(config.schedule)
    few = dataclasses.replace(config.sampler, num_samples=10)
    kept = sample(lambda x, t: torch.zeros_like(x), path, few, torch.Generator().manual_seed(0))
    assert config.sampler.num_frames == 60 and len(kept.frames) == config.sampler.sample_steps + 1 == 11
    frames = SETTING["num_frames"].setting
    assert frames.label == "Animation frames (at most)" and "steps + 1 (10 Heun steps: 11 frames" in frames.help
