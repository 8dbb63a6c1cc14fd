"""Sampling budget: how good a trained model's samples are against how many model calls they cost.

For each sampler family (DDPM, DDIM at eta 0, DDIM at eta 1) and each number of sampling steps
S (by default 5, 10, 20, 50, 100, 200, 500 and T; steps above T are dropped, repeats removed) one
row: the energy distance of ``num_samples`` points to the data and its noise floor, scored exactly
as the results panel scores a run (``metrics.evaluate(...).energy_distance``, see
``energy_scorer``), with the number of model calls (counted: one eps_theta per step) and the
seconds sampling took (scoring excluded). A row whose samples are not finite scores NaN.

DDPM with S < T is respaced DDPM (Nichol & Dhariwal 2021, sec. 4): the chain on the S evenly
spaced times DDIM uses, with betas beta'_i = 1 - abar_{s_i} / abar_{s_{i-1}} derived from the
alpha-bars at the kept times (``schedules.ddpm_step`` with ``t_prev``); at S = T it is plain DDPM.
Its variance is ``variance`` (sigma^2 = beta' or beta-tilde'). DDIM at eta 1 on the same times is
respaced DDPM with the posterior variance (Song et al.), so the two DDPM variances differ from it
only where beta' and beta-tilde' differ.

The families and their default step counts are the path's (``budget_families``,
``budget_steps``): flow matching's are its ODE solvers, Euler (S calls) and Heun (2S - 1 calls),
at S = 1, 2, 5, 10, ... so its rows share the axis of model calls with DDPM's.

Every row samples with a generator seeded with ``seed``: all rows start from the same x_T (common
random numbers), and a row is exactly ``samplers.sample`` with the row's config and that seed.
The rows come as a pair, like the samplers: ``iter_budget`` yields each row as it completes (a
progress bar counts them against ``len(budget_plan(...))``), ``budget_rows`` runs it to the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .config import SAMPLERS_OF, SamplerConfig, SamplerKind, Variance
from .datasets import Dataset
from .metrics import Comparison, energy_distance, mean_pairwise_distance
from .objectives import objective_of, path_class
from .paths import ModelFn, ObjectivePath
from .samplers import sample

_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpm_solver": "DPM-Solver++ 2M", "euler": "Euler", "heun": "Heun"}


BUDGET_COLUMNS = ("sampler", "eta", "steps", "model_calls", "seconds", "energy_distance", "floor")


@dataclass(frozen=True)
class BudgetRow:
    """One sampler at one number of steps: its samples' energy distance beside the noise floor."""

    sampler: SamplerKind
    eta: float | None  # None for DDPM
    steps: int
    model_calls: int
    seconds: float  # sampling only, not scoring
    energy_distance: float  # NaN when the samples were not finite
    floor: float  # NaN when the samples were not finite

    @property
    def ratio(self) -> float:
        """Energy distance over its floor: about 1.0 is as good as fresh data."""
        return self.energy_distance / self.floor if self.floor > 0 else float("nan")

    def to_dict(self) -> dict:
        """The row as budget.csv has it (``BUDGET_COLUMNS``); DDPM's eta is None."""
        return {name: getattr(self, name) for name in BUDGET_COLUMNS}


def energy_scorer(
    dataset: Dataset, num_samples: int, *, seed: int = 1234, num_reference_sets: int = 3
) -> Callable[[np.ndarray], Comparison]:
    """``metrics.evaluate(samples, dataset).energy_distance`` for ``num_samples`` points, with the
    true sets drawn once for every row instead of once per call: the same draws, in the same
    order, from the same seeded generator as ``evaluate`` (its reference sets, then the pairs it
    scores the other statistics' floors with, then E|X - X'|), so the same numbers, about 8x
    faster (only the energy distance is computed). A test holds it equal to ``evaluate``."""
    n = m = num_samples
    g = torch.Generator().manual_seed(seed)
    refs = [dataset.sample(m, g).double() for _ in range(num_reference_sets)]
    for _ in range(num_reference_sets):  # evaluate's pairs: drawn only to leave g where evaluate has it
        dataset.sample(n, g), dataset.sample(m, g)
    floor = (1 / n + 1 / m) * mean_pairwise_distance(dataset, g)

    def score(samples: np.ndarray) -> Comparison:
        x = torch.as_tensor(np.asarray(samples), dtype=torch.float64)
        if len(x) != n:
            raise ValueError(f"this scorer compares {n} points; got {len(x)}")
        return Comparison(float(np.mean([energy_distance(x, y) for y in refs])), floor)

    return score


def budget_steps(num_timesteps: int, steps: Iterable[int] | None, defaults: tuple[int, ...]) -> tuple[int, ...]:
    """The step counts to try, ascending, without repeats or any above T (``steps``, or if None the
    path's ``defaults`` and T: DDPM's 5, 10, 20, 50, 100, 200, 500 and T, flow matching's also 1 and 2)."""
    T = int(num_timesteps)
    wanted = (*defaults, T) if steps is None else tuple(steps)
    for s in wanted:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"steps must be whole numbers of at least 1; got {s!r}")
    return tuple(sorted({s for s in wanted if s <= T}))


def budget_plan(
    num_timesteps: int,
    steps: Iterable[int] | None = None,
    *,
    families: Iterable[tuple[SamplerKind, float | None]],
) -> list[tuple[SamplerKind, float | None, int]]:
    """(sampler, eta, steps) of every row, in the order ``iter_budget`` computes them: family by
    family, fewest steps first (by default each family's path's ``budget_steps`` and T). The
    families are all of one objective's samplers (``config.SAMPLERS_OF``)."""
    plan = []
    families = tuple(families)
    kinds = {kind for kind, _ in families}
    allowed = "; or ".join(f"{' or '.join(map(repr, ks))} ({o})" for o, ks in SAMPLERS_OF.items())
    unknown = kinds - {k for ks in SAMPLERS_OF.values() for k in ks}
    if unknown:
        raise ValueError(f"sampler must be {allowed}; got {sorted(unknown)[0]!r}")
    if len({objective_of(kind) for kind in kinds}) > 1:
        raise ValueError(f"samplers must all be of one objective ({allowed}), not several; got {sorted(kinds)}")
    for kind, eta in families:
        if kind != "ddim" and eta is not None:
            raise ValueError(f"{_NAMES[kind]} takes no eta (use None); got {eta!r}")
        if kind == "ddim" and (eta is None or not 0 <= eta <= 1):
            raise ValueError(f"DDIM's eta must be in [0, 1]; got {eta!r}")
        defaults = path_class(objective_of(kind)).budget_steps
        plan += [(kind, eta, s) for s in budget_steps(num_timesteps, steps, defaults)]
    return plan


def row_config(
    kind: SamplerKind, eta: float | None, steps: int, *, num_samples: int, seed: int,
    variance: Variance = "beta", clip_x0: bool = False,
) -> SamplerConfig:
    """The sampler config of one row (its steps go to ``samplers.sample(..., sample_steps=steps)``,
    which respaces DDPM)."""
    return SamplerConfig(kind=kind, variance=variance, sample_steps=steps, eta=0.0 if eta is None else eta,
                         num_samples=num_samples, num_frames=2, seed=seed, clip_x0=clip_x0)


def iter_budget(
    model: torch.nn.Module | ModelFn,
    schedule: ObjectivePath,
    dataset: Dataset,
    *,
    num_samples: int = 1000,
    seed: int = 0,
    steps: Iterable[int] | None = None,
    families: Iterable[tuple[SamplerKind, float | None]] | None = None,
    variance: Variance = "beta",
    clip_x0: bool = False,
    device: torch.device | str = "cpu",
) -> Iterator[BudgetRow]:
    """Yield the budget's rows as they complete, in ``budget_plan`` order. ``model`` is a trained
    ``Denoiser`` or its function (x, t) -> output (eps, or velocity). ``families`` default to the
    path's (``budget_families``)."""
    families = schedule.budget_families if families is None else tuple(families)
    if not {kind for kind, _ in families} <= set(schedule.sampler_kinds):
        raise ValueError(f"the samplers {[k for k, _ in families]} do not fit the {schedule.objective} objective")
    plan = budget_plan(schedule.num_timesteps, steps, families=families)
    score = energy_scorer(dataset, num_samples)
    if hasattr(model, "at_fixed_times"):
        with torch.inference_mode():
            model_fn = model.at_fixed_times()
    else:
        model_fn = model
    calls = 0

    def counted(x: torch.Tensor, t: int | float) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return model_fn(x, t)

    for kind, eta, s in plan:
        config = row_config(kind, eta, s, num_samples=num_samples, seed=seed, variance=variance, clip_x0=clip_x0)
        calls = 0
        trajectory = sample(counted, schedule, config, torch.Generator().manual_seed(seed), device=device,
                            sample_steps=s)
        if trajectory.finite:
            scored = score(trajectory.samples)
            value, floor = scored.value, scored.floor
        else:
            value = floor = math.nan
        yield BudgetRow(kind, eta, s, model_calls=calls, seconds=trajectory.seconds, energy_distance=value,
                        floor=floor)


def budget_rows(
    model: torch.nn.Module | ModelFn,
    schedule: ObjectivePath,
    dataset: Dataset,
    *,
    num_samples: int = 1000,
    seed: int = 0,
    steps: Iterable[int] | None = None,
    families: Iterable[tuple[SamplerKind, float | None]] | None = None,
    variance: Variance = "beta",
    clip_x0: bool = False,
    device: torch.device | str = "cpu",
    on_progress: Callable[[int, int], None] | None = None,
) -> list[BudgetRow]:
    """Every row of the budget; ``on_progress(done, total)`` after each."""
    families = schedule.budget_families if families is None else tuple(families)
    steps = None if steps is None else tuple(steps)
    total = len(budget_plan(schedule.num_timesteps, steps, families=families))
    rows = []
    for row in iter_budget(model, schedule, dataset, num_samples=num_samples, seed=seed, steps=steps,
                           families=families, variance=variance, clip_x0=clip_x0, device=device):
        rows.append(row)
        if on_progress is not None:
            on_progress(len(rows), total)
    return rows
