"""Watching a run while it trains: live previews scored against their noise floor, and the loss
binned by noise level beside its irreducible floor.

Loss by noise level. The per-sample loss of a training step is
    l_i = ||eps_i - eps_theta(x_t_i, t_i)||^2 / 2    (the mean over the 2 coordinates),
so the batch mean of the l_i is the training loss. Binned by t (equal bins of 0..T-1), its
expectation in a bin can never go below the irreducible loss there,
    floor(t) = E ||eps - eps*(x_t, t)||^2 / 2 = E tr Cov(eps | x_t) / 2,   eps* = E[eps | x_t],
averaged over the t's of the bin, each weighted by how often training draws it (all the same for
uniform t; ``paths.level_weights`` with the Low-noise emphasis p).
For N(mu, s^2 I) it is abar_t s^2 / (abar_t s^2 + 1 - abar_t) exactly; for a mixture of isotropic
Gaussians it is computed numerically (see ``loss_floor_by_bin``); for other data it is unknown.

Live previews. A ``Previewer`` draws x_T (and any sampler noise) once, so successive previews
differ only by the weights, runs a short deterministic sampler from it (the path's
``preview_kind``: DDIM, or Euler for flow matching), and scores the points by the
energy distance to fixed sets of true data, next to the statistic's noise floor (1/n + 1/m) E|X-X'|
(see ``metrics``). A preview never touches the weights, the train/eval mode or any generator but
its own, so training with or without previews gives the same bits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from .config import DataConfig, SamplerConfig
from .datasets import Dataset, FixedPoints, GaussianMixture, make_dataset
from .metrics import mean_pairwise_distance
from .paths import ModelFn, ObjectivePath, level_weights

if TYPE_CHECKING:
    from .denoiser import Denoiser
    from .training import Trainer

TAIL_FRACTION = 0.2  # "the loss over the last 20% of training"
LOSS_BINS = 20  # noise-level bins of the loss by t (T when T is smaller)
PREVIEW_POINTS = 300  # points of a live preview
PREVIEW_STEPS = 30  # deterministic steps of a live preview (T when T is smaller)


# --- loss by noise level -------------------------------------------------------------------------


def bin_edges(num_timesteps: int, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(t_start, t_end) of ``num_bins`` nearly equal bins of 0..T-1; bin b holds t_start[b] <= t <
    t_end[b] (end exclusive; t_end[b] = t_start[b + 1], t_end[-1] = T). Each (num_bins,) int64."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or not 1 <= num_bins <= num_timesteps:
        raise ValueError(f"num_bins must be a whole number from 1 to num_timesteps ({num_timesteps}); got {num_bins!r}")
    edges = np.round(np.linspace(0, num_timesteps, num_bins + 1)).astype(np.int64)
    return edges[:-1].copy(), edges[1:].copy()


def first_tail_step(total_steps: int, fraction: float = TAIL_FRACTION) -> int:
    """The first (1-based) optimizer step of the last ``fraction`` of a run of ``total_steps``:
    1000 steps, 0.2 -> 801 (steps 801..1000). At least the last step is in it."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
    return total_steps - max(1, round(fraction * total_steps)) + 1


def _numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


@dataclass(frozen=True)
class LossByTSnapshot:
    """The binned loss at one step, copied out for the page: read-only arrays, all (num_bins,)."""

    step: int  # the last optimizer step fed in (0: none yet)
    t_start: np.ndarray  # int64, inclusive
    t_end: np.ndarray  # int64, exclusive
    recent_loss: np.ndarray  # mean per-sample loss over the last ``window`` steps; NaN where empty
    recent_count: np.ndarray  # samples behind each recent mean
    tail_loss: np.ndarray  # mean per-sample loss from step ``tail_start`` on; NaN where empty
    tail_count: np.ndarray
    window: int
    tail_start: int


class LossByT:
    """The per-sample training loss binned by t: a windowed running mean and tail totals.

    Fed once per optimizer step with that step's per-sample times t (B,) and losses (B,):
      recent: for each bin, the mean of all per-sample losses whose t falls in the bin over the
              last ``window`` optimizer steps, i.e. steps s with step - window < s <= step (a plain
              windowed mean, no exponential weights, so it is recomputable from the (step, t, loss)
              triples; only the summation order differs);
      tail:   for each bin, the mean over all steps s >= ``tail_start`` (1-based), e.g. the last
              20% of the run (``for_run``), which is what loss_by_t.csv reports.
    A step costs two ``np.bincount`` calls and a row write, no loop over the samples. The state is
    plain numpy arrays and ints (``state_dict`` / ``from_state_dict``, or pickle), so it can cross
    processes and a resumed run continues exactly.
    """

    def __init__(self, num_timesteps: int, num_bins: int = 20, *, window: int = 200, tail_start: int = 1):
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
            raise ValueError(f"window must be a whole number of optimizer steps, at least 1; got {window!r}")
        if isinstance(tail_start, bool) or not isinstance(tail_start, (int, np.integer)) or tail_start < 1:
            raise ValueError(f"tail_start must be a 1-based optimizer step, at least 1; got {tail_start!r}")
        self.num_timesteps = int(num_timesteps)
        self.t_start, self.t_end = bin_edges(self.num_timesteps, num_bins)
        self.num_bins = int(num_bins)
        self.window = int(window)
        self.tail_start = int(tail_start)
        # bin index of every t: one gather per step instead of a search
        self._bin_of_t = np.repeat(np.arange(self.num_bins), self.t_end - self.t_start)  # (T,)
        self.step = 0
        self._ring_sums = np.zeros((self.window, self.num_bins))  # row s % window: step s's sums
        self._ring_counts = np.zeros((self.window, self.num_bins), dtype=np.int64)
        self._ring_steps = np.zeros(self.window, dtype=np.int64)  # 0: the row holds no step
        self._tail_sums = np.zeros(self.num_bins)
        self._tail_counts = np.zeros(self.num_bins, dtype=np.int64)

    @classmethod
    def for_run(
        cls, num_timesteps: int, total_steps: int, num_bins: int = 20, *, window: int = 200,
        tail_fraction: float = TAIL_FRACTION,
    ) -> LossByT:
        """An accumulator whose tail is the last ``tail_fraction`` of a run of ``total_steps``."""
        return cls(num_timesteps, num_bins, window=window, tail_start=first_tail_step(total_steps, tail_fraction))

    def update(self, step: int, t, losses) -> None:
        """Add optimizer step ``step`` (1-based, increasing): t (B,) integers in [0, T), losses (B,)."""
        t, losses = _numpy(t), _numpy(losses)
        if t.ndim != 1 or t.shape != losses.shape:
            raise ValueError(f"t and losses must both have shape (B,); got {t.shape} and {losses.shape}")
        if not step > self.step:
            raise ValueError(f"step must increase: got {step} after {self.step}")
        try:  # a t >= T fails the look-up; only a negative t needs its own check
            if len(t) and t.min() < 0:
                raise IndexError
            bins = self._bin_of_t[t]
        except IndexError:
            raise ValueError(f"t must lie in [0, {self.num_timesteps - 1}]; got {t.min()}..{t.max()}") from None
        counts = np.bincount(bins, minlength=self.num_bins)
        sums = np.bincount(bins, weights=losses.astype(np.float64, copy=False), minlength=self.num_bins)
        row = step % self.window
        self._ring_sums[row] = sums
        self._ring_counts[row] = counts
        self._ring_steps[row] = step
        if step >= self.tail_start:
            self._tail_sums += sums
            self._tail_counts += counts
        self.step = int(step)

    def snapshot(self) -> LossByTSnapshot:
        recent = self._ring_steps > max(self.step - self.window, 0)  # rows of the window
        recent_sums = self._ring_sums[recent].sum(0)
        recent_counts = self._ring_counts[recent].sum(0)
        arrays = {
            "t_start": self.t_start.copy(),
            "t_end": self.t_end.copy(),
            "recent_loss": _mean(recent_sums, recent_counts),
            "recent_count": recent_counts,
            "tail_loss": _mean(self._tail_sums, self._tail_counts),
            "tail_count": self._tail_counts.copy(),
        }
        for array in arrays.values():
            array.flags.writeable = False
        return LossByTSnapshot(step=self.step, window=self.window, tail_start=self.tail_start, **arrays)

    def state_dict(self) -> dict:
        """Everything, as plain ints and numpy arrays (copies)."""
        return {
            "num_timesteps": self.num_timesteps,
            "num_bins": self.num_bins,
            "window": self.window,
            "tail_start": self.tail_start,
            "step": self.step,
            "ring_sums": self._ring_sums.copy(),
            "ring_counts": self._ring_counts.copy(),
            "ring_steps": self._ring_steps.copy(),
            "tail_sums": self._tail_sums.copy(),
            "tail_counts": self._tail_counts.copy(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> LossByT:
        out = cls(state["num_timesteps"], state["num_bins"], window=state["window"], tail_start=state["tail_start"])
        out.step = int(state["step"])
        for name in ("ring_sums", "ring_counts", "ring_steps", "tail_sums", "tail_counts"):
            target = getattr(out, "_" + name)
            if np.shape(state[name]) != target.shape:
                raise ValueError(f"state {name!r} has shape {np.shape(state[name])}; expected {target.shape}")
            target[...] = state[name]
        return out


def _mean(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    out = np.full(len(sums), np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


FloorKind = Literal["exact", "numerical"]


@dataclass(frozen=True)
class BinnedFloor:
    """The irreducible loss per bin (the mean over the bin's t of E||eps - eps*||^2 / 2), or None
    where the data's density is unknown."""

    t_start: np.ndarray  # (num_bins,) int64, inclusive
    t_end: np.ndarray  # (num_bins,) int64, exclusive
    values: np.ndarray | None  # (num_bins,) float64
    standard_error: np.ndarray | None  # (num_bins,): 0 where exact, the Monte Carlo SE otherwise
    kind: FloorKind | None
    description: str


def loss_floor_by_bin(
    dataset: Dataset | DataConfig, schedule: ObjectivePath, num_bins: int = 20, *,
    draws_per_bin: int = 40_000, seed: int = 0, coupling: str = "independent", time_power: float = 1.0,
) -> BinnedFloor:
    """The irreducible per-sample loss, averaged over the t's of each bin as training draws them:
    weighted by ``level_weights(T, time_power)`` (equal weights for uniform t).

    One Gaussian N(mu, s^2 I): exact, the mean over the bin of abar_t s^2 / (abar_t s^2 + 1 - abar_t)
    (``GaussianMixture.irreducible_loss``).

    A mixture sum_k w_k N(mu_k, s_k^2 I): Monte Carlo over (t, x_0, eps), Rao-Blackwellised, i.e.
    the conditional variance is integrated exactly given x_t and only x_t is sampled:
        floor(t) = E_{x_t} [ sum_k r_k v_k + (sum_k r_k |m_k|^2 - |sum_k r_k m_k|^2) / 2 ],
    with r_k = p(k | x_t), m_k = E[eps | x_t, k] = sqrt(1 - abar) (x_t - sqrt(abar) mu_k) / (abar s_k^2
    + 1 - abar) and v_k = Var(eps_j | x_t, k) = abar s_k^2 / (abar s_k^2 + 1 - abar) (law of total
    variance over the components). t cycles through the bin's values (equal allocation), so the
    estimate targets the bin's mean over t; its standard error is from the draws' spread
    (conservative under that stratification). With the default 40,000 draws per bin the relative
    standard error on the ring of 8 (T = 1000, 20 bins) is 0.09-0.43%, largest for t in 50..150;
    it takes about 1.5 s, so compute it once per run.

    Toy shapes and point sets: unknown, values None. So is flow matching with the optimal-transport
    coupling (``coupling="ot"``): the noise paired with a point then depends on the rest of its
    batch, so the velocity given x_t is far less spread than with independent pairs, and the floor
    above (for independent pairs) does not bound its loss."""
    data = make_dataset(dataset) if isinstance(dataset, DataConfig) else dataset
    T = schedule.num_timesteps
    t_start, t_end = bin_edges(T, num_bins)
    if schedule.batch_coupled(coupling):
        return BinnedFloor(t_start, t_end, None, None, None,
                           "unknown: with optimal-transport pairs the noise depends on the batch, so the floor of "
                           "independent pairs does not apply")
    if not isinstance(data, GaussianMixture):
        why = (
            "the floor of a point set's empirical distribution is not computed"
            if isinstance(data, FixedPoints)
            else f"the {getattr(data, 'name', 'given')} shape has no known density"
        )
        return BinnedFloor(t_start, t_end, None, None, None, f"unknown: {why}")
    weights = level_weights(T, time_power)  # (T,)
    if len(data.means) == 1:
        per_t = data.irreducible_loss(schedule)  # (T,)
        values = np.array([np.average(per_t[a:b], weights=weights[a:b]) for a, b in zip(t_start, t_end, strict=True)])
        return BinnedFloor(t_start, t_end, values, np.zeros(num_bins), "exact",
                           f"exact: the mean over each bin of {schedule.floor_formula}{_weighted(time_power)}")
    generator = torch.Generator().manual_seed(seed)
    values, errors = np.empty(num_bins), np.empty(num_bins)
    for b, (a, e) in enumerate(zip(t_start, t_end, strict=True)):
        t = torch.arange(draws_per_bin) % int(e - a) + int(a)  # (n,) each t of the bin equally often
        w = torch.from_numpy(weights[t.numpy()])  # then weighted as training draws them
        estimates = _mixture_conditional_variance(data, schedule, t, generator) * (w / w.mean())
        values[b] = float(estimates.mean())
        errors[b] = float(estimates.std() / math.sqrt(draws_per_bin))
    return BinnedFloor(
        t_start, t_end, values, errors, "numerical",
        f"numerical: Monte Carlo of the conditional variance of eps given x_t, {draws_per_bin:,} draws per bin; "
        f"relative standard error at most {np.max(errors / values):.2%}{_weighted(time_power)}",
    )


def _weighted(time_power: float) -> str:
    """How a floor's bin weighs its levels, where it is not evenly."""
    return "" if time_power == 1.0 else f", each level weighted as often as training draws it (p = {time_power:g})"


def _mixture_conditional_variance(
    data: GaussianMixture, schedule: ObjectivePath, t: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """tr Cov(target | x_t) / 2 at x_t ~ q(x_t), one value per t (n,), in float64 (target: eps,
    or flow matching's velocity; ``GaussianMixture.target_terms``)."""
    x0 = data.sample(len(t), generator).double()
    noise = torch.randn(len(t), 2, generator=generator, dtype=torch.float64)
    a = torch.tensor(schedule.float64["signal"])[t][:, None]  # (n, 1)
    s = torch.tensor(schedule.float64["sigma"])[t][:, None]
    x_t = a * x0 + s * noise
    log_r, mean_k, v_k = data.target_terms(x_t, t, schedule)  # (n, K), (n, K, 2), (n, K)
    r = log_r.exp()
    best = (r[:, :, None] * mean_k).sum(1)  # (n, 2)
    between = (r * mean_k.square().sum(-1)).sum(1) - best.square().sum(-1)  # (n,)
    return (r * v_k).sum(1) + between / 2


# --- live previews -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """Samples of the weights at one optimizer step, scored against the data."""

    step: int | None
    points: np.ndarray  # (n, 2) float32, read-only
    energy_distance: float  # mean over the previewer's reference sets; NaN if a point is not finite
    floor: float  # (1/n + 1/m) E|X - X'|: the expected value for perfect samples
    seconds: float  # wall time of this preview (sampling + scoring)

    @property
    def ratio(self) -> float:
        return self.energy_distance / self.floor if self.floor > 0 else float("inf")


def live_model(trainer: Trainer) -> Denoiser:
    """The weights a preview should use: the weight average when there is one. Unlike
    ``Trainer.sampling_model`` it leaves the train/eval mode alone."""
    return trainer.ema_model if trainer.ema_model is not None else trainer.model


class Previewer:
    """Cheap, repeatable previews of a training run.

    Built once per run: from its own generator (seeded with ``seed``) it draws, in this order,
    the draws of the path's preview sampler (``preview_kind``: DDIM for DDPM, Song et al. 2021,
    eq. 12; Euler for flow matching), that is x_T ~ N(0, I) (num_points, 2) and the per-step noise
    if DDIM's eta > 0, then ``num_reference_sets`` true sets of ``reference_size`` points (default
    num_points) and, where no closed form exists, the estimate of E|X - X'|
    (``metrics.mean_pairwise_distance``; exact over all pairs for a point set of up to 5,000
    points). Every preview then runs that sampler from that same x_T with that same noise, so two
    previews differ only by the weights.

    Scoring: E = mean over the reference sets Y_j of 2 mean|x - y| - mean|x - x'| - mean|y - y'|
    (``metrics.energy_distance`` averaged as ``metrics.evaluate`` does). The sets all have m
    points, so the mean over j of mean|x - y_j| is the mean of one n x (J m) cdist, and the
    mean|y - y'| terms are computed once here; a preview costs the DDIM steps, that cdist and an
    n x n one. Floor: (1/n + 1/m) E|X - X'|.

    For a fixed point set (an uploaded CSV) the "true" data is the point set itself: the
    reference sets are drawn from it with replacement, as training does.

    What a ratio of 1 needs: DDIM with few steps is not exact even with the exact eps*. On the
    reference Gaussian it maps x_T ~ N(0, I) to N(1.994, 0.4535^2 I) with 30 steps (s = 0.5), so
    the perfect denoiser scores about 1.33 x the floor at 300 points (1.79 with 20 steps, 1.10
    with 50, 1.00 with 100); and one previewer's ratio carries the noise of its fixed draws (sd
    about 0.4 at 300 points), the same offset in every preview of the run.

    Cost (reference MLP, 300 points, 30 steps, one CPU thread, a busy 2-core machine): about 3-4 ms
    a preview (2.2 ms sampling, 0.75 ms scoring) against 0.27-0.39 ms a training step, so a run at
    full speed can afford a preview about every 200 steps within 5% of its time
    (``preview_affordable``); a refresh every 300 ms costs about 1%.
    """

    def __init__(
        self,
        schedule: ObjectivePath,
        data: Dataset | DataConfig,
        *,
        seed: int = 0,
        num_points: int = 300,
        sample_steps: int = 30,
        eta: float = 0.0,
        num_reference_sets: int = 3,
        reference_size: int | None = None,
    ):
        if num_points < 2:
            raise ValueError(f"num_points must be at least 2; got {num_points}")
        most = schedule.max_sample_steps
        if not 1 <= sample_steps <= most:
            raise ValueError(f"sample_steps must be from 1 to {most}; got {sample_steps}")
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must be in [0, 1]; got {eta}")
        if num_reference_sets < 1:
            raise ValueError(f"num_reference_sets must be at least 1; got {num_reference_sets}")
        self.schedule = schedule
        self.dataset = make_dataset(data) if isinstance(data, DataConfig) else data
        self.num_points = num_points
        self.sampler = SamplerConfig(kind=schedule.preview_kind, sample_steps=sample_steps, eta=eta)
        generator = torch.Generator().manual_seed(seed)
        self._x_T, self._noise = schedule.sampler_draws(self.sampler, generator, num_points)  # (n, 2), (S, n, 2)
        m = reference_size or num_points
        refs = [self.dataset.sample(m, generator).double() for _ in range(num_reference_sets)]
        self._references = torch.cat(refs)  # (J m, 2)
        self._mean_yy = float(np.mean([torch.cdist(y, y).mean().item() for y in refs]))
        self.mean_pairwise_distance = _pairwise_distance(self.dataset, generator)
        self.floor = (1 / num_points + 1 / m) * self.mean_pairwise_distance

    @property
    def x_T(self) -> torch.Tensor:
        """The starting points every preview uses (a copy), (num_points, 2) float32."""
        return self._x_T.clone()

    def score(self, points: torch.Tensor | np.ndarray) -> float:
        """Energy distance of ``points`` (n, 2) to the reference sets, averaged over the sets."""
        x = torch.tensor(np.asarray(points), dtype=torch.float64)  # a copy: points may be read-only
        if not torch.isfinite(x).all():
            return float("nan")
        return float(2 * torch.cdist(x, self._references).mean() - torch.cdist(x, x).mean() - self._mean_yy)

    @torch.inference_mode()
    def sample(self, model: Denoiser | ModelFn) -> torch.Tensor:
        """The preview sampler from the fixed x_T with ``model`` (a Denoiser, or its function (x, t)
        -> output); (n, 2) on the CPU. A Denoiser is read through ``at_fixed_times``, which copies
        the weights and changes nothing."""
        if isinstance(model, torch.nn.Module):
            device = next(model.parameters()).device
            model_fn: ModelFn = model.at_fixed_times()
        else:
            device, model_fn = torch.device("cpu"), model
        noise = None if self._noise is None else self._noise.to(device)
        x = self._x_T.to(device)
        for _, x_next in self.schedule.iter_steps(model_fn, x, noise, self.sampler):  # noqa: B007
            pass
        return x_next.cpu()

    @torch.inference_mode()
    def preview(self, model: Denoiser | ModelFn, step: int | None = None) -> Preview:
        """Sample from the fixed x_T and score the points; ``step`` labels the preview."""
        start = time.perf_counter()
        points = self.sample(model).float().numpy().copy()
        points.flags.writeable = False
        distance = self.score(points)
        return Preview(step, points, distance, self.floor, time.perf_counter() - start)


def _pairwise_distance(dataset: Dataset, generator: torch.Generator) -> float:
    """E|X - X'| for X, X' drawn independently from the data."""
    if isinstance(dataset, FixedPoints) and len(dataset.points) <= 5000:
        points = dataset.points.double()  # exact: the V-statistic over all pairs, as draws with replacement see it
        return float(torch.cdist(points, points).mean())
    return mean_pairwise_distance(dataset, generator)


def preview_affordable(spent_seconds: float, next_seconds: float, elapsed_seconds: float, *,
                       max_share: float = 0.05) -> bool:
    """Whether one more preview keeps all of them within ``max_share`` of the time: previews that
    took ``spent_seconds`` of the ``elapsed_seconds`` so far (previews included), and the next
    expected to take ``next_seconds``, need (spent + next) <= max_share (elapsed + next). Counting
    wall time, not training arithmetic, a run paced to be watched (idle between its chunks)
    affords many previews, and one at full speed loses at most ``max_share`` of its steps."""
    if not 0 < max_share < 1:
        raise ValueError(f"max_share must be in (0, 1); got {max_share}")
    if spent_seconds < 0 or next_seconds < 0 or elapsed_seconds < 0:
        raise ValueError(f"seconds must not be negative; got {spent_seconds}, {next_seconds}, {elapsed_seconds}")
    return spent_seconds + next_seconds <= max_share * (elapsed_seconds + next_seconds) * (1 + 1e-12)


def preview_steps(total_steps: int, count: int = 20) -> list[int]:
    """A fixed preview schedule for a run of ``total_steps``: every k = ceil(total_steps / count)
    optimizer steps, and the final step, so at most ``count`` previews, evenly spaced, the last at
    the end (1000 steps -> 50, 100, ..., 1000; 1001 -> 51, 102, ..., 969, 1001; 7 -> 1, ..., 7).
    Unlike the page's previews (``preview_affordable``) it does not depend on measured costs: the
    same run gets the same steps on any machine (what the command's previews.csv uses)."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
        raise ValueError(f"total_steps must be a whole number of optimizer steps, at least 1; got {total_steps!r}")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be a whole number, at least 1; got {count!r}")
    every = -(-int(total_steps) // int(count))  # ceil, exact for any size
    steps = list(range(every, int(total_steps) + 1, every))
    if steps[-1] != total_steps:  # then total_steps / every < count: room for the final step
        steps.append(int(total_steps))
    return steps

# --- the command's CSV files ---------------------------------------------------------------------

LOSS_BY_T_COLUMNS = ("t_start", "t_end", "loss", "floor")
PREVIEW_COLUMNS = ("step", "energy_distance", "floor")


def loss_by_t_rows(snapshot: LossByTSnapshot, floor: BinnedFloor | None = None) -> list[dict]:
    """Rows of loss_by_t.csv: per bin t_start (inclusive), t_end (exclusive), the mean loss over the
    tail (the last 20% of training for ``LossByT.for_run``) and the floor; "" where unknown."""
    if floor is not None and not (
        np.array_equal(floor.t_start, snapshot.t_start) and np.array_equal(floor.t_end, snapshot.t_end)
    ):
        raise ValueError("the floor and the loss are binned differently; build both with the same num_bins")
    floors = floor.values if floor is not None and floor.values is not None else None
    return [
        {
            "t_start": int(snapshot.t_start[b]),
            "t_end": int(snapshot.t_end[b]),
            "loss": float(snapshot.tail_loss[b]) if snapshot.tail_count[b] else "",
            "floor": float(floors[b]) if floors is not None else "",
        }
        for b in range(len(snapshot.t_start))
    ]


def preview_rows(previews: Iterable[Preview]) -> list[dict]:
    """Rows of previews.csv: step, energy_distance, floor."""
    return [{"step": p.step, "energy_distance": p.energy_distance, "floor": p.floor} for p in previews]
