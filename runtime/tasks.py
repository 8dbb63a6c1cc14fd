"""The computations a worker runs on a trained model, besides training: each a frozen task (its
parameters, hashable: with the run's identity it is the result's cache key) and a function that
computes its result from the model. The page asks for them, shows their progress and draws the
results; the server's process never calls the model.

    Sample   the reverse trajectory for a sampler, with its kept frames, and its metrics
    Field    the learned field against the ideal one at ``FIELD_TIMES`` noise levels, and its error curve
    Drift    the sampler's x_t against the true q(x_t) at each kept frame
    Budget   energy distance over its floor for every sampler family at a range of step counts
    Guidance a conditional model sampled for every class at each guidance scale, scored per class,
             and its field for each class beside the ideal one
    Density  the model's log-density on a grid (and the data's, where known), NLL against entropy
    Probe    one start point's probability-flow ODE path, stochastic paths from it, log p along it
    Floors   the irreducible loss of a data set and path, averaged over t and per noise level
             (no model: numerical for mixtures, about 1.5 s, so not on the server's thread either)

Each ``compute_*`` function is deterministic (its randomness comes from fixed seeds), so a result
computed in a worker equals one computed in-process, bit for bit (``tests/test_runtime.py``).
Positions come back in the user's units (``DataConfig.to_user``); metrics in the model's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from diffusion.budget import BudgetRow, budget_plan, iter_budget
from diffusion.config import DataConfig, SamplerConfig, ScheduleConfig, TrainingKey
from diffusion.datasets import GaussianMixture, make_dataset
from diffusion.denoiser import Denoiser
from diffusion.flow import paired_in_batches
from diffusion.guidance import GUIDANCE_SCALES, guidance_sweep
from diffusion.ideal import (
    DriftCurve,
    class_ideal,
    drift_curve,
    field_at,
    field_error_curve,
    field_grid,
    ideal_denoiser,
    noised,
)
from diffusion.likelihood import DensityGrid, NLLReport, ProbePaths, density_grid, network_model, nll_report, probe
from diffusion.metrics import Evaluation, OneClass, evaluate
from diffusion.monitoring import BinnedFloor, loss_floor_by_bin
from diffusion.objectives import path_of
from diffusion.paths import level_weights
from diffusion.samplers import sample_model, training_salt
from diffusion.trajectory import Trajectory

from .watch import loss_bins

FIELD_TIMES = 20  # noise levels of the field view: its slider moves between them in the browser
FIELD_GRID = 15  # arrows per axis
DRIFT_FRAMES = 30  # kept frames compared (at most)
DRIFT_POINTS = 400  # points drawn per set and frame

Report = Callable[[int, int, str, object], None]  # (done, total, what was just done, partial result)


def model_from(key: TrainingKey, weights: dict[str, torch.Tensor]) -> Denoiser:
    """The trained network of ``key`` with ``weights`` (its sampling weights), in eval mode."""
    model = Denoiser(key.denoiser, key.schedule.num_timesteps, torch.Generator().manual_seed(0),
                     objective=key.schedule.objective, num_classes=key.num_classes)
    model.load_state_dict(weights)
    return model.eval()


def data_points(key: TrainingKey, n: int, seed: int) -> np.ndarray:
    """n points of the run's data (model units), from a generator seeded with ``seed``."""
    return make_dataset(key.data).sample(n, torch.Generator().manual_seed(seed)).numpy()


# --- sampling -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    sampler: SamplerConfig


@dataclass(frozen=True)
class Sampled:
    """A sampler's trajectory and its metrics; ``error`` instead when sampling failed or gave
    points that are not finite (nothing non-finite is drawn or offered)."""

    trajectory: Trajectory | None
    scores: Evaluation | None
    error: str | None = None


def compute_sample(task: Sample, key: TrainingKey, model: Denoiser, report: Report) -> Sampled:
    schedule = path_of(key.schedule)
    try:
        trajectory = sample_model(model, schedule, task.sampler, run_salt=training_salt(key))
    except (ArithmeticError, RuntimeError, ValueError) as error:
        return Sampled(None, None, f"Sampling failed: {error}. Try other schedule or sampler settings.")
    if not trajectory.finite or len(trajectory.samples) < 2:
        return Sampled(trajectory, None, "Sampling produced NaN or inf: this model is unusable. Retrain with a "
                                         "lower learning rate.")
    return Sampled(trajectory, evaluate(trajectory.samples, make_dataset(key.data)))


# --- the learned field against the ideal one -----------------------------------------------------


@dataclass(frozen=True)
class Field:
    quantity: str  # "eps" (the model's own output: eps, or flow matching's v) or "score"


@dataclass(frozen=True)
class FieldView:
    """The field at ``times`` (model indices) on a grid, positions in the user's units."""

    times: np.ndarray  # (K,)
    xs: np.ndarray  # (nx,) grid columns
    ys: np.ndarray  # (ny,) grid rows
    learned: np.ndarray  # (K, G, 2)
    ideal: np.ndarray  # (K, G, 2)
    shown: np.ndarray  # (K, 300, 2) the data noised to each t
    curve_error: np.ndarray  # (K,) mean |learned - ideal| over the noised data
    label: str  # what the arrows are: "score", "ε" or "v"
    ideal_description: str


def compute_field(task: Field, key: TrainingKey, model: Denoiser, report: Report) -> FieldView:
    schedule = path_of(key.schedule)
    ideal = ideal_denoiser(key.data, schedule)
    T = schedule.num_timesteps
    times = np.unique(np.linspace(0, T - 1, FIELD_TIMES).round().astype(int))
    data = torch.from_numpy(data_points(key, 1000, 11)).double()
    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(12)).double()
    grid = field_grid(np.concatenate([data.numpy(), noise.numpy()]), num=FIELD_GRID, pad=0.25)  # data and N(0, I)
    frames = []
    for i, t in enumerate(times.tolist()):
        frames.append(field_at(model, ideal, schedule, t, grid))
        report(i + 1, len(times) + 1, f"noise level {i + 1} of {len(times)}", None)
    if task.quantity == "score":
        learned = np.stack([f.learned_score for f in frames])
        wanted = np.stack([f.ideal_score for f in frames])
    else:
        learned, wanted = np.stack([f.learned for f in frames]), np.stack([f.ideal for f in frames])
    shown = np.stack([noised(data[:300], schedule, int(t), noise[:300]).numpy() for t in times])
    curve = field_error_curve(model, ideal, schedule, data, times, seed=13)
    if task.quantity == "score":  # |score error| = |eps error| / s, and eps is linear in the output
        a, s = schedule.float64["signal"][times], schedule.float64["sigma"][times]
        curve_error = curve.error * np.abs(schedule.eps_hat(0.0, 1.0, a, s)) / s
    else:
        curve_error = curve.error
    label = "score" if task.quantity == "score" else schedule.output_name
    user = key.data.to_user  # positions in the user's units; the arrows are scaled per t anyway
    xs = user(np.stack([grid[0], np.full_like(grid[0], grid[1][0])], 1))[:, 0]
    ys = user(np.stack([np.full_like(grid[1], grid[0][0]), grid[1]], 1))[:, 1]
    return FieldView(times, xs, ys, learned, wanted, user(shown), curve_error, label, ideal.description)


# --- forward against reverse ----------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    sampler: SamplerConfig


@dataclass(frozen=True)
class DriftView:
    frame_times: np.ndarray  # (K,) kept frames' times
    truth: np.ndarray  # (K, DRIFT_POINTS, 2) q(x_t), user's units
    shown: np.ndarray  # (K, DRIFT_POINTS, 2) the sampler's x_t, user's units
    curve: DriftCurve


def compute_drift(task: Drift, key: TrainingKey, model: Denoiser, report: Report,
                  trajectory: Trajectory | None = None) -> DriftView | None:
    """None when the sampler's points are not finite (the page says so with the samples)."""
    if trajectory is None:
        trajectory = compute_sample(Sample(task.sampler), key, model, report).trajectory
        if trajectory is None or not trajectory.finite:
            return None
    schedule = path_of(key.schedule)
    keep = np.unique(np.linspace(0, len(trajectory.frames) - 1, min(DRIFT_FRAMES, len(trajectory.frames))).round()
                     .astype(int))
    kept = dataclasses.replace(trajectory, frames=trajectory.frames[keep], frame_times=trajectory.frame_times[keep],
                               predicted_x0=trajectory.predicted_x0[keep])
    ot = schedule.batch_coupled(key.train.coupling)
    curve = drift_curve(kept, key.data, schedule, seed=task.sampler.seed + 1, ot_batch=key.train.batch_size if ot else None)
    data = torch.from_numpy(data_points(key, DRIFT_POINTS, 21)).double()
    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(22)).double()
    if ot:  # the pairs training saw
        noise = paired_in_batches(data, noise, key.train.batch_size)
    truth = np.stack([(a * data + s * noise).numpy() for a, s in map(schedule.path_at_frame, kept.frame_times.tolist())])
    user = key.data.to_user
    return DriftView(kept.frame_times, user(truth), user(kept.frames[:, :DRIFT_POINTS]), curve)


# --- the sampling budget --------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    num_samples: int
    seed: int
    variance: str
    clip_x0: bool

    @classmethod
    def of(cls, sampler: SamplerConfig) -> Budget:
        return cls(sampler.num_samples, sampler.seed, sampler.variance, sampler.clip_x0)


def budget_size(key: TrainingKey) -> int:
    """Rows of a run's budget."""
    schedule = path_of(key.schedule)
    return len(budget_plan(key.schedule.num_timesteps, families=schedule.budget_families))


def compute_budget(task: Budget, key: TrainingKey, model: Denoiser, report: Report,
                   stopped: Callable[[], bool] = lambda: False) -> tuple[BudgetRow, ...]:
    schedule = path_of(key.schedule)
    total, rows = budget_size(key), []
    for row in iter_budget(model, schedule, make_dataset(key.data), num_samples=task.num_samples, seed=task.seed,
                           variance=task.variance, clip_x0=task.clip_x0):
        rows.append(row)
        report(len(rows), total, f"{row.sampler} {'' if row.eta is None else f'η={row.eta:g} '}with {row.steps} "
                                 f"steps: {row.ratio:.2f} × floor", tuple(rows))
        if stopped():
            break
    return tuple(rows)


# --- classifier-free guidance -------------------------------------------------------------------------

GUIDANCE_FIELD_TIMES = 8  # noise levels of the guided field
GUIDANCE_FIELD_GRID = 15  # arrows per axis


@dataclass(frozen=True)
class Guidance:
    """The guidance sweep for a sampler: its scale and class are the sweep's own (every scale of
    ``GUIDANCE_SCALES``, every class), so ``of`` sets them to one value and the page's w slider
    and class picker only redraw."""

    sampler: SamplerConfig

    @classmethod
    def of(cls, sampler: SamplerConfig) -> Guidance:
        return cls(dataclasses.replace(sampler, guidance=1.0, class_label=-1, num_frames=2))


@dataclass(frozen=True)
class GuidanceView:
    """A conditional model at each scale, positions in the user's units.

    samples[i] are the samples at scales[i], point j asked for class labels[j] (the same x_T and
    noise at every scale); rows: ``diffusion.guidance.GUIDANCE_COLUMNS`` per scale and class. The
    field: at ``times`` on the grid (xs, ys), the network's unconditional output u and its output
    for each class c_k, and the ideal ones; the guided field at w is u + w (c_k - u)."""

    scales: tuple[float, ...]
    samples: np.ndarray  # (S, N, 2)
    labels: np.ndarray  # (N,)
    rows: tuple[dict, ...]
    data: np.ndarray  # (M, 2) the data, for the background
    data_labels: np.ndarray  # (M,)
    times: np.ndarray  # (L,) model indices
    xs: np.ndarray
    ys: np.ndarray
    learned_u: np.ndarray  # (L, G, 2)
    learned_c: np.ndarray  # (K, L, G, 2)
    ideal_u: np.ndarray  # (L, G, 2)
    ideal_c: np.ndarray  # (K, L, G, 2)
    noised: np.ndarray  # (K, L, 150, 2) each class's data noised to each t
    label: str  # what the arrows are: "ε" or "v"
    ideal_description: str

    def guided(self, scale: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The learned and the ideal guided field for class k at ``scale``, each (L, G, 2)."""
        return (self.learned_u + scale * (self.learned_c[k] - self.learned_u),
                self.ideal_u + scale * (self.ideal_c[k] - self.ideal_u))


def compute_guidance(task: Guidance, key: TrainingKey, model: Denoiser, report: Report) -> GuidanceView:
    path, dataset = path_of(key.schedule), make_dataset(key.data)
    scales = GUIDANCE_SCALES if key.train.label_dropout > 0 else (1.0,)
    names, user = key.data.classes, key.data.to_user
    steps = len(scales) + len(names)
    sweep = guidance_sweep(model, path, task.sampler, dataset, names, scales=scales, run_salt=training_salt(key),
                           progress=lambda done, _, w: report(done, steps, f"sampled every class at w = {w:g}", None))
    data, data_labels = dataset.sample_labelled(1000, torch.Generator().manual_seed(31))
    T = path.num_timesteps
    times = np.unique(np.linspace(0, T - 1, GUIDANCE_FIELD_TIMES).round().astype(int)).tolist()
    prior = torch.randn(1000, 2, generator=torch.Generator().manual_seed(33))
    grid = field_grid(np.concatenate([data.numpy(), prior.numpy()]), num=GUIDANCE_FIELD_GRID, pad=0.25)  # data and N(0, I)
    size = len(grid[0]) * len(grid[1])
    unconditional = [field_at(model, ideal_denoiser(key.data, path), path, t, grid) for t in times]
    learned_c, ideal_c, noised_c, description = [], [], [], ""
    noise = torch.randn(150, 2, generator=torch.Generator().manual_seed(32)).double()
    for k in range(len(names)):
        ideal = class_ideal(key.data, path, k)
        description = ideal.description
        model_k = model.at_fixed_times(torch.full((size,), k, dtype=torch.long))
        frames = [field_at(model_k, ideal, path, t, grid) for t in times]
        learned_c.append(np.stack([f.learned for f in frames]))
        ideal_c.append(np.stack([f.ideal for f in frames]))
        mine = OneClass(dataset, k).sample(150, torch.Generator().manual_seed(34 + k)).double()
        noised_c.append(np.stack([user(noised(mine, path, t, noise).numpy()) for t in times]))
        report(len(scales) + k + 1, steps, f"the field of {names[k]}", None)
    xs = user(np.stack([grid[0], np.full_like(grid[0], grid[1][0])], 1))[:, 0]
    ys = user(np.stack([np.full_like(grid[1], grid[0][0]), grid[1]], 1))[:, 1]
    return GuidanceView(
        sweep.scales, np.stack([user(x) for x in sweep.samples]), sweep.labels, sweep.rows, user(data.numpy()),
        data_labels.numpy(),
        np.array(times), xs, ys, np.stack([f.learned for f in unconditional]), np.stack(learned_c),
        np.stack([f.ideal for f in unconditional]), np.stack(ideal_c), np.stack(noised_c), path.output_name, description)


# --- the loss floors (no model) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Floors:
    data: DataConfig
    schedule: ScheduleConfig
    coupling: str
    time_power: float = 1.0  # how training weighs the levels (TrainConfig.time_power)


@dataclass(frozen=True)
class FloorValues:
    mean: float | None  # averaged over t as training draws it, where the density is known and pairs are independent
    binned: BinnedFloor  # per noise-level bin: exact, numerical, or unknown (with why)


def compute_floors(task: Floors, report: Report) -> FloorValues:
    dataset, path = make_dataset(task.data), path_of(task.schedule)
    mean = None
    if isinstance(dataset, GaussianMixture) and not path.batch_coupled(task.coupling):
        weights = level_weights(task.schedule.num_timesteps, task.time_power)
        mean = float(np.average(dataset.irreducible_loss(path, n=1024), weights=weights))
    binned = loss_floor_by_bin(dataset, path, loss_bins(task.schedule.num_timesteps), coupling=task.coupling,
                               time_power=task.time_power)
    return FloorValues(mean, binned)


# --- the density the model defines ---------------------------------------------------------------------

DENSITY_GRID = 60  # points per axis of the density maps
NLL_POINTS = 1000  # fresh data points the NLL averages over


def density_work(key: TrainingKey, steps: int) -> float:
    """Multiply-adds of a ``Density`` task: the grid's and the NLL's points, solved with ``steps``
    and 2 x ``steps`` Heun steps of 2 model calls, each a forward and two backward passes."""
    points = DENSITY_GRID**2 + NLL_POINTS
    return points * 3 * steps * 2 * 3 * key.denoiser.parameter_count


@dataclass(frozen=True)
class Density:
    steps: int  # Heun steps of the probability-flow ODE


@dataclass(frozen=True)
class DensityView:
    """The learned and the true log-density on a grid, the data over them, and the NLL, all in the
    user's units (a density per unit area of the user's axes: log p - 2 log scale)."""

    xs: np.ndarray  # (nx,)
    ys: np.ndarray  # (ny,)
    log_p_model: np.ndarray  # (ny, nx)
    log_p_true: np.ndarray | None
    shown: np.ndarray  # (500, 2) data points
    grid: DensityGrid  # in the model's units, as computed
    nll: NLLReport  # in the model's units
    unit_shift: float  # 2 log scale: subtract from a model-unit log-density for the user's units


def compute_density(task: Density, key: TrainingKey, model: Denoiser, report: Report) -> DensityView:
    path, dataset = path_of(key.schedule), make_dataset(key.data)
    net = network_model(model)
    grid = density_grid(net, path, dataset, num=DENSITY_GRID, steps=task.steps,
                        report=lambda done, total, text: report(done, 3, text, None))
    nll = nll_report(net, path, dataset, num_points=NLL_POINTS, steps=task.steps,
                     report=lambda done, total, text: report(1 + done, 3, text, None))
    user, shift = key.data.to_user, 2 * np.log(key.data.user_scale)
    xs = user(np.stack([grid.xs, np.full_like(grid.xs, grid.ys[0])], 1))[:, 0]
    ys = user(np.stack([np.full_like(grid.ys, grid.xs[0]), grid.ys], 1))[:, 1]
    true = None if grid.log_p_true is None else grid.log_p_true - shift
    return DensityView(xs, ys, grid.log_p_model - shift, true, user(data_points(key, 500, 31)), grid, nll, float(shift))


@dataclass(frozen=True)
class Probe:
    start: tuple[float, float]  # in the user's units
    from_prior: bool  # start is x at the prior's end (True) or a point of the data (False)
    steps: int = 60
    paths: int = 5


@dataclass(frozen=True)
class ProbeView:
    """``ProbePaths`` in the user's units (log p per unit area of the user's axes)."""

    paths: ProbePaths
    start: tuple[float, float]


def compute_probe(task: Probe, key: TrainingKey, model: Denoiser, report: Report) -> ProbeView:
    path, scale = path_of(key.schedule), key.data.user_scale
    start = key.data.to_model(np.asarray(task.start, dtype=np.float64))
    found = probe(network_model(model), path, start, from_prior=task.from_prior, steps=task.steps, paths=task.paths)
    user = key.data.to_user
    shown = dataclasses.replace(found, ode=user(found.ode), stochastic=user(found.stochastic),
                                log_p=found.log_p - 2 * np.log(scale))
    return ProbeView(shown, task.start)


def compute(task, key: TrainingKey | None, model: Denoiser | None, report: Report, stopped: Callable[[], bool]):
    """Run ``task`` on ``model`` (None for a task that needs none)."""
    match task:
        case Sample():
            return compute_sample(task, key, model, report)
        case Field():
            return compute_field(task, key, model, report)
        case Drift():
            return compute_drift(task, key, model, report)
        case Budget():
            return compute_budget(task, key, model, report, stopped)
        case Guidance():
            return compute_guidance(task, key, model, report)
        case Floors():
            return compute_floors(task, report)
        case Density():
            return compute_density(task, key, model, report)
        case Probe():
            return compute_probe(task, key, model, report)
    raise TypeError(f"unknown task {task!r}")
