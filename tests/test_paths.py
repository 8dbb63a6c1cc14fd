"""The interface of an objective's path (``diffusion.paths``): each implementation against its
definition, the lookup and its declarations, and no branch on the objective outside the path
modules (checked on the source, and shown to catch a planted one)."""

from __future__ import annotations

import ast
import math
import re
import shutil
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch

from diffusion.config import SAMPLERS_OF, ExperimentConfig, Objective, SamplerConfig, SamplerKind, ScheduleConfig
from diffusion.denoiser import Denoiser, features_at
from diffusion.objectives import PATHS, objective_of, path_class, path_of
from diffusion.samplers import iter_sample

ROOT = Path(__file__).resolve().parents[1]
T = 50
DDPM = path_of(ScheduleConfig(kind="cosine", num_timesteps=T))
FLOW = path_of(ScheduleConfig(objective="flow", num_timesteps=T))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- each path against its definition ------------------------------------------------------------


def test_ddpm_s_path_is_q_xt_given_x0_from_an_independent_derivation():
    """a = sqrt(abar_t), s = sqrt(1 - abar_t), abar_t = prod (1 - beta): derived here from the betas
    in float64; x_t at integer t is a x0 + s eps in float32."""
    abar = np.cumprod(1.0 - DDPM.config.betas())
    np.testing.assert_allclose(DDPM.float64["signal"], np.sqrt(abar), rtol=1e-12)
    np.testing.assert_allclose(DDPM.float64["sigma"], np.sqrt(1 - abar), rtol=1e-12)
    x0, noise = torch.randn(T, 2, generator=gen(0)), torch.randn(T, 2, generator=gen(1))
    t = torch.arange(T)
    expected = torch.from_numpy(np.sqrt(abar)[:, None]) * x0 + torch.from_numpy(np.sqrt(1 - abar)[:, None]) * noise
    torch.testing.assert_close(DDPM.x_t(x0, t, noise).double(), expected.double(), rtol=1e-6, atol=1e-6)
    assert DDPM.path_at_frame(0) == (1.0, 0.0)
    for k in (0, 17, T - 1):
        np.testing.assert_allclose(DDPM.path_at(k), (math.sqrt(abar[k]), math.sqrt(1 - abar[k])), rtol=1e-12)
        assert DDPM.path_at(k) == DDPM.path_at_frame(k + 1)  # frame k >= 1 is the state at level k - 1
    assert torch.equal(DDPM.target(x0, noise), noise)
    np.testing.assert_array_equal(DDPM.grid_times(T), np.arange(T) / T)  # the reference's t / T


def test_flow_s_path_is_the_straight_line_at_any_time():
    """a = 1 - t, s = t at continuous t; the grid's level k is t = (k + 1) / T; the target is the
    path's velocity d x_t / dt = eps - x0 (a central difference in float64)."""
    x0, noise = torch.randn(40, 2, generator=gen(2)), torch.randn(40, 2, generator=gen(3))
    t = torch.rand(40, generator=gen(4))
    torch.testing.assert_close(FLOW.x_t(x0, t, noise), (1 - t)[:, None] * x0 + t[:, None] * noise, rtol=0, atol=1e-6)
    tau = (np.arange(T) + 1) / T
    np.testing.assert_array_equal(FLOW.grid_times(T), tau)
    np.testing.assert_allclose(FLOW.float64["signal"], 1 - tau, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(FLOW.float64["sigma"], tau)
    for k in (0, 24, T - 1):
        assert FLOW.path_at(k) == FLOW.path_at((k + 1) / T) == FLOW.path_at_frame(k + 1)
    assert FLOW.path_at(0.3) == (0.7, 0.3) and FLOW.path_at_frame(0) == (1.0, 0.0) and FLOW.path_at_frame(12.5) == (0.75, 0.25)
    h = 1e-4
    x64, n64, t64 = x0.double(), noise.double(), t.double().clamp(h, 1 - h)
    derivative = (FLOW.x_t(x64, t64 + h, n64) - FLOW.x_t(x64, t64 - h, n64)) / (2 * h)
    torch.testing.assert_close(derivative, FLOW.target(x64, n64), rtol=0, atol=1e-9)


@pytest.mark.parametrize("path", [DDPM, FLOW], ids=["ddpm", "flow"])
def test_x0_and_eps_come_back_from_the_model_output_that_is_the_target(path):
    """A perfect output (the target of x0 and eps) at x_t = a x0 + s eps gives back x0 and eps."""
    x0 = torch.randn(30, 2, generator=gen(5), dtype=torch.float64)
    noise = torch.randn(30, 2, generator=gen(6), dtype=torch.float64)
    for k in (0, T // 2, T - 2):
        a, s = path.path_at(k)
        x_t = a * x0 + s * noise
        output = path.target(x0, noise)
        torch.testing.assert_close(path.x0_hat(x_t, output.clone(), a, s), x0, rtol=0, atol=1e-9)
        torch.testing.assert_close(path.eps_hat(x_t, output, a, s), noise, rtol=0, atol=1e-9)


@pytest.mark.parametrize("path", [DDPM, FLOW], ids=["ddpm", "flow"])
def test_the_target_gain_is_that_of_the_target_s_coefficients(path):
    """target = c_eps eps + c_0 x0 (read off by linearity), and g(a, s) = (c_0 s - c_eps a)^2 on the
    path's grid: the factor of Var(target | x_t) in the loss floor."""
    one, zero = torch.ones(1), torch.zeros(1)
    c_eps, c_0 = float(path.target(zero, one)), float(path.target(one, zero))
    a, s = path.float64["signal"], path.float64["sigma"]
    np.testing.assert_allclose(path.target_gain(a, s), (c_0 * s - c_eps * a) ** 2, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("objective", get_args(Objective))
def test_the_network_s_time_table_is_the_path_s_grid(objective):
    config = ExperimentConfig().denoiser.__class__(time_embedding="sinusoidal")
    model = Denoiser(config, T, gen(0), objective=objective)
    assert torch.equal(model.time_table, features_at(config, path_class(objective).grid_times(T)))


@pytest.mark.parametrize("path", [DDPM, FLOW], ids=["ddpm", "flow"])
def test_a_sampler_of_another_objective_is_refused_by_name(path):
    other = next(k for k in get_args(SamplerKind) if k not in path.sampler_kinds)
    steps = iter_sample(lambda x, t: x, path, SamplerConfig(kind=other, num_samples=4), gen(0))
    with pytest.raises(ValueError, match=rf"sampler must be one of {', '.join(path.sampler_kinds)} \(the samplers "
                                         rf"of the {path.objective} objective\); got '{other}'"):
        next(steps)


# --- the lookup and the declarations -------------------------------------------------------------


def test_every_declared_objective_has_a_path_whose_samplers_are_its_declared_ones():
    assert set(PATHS) == set(get_args(Objective)) == set(SAMPLERS_OF)
    for objective, cls in PATHS.items():
        assert cls.objective == objective and path_class(objective) is cls
        assert cls.sampler_kinds == SAMPLERS_OF[objective]
        assert {kind for kind, _ in cls.budget_families} <= set(cls.sampler_kinds)
        assert cls.preview_kind in cls.sampler_kinds
        assert all(objective_of(kind) == objective for kind in cls.sampler_kinds)
        assert isinstance(path_of(ScheduleConfig(objective=objective, num_timesteps=10)), cls)
    owned = [kind for cls in PATHS.values() for kind in cls.sampler_kinds]
    assert sorted(owned) == sorted(get_args(SamplerKind))  # each sampler belongs to exactly one objective


def test_an_unknown_objective_is_refused_naming_the_field_and_the_allowed_values():
    with pytest.raises(ValueError, match=r"^schedule.objective must be one of ddpm, flow; got 'vp'$"):
        ScheduleConfig(objective="vp")
    with pytest.raises(ValueError, match=r"^schedule.objective must be one of ddpm, flow; got 'vp'$"):
        ExperimentConfig.from_dict({"schedule": {"objective": "vp"}})
    with pytest.raises(ValueError, match=r"^objective must be one of ddpm, flow; got 'vp'$"):
        path_class("vp")
    with pytest.raises(ValueError, match=r"^sampler must be one of ddpm, ddim, dpm_solver, euler, heun; got 'plms'$"):
        objective_of("plms")


# --- no branch on the objective outside the path modules ----------------------------------------

PATH_MODULES = ("paths.py", "schedules.py", "flow.py", "objectives.py")  # where the objectives differ
OBJECTIVE_ONLY_NAMES = set(get_args(Objective)) - set(get_args(SamplerKind))  # "flow"; "ddpm" is also a sampler
PATH_CLASSES = {cls.__name__ for cls in PATHS.values()}


ABOVE_THE_CORE = ("runtime", "charts", "cli", "ui")


def scanned_files(root: Path) -> list[Path]:
    """The core outside the path modules, and every layer above it: runtime, charts, command, page."""
    core = [p for p in sorted((root / "diffusion").glob("*.py")) if p.name not in PATH_MODULES]
    above = [p for folder in ABOVE_THE_CORE for p in sorted((root / folder).glob("*.py"))]
    return core + above + [root / "dashboard.py"]


def _about_the_objective(node: ast.AST) -> bool:
    if any(isinstance(n, ast.Constant) and n.value in OBJECTIVE_ONLY_NAMES for n in ast.walk(node)):
        return True
    return re.search(r"\bobjective\b|\bis_flow\b", ast.unparse(node)) is not None


def objective_branches(path: Path) -> list[str]:
    """Where ``path`` asks which objective it has: a comparison of an objective (``x.objective ==
    ...``, ``... == "flow"``), a ``match`` on one, a read of ``is_flow`` or of the page's ``.flow``,
    or an isinstance test against a path class."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        where = f"{path.parent.name}/{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Compare) and any(map(_about_the_objective, [node.left, *node.comparators])):
            found.append(f"{where} compares the objective: {ast.unparse(node)}")
        elif isinstance(node, ast.Match) and _about_the_objective(node.subject):
            found.append(f"{where} matches on the objective")
        elif isinstance(node, ast.Attribute) and node.attr in ("is_flow", "flow"):
            found.append(f"{where} reads .{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance"
              and len(node.args) == 2 and PATH_CLASSES & {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}):
            found.append(f"{where} tests the path's class: {ast.unparse(node)}")
    return found


def test_nothing_outside_the_path_modules_branches_on_the_objective():
    files = scanned_files(ROOT)
    assert len(files) >= 25 and all(f.exists() for f in files)
    found = [hit for f in files for hit in objective_branches(f)]
    assert not found, found


@pytest.mark.parametrize("planted, expected", [
    ("def _planted(config):\n    return 1 if config.schedule.objective == 'flow' else 0\n", "compares the objective"),
    ("def _planted(kind):\n    return kind in ('flow',)\n", "compares the objective"),
    ("def _planted(schedule):\n    return 2 if schedule.is_flow else 1\n", "reads .is_flow"),
    ("def _planted(schedule):\n    match schedule.config.objective:\n        case 'ddpm':\n            return 1\n",
     "matches on the objective"),
    ("from .flow import FlowPath\n\n\ndef _planted(schedule):\n    return isinstance(schedule, FlowPath)\n",
     "tests the path's class"),
])
def test_the_scan_catches_a_planted_objective_branch(tmp_path, planted, expected):
    """The check above can fail: each kind of branch, planted in a copy of metrics.py, is caught."""
    for folder in ("diffusion", *ABOVE_THE_CORE):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dashboard.py", tmp_path / "dashboard.py")
    metrics = tmp_path / "diffusion" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\n\n" + planted)
    found = [hit for f in scanned_files(tmp_path) for hit in objective_branches(f)]
    assert len(found) == 1 and found[0].startswith("diffusion/metrics.py:") and expected in found[0], found
