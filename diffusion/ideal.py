"""The ideal denoiser eps*(x, t) = E[eps | x_t = x], and how far the model and the sampler are from it.

Every network trained with the DDPM loss is regressing towards eps*: the loss is
E||eps - eps_theta(x_t, t)||^2 = E||eps - eps*||^2 (the irreducible part) + E||eps* - eps_theta||^2.
So eps* is the field the model should draw, and |eps_theta - eps*| is the part of its error that
training could still remove.

Two forms:
  exact      data N(mu, s^2 I) or a mixture sum_k w_k N(mu_k, s_k^2 I) (the reference Gaussian, the
             ring of 8): q(x_t) is again a mixture and eps* has a closed form
             (``GaussianMixture.optimal_eps``: per component sqrt(1-abar)(x - sqrt(abar) mu_k) /
             (abar s_k^2 + 1 - abar), weighted by the posterior over components).
  empirical  any point set x0_1..x0_M (a toy shape through a fixed sample of it, a user's points
             through the points themselves): the ideal denoiser of the empirical distribution
             (1/M) sum_i delta(x0_i),
                 w_i(x)     = softmax_i( -|x - sqrt(abar_t) x0_i|^2 / (2 (1 - abar_t)) ),
                 E[x0 | x]  = sum_i w_i(x) x0_i,
                 eps*(x, t) = (x - sqrt(abar_t) E[x0 | x]) / sqrt(1 - abar_t).
             This is the ideal for *that sample*, not for the shape it was drawn from: at small t
             the softmax is nearly one-hot, so eps* points from x straight at the nearest sample
             point (a model that matched it exactly would only reproduce the sample).

Any path x_t = a x_0 + s eps works the same way (a, s: the path's ``signal`` and ``sigma``;
DDPM a = sqrt(abar_t), s = sqrt(1 - abar_t)): the weights become softmax_i(-|x - a x0_i|^2 / (2 s^2)),
eps* = (x - a E[x0 | x]) / s. The network learns the path's ``target``, linear in (x_0, eps), so its
ideal is the target of the posterior means: eps* for DDPM, and for flow matching (a = 1 - t, s = t)
    v*(x, t) = E[eps - x_0 | x_t = x] = eps*(x, t) - E[x_0 | x_t = x].
That is ``IdealDenoiser.predict``, what the field view draws.

Times: eps and the field use the model index t = 0..T-1 (abar_t = alphas_cumprod[t]); a sampler
``Trajectory`` labels its frames with k = T..0, where frame k (k >= 1) is the state before the
model step at index k - 1, so q(x_k) has abar = alphas_cumprod[k - 1], and frame 0 is the data.

Cost (one CPU thread of a busy 2-core Xeon; min-median of repeats): the empirical eps on a 30 x 30
grid over 20,000 points takes 35-50 ms (float64, in chunks of 2^17 weights, so memory stays near
1 MB whatever the sizes; 70-110 ms wall while the cores were 3x oversubscribed). An error curve
costs about as much per t for 1,000 data points (empirical), 1.2 ms per t (exact). A drift curve
of 1,000 points x 60 frames takes 0.4-0.75 s, mostly the three 1000 x 1000 cdists per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .config import DataConfig
from .datasets import Dataset, FixedPoints, GaussianMixture, make_dataset
from .denoiser import Denoiser
from .flow import paired_in_batches
from .metrics import energy_distance
from .paths import ModelFn, ObjectivePath
from .samplers import Trajectory

IdealKind = Literal["exact", "empirical"]
CHUNK_WEIGHTS = 2**17  # softmax weights held at once (x rows times sample points): ~1 MB, cache-sized


def empirical_eps(x: torch.Tensor, points: torch.Tensor, alpha_bar: float, *, chunk: int = CHUNK_WEIGHTS) -> torch.Tensor:
    """eps*(x) for the empirical distribution of ``points`` at signal level abar (DDPM's path), in
    float64: (x - sqrt(abar) E[x0 | x]) / sqrt(1 - abar) (``empirical_posterior_mean``)."""
    a = float(alpha_bar)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha_bar must be in (0, 1); got {a}")
    x = x.double()
    mean = empirical_posterior_mean(x, points, math.sqrt(a), math.sqrt(1 - a), chunk=chunk)
    return (x - math.sqrt(a) * mean) / math.sqrt(1 - a)


def empirical_posterior_mean(x: torch.Tensor, points: torch.Tensor, signal: float, sigma: float, *,
                             chunk: int = CHUNK_WEIGHTS) -> torch.Tensor:
    """E[x0 | x_t = x] for the empirical distribution of ``points`` on the path x_t = a x0 + s eps
    (a = ``signal`` >= 0, s = ``sigma`` > 0), in float64.

    x (N, 2), points (M, 2) -> (N, 2) float64. The logits drop the row constant |x|^2 / (2 s^2),
    which the softmax ignores:  l_i = (a x . x0_i - a^2 |x0_i|^2 / 2) / s^2,
    then the row maximum is subtracted before exp, so a nearly one-hot softmax (t = 0, 1 - abar
    down to 1e-8) neither overflows nor loses the nearest point. One matmul against [x0_i, 1]
    gives the numerator and the normaliser together. Rows are done ``chunk // M`` at a time.
    Weights below e^-700 relative to the largest are raised to it: at most M e^-700 of the mass."""
    a, s = float(signal), float(sigma)
    if not (a >= 0.0 and s > 0.0):
        raise ValueError(f"signal must be at least 0 and sigma above 0; got {a}, {s}")
    x = x.double()
    x0 = points.to(device=x.device, dtype=torch.float64)  # (M, 2)
    B = (a / s**2) * x0.T.contiguous()  # (2, M)
    c = (-(a**2) / (2 * s**2)) * (x0**2).sum(1)  # (M,)
    ones = torch.ones(len(x0), 1, dtype=torch.float64, device=x.device)
    x0_and_one = torch.cat([x0, ones], 1)  # (M, 3)
    rows = max(1, chunk // len(x0))
    sums = torch.empty(len(x), 3, dtype=torch.float64, device=x.device)  # (N, 3): sum w x0, sum w
    for start in range(0, len(x), rows):
        logits = torch.addmm(c, x[start : start + rows], B)  # (rows, M)
        logits.sub_(logits.amax(1, keepdim=True))  # <= 0, the largest is 0
        # exp below -708 underflows through a slow path (10x slower); e^-700 ~ 1e-304 is nil anyway
        logits.clamp_(min=-700.0).exp_()  # unnormalised weights, the largest is 1
        torch.mm(logits, x0_and_one, out=sums[start : start + rows])
    return sums[:, :2] / sums[:, 2:]  # E[x0 | x_t = x], (N, 2)


@dataclass(frozen=True, eq=False)
class IdealDenoiser:
    """eps*(x, t) = E[eps | x_t = x] for one dataset and schedule, and the ideal prediction of its
    objective (``predict``: eps* or flow matching's v*). Callable as a sampler's model function:
    at a level index t, or, for flow matching's solvers, at a continuous time t in [0, 1] (a float).

    kind:        'exact' (closed form, Gaussian or mixture) or 'empirical' (of ``points``).
    description: one line for the page saying which it is and, if empirical, what that means."""

    schedule: ObjectivePath
    kind: IdealKind
    description: str
    mixture: GaussianMixture | None = None
    points: torch.Tensor | None = None  # (M, 2) float64, the empirical form's sample

    def path(self, t: int | float) -> tuple[float, float]:
        """(a, s) of x_t = a x0 + s eps: at level index t (int), or at a continuous time t (float)
        where the path has one (``ObjectivePath.path_at``)."""
        return self.schedule.path_at(t)

    def _eps_and_mean(self, x: torch.Tensor, t: int | float) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps*, E[x0 | x_t = x]) in float64."""
        a, s = self.path(t)
        x = torch.as_tensor(x).double()
        if self.mixture is not None:
            n = len(x)
            log_r, eps_k, x0_k = self.mixture._terms_on_path(
                x, torch.full((n, 1), a, dtype=torch.float64), torch.full((n, 1), s, dtype=torch.float64))
            r = log_r.exp()[:, :, None]
            return (r * eps_k).sum(1), (r * x0_k).sum(1)
        mean = empirical_posterior_mean(x, self.points, a, s)
        return (x - a * mean) / s, mean

    def eps(self, x: torch.Tensor, t: int | float) -> torch.Tensor:
        """eps*(x, t), x (N, 2) -> (N, 2) in x's dtype (float64 inside)."""
        return self._eps_and_mean(x, t)[0].to(torch.as_tensor(x).dtype)

    def posterior_mean(self, x: torch.Tensor, t: int | float) -> torch.Tensor:
        """E[x0 | x_t = x], (N, 2) in x's dtype."""
        return self._eps_and_mean(x, t)[1].to(torch.as_tensor(x).dtype)

    def predict(self, x: torch.Tensor, t: int | float) -> torch.Tensor:
        """What a perfect network of this objective outputs: the path's target of E[x0 | x] and
        eps* (DDPM: eps*; flow matching: v* = eps* - E[x0 | x]). (N, 2) in x's dtype."""
        eps, mean = self._eps_and_mean(x, t)
        return self.schedule.target(mean, eps).to(torch.as_tensor(x).dtype)

    __call__ = predict

    def score(self, x: torch.Tensor, t: int | float) -> torch.Tensor:
        """grad log q(x_t) at x = -eps*(x, t) / s."""
        return -self.eps(x, t) / self.path(t)[1]


def ideal_denoiser(
    data: DataConfig | Dataset, schedule: ObjectivePath, *, reference_points: int = 20_000, seed: int = 0
) -> IdealDenoiser:
    """The ideal denoiser of ``data``: exact for a Gaussian or mixture; for a user's point set the
    empirical one of those very points; for any other shape the empirical one of a fixed sample of
    ``reference_points`` draws (generator seeded with ``seed``)."""
    dataset = make_dataset(data) if isinstance(data, DataConfig) else data
    if isinstance(dataset, GaussianMixture):
        k = len(dataset.means)
        what = "Gaussian" if k == 1 else f"mixture of {k} Gaussians"
        return IdealDenoiser(schedule, "exact", f"exact (closed form for this {what})", mixture=dataset)
    if isinstance(dataset, FixedPoints):
        points = dataset.points.double()
        note = f"for your {len(points):,} points: at small t it points at the nearest of them"
    else:
        if reference_points < 1:
            raise ValueError(f"reference_points must be at least 1; got {reference_points}")
        points = dataset.sample(reference_points, torch.Generator().manual_seed(seed)).double()
        note = (f"for this sample of {len(points):,} points, not the shape itself: at small t it points "
                "at the nearest sample point")
    return IdealDenoiser(schedule, "empirical", note, points=points)


def class_ideal(
    data: DataConfig | Dataset, schedule: ObjectivePath, label: int, *, reference_points: int = 20_000, seed: int = 0
) -> IdealDenoiser:
    """The ideal denoiser of one class of ``data`` (E[eps | x_t = x, class]): exact for a class that
    is a mixture's component (the ring's), else the empirical one of that class's points among
    ``reference_points`` labelled draws (generator seeded with ``seed``)."""
    dataset = make_dataset(data) if isinstance(data, DataConfig) else data
    if isinstance(dataset, GaussianMixture):
        return IdealDenoiser(schedule, "exact", "exact (closed form for this class's Gaussian)",
                             mixture=dataset.component(label))
    points, labels = dataset.sample_labelled(reference_points, torch.Generator().manual_seed(seed))
    mine = points[labels == label].double()
    if not len(mine):
        raise ValueError(f"class {label} has no points among {reference_points:,} draws of the data")
    return IdealDenoiser(schedule, "empirical", f"for this class's {len(mine):,} points of a fixed sample", points=mine)


@dataclass(frozen=True, eq=False)
class GuidedIdeal:
    """The ideal field under classifier-free guidance: u* + w (c* - u*), u* the ideal prediction of
    the data and c* that of one class, so what a perfect conditional network sampled at scale w
    follows. Callable as a sampler's model function, like ``IdealDenoiser``.

    Where both are Gaussians with one spread s (c: N(m_c, s^2 I), u: N(m_u, s^2 I)) the noised
    densities tilt into the noised tilt, so every sampler following it ends at the tilted density
    p_c^w p_u^(1 - w) / Z = N(w m_c + (1 - w) m_u, s^2 I) (``tilted_gaussian``); for a real
    mixture u* is not Gaussian and the guided samples only approximate the tilt."""

    unconditional: IdealDenoiser
    conditional: IdealDenoiser
    scale: float

    def predict(self, x: torch.Tensor, t: int | float) -> torch.Tensor:
        u = self.unconditional.predict(x, t)
        return u + self.scale * (self.conditional.predict(x, t) - u)

    __call__ = predict


def guided_ideal(data: DataConfig | Dataset, schedule: ObjectivePath, label: int, scale: float, **kwargs) -> GuidedIdeal:
    """The ideal guided field of ``data``'s class ``label`` at guidance scale ``scale``."""
    return GuidedIdeal(ideal_denoiser(data, schedule, **kwargs), class_ideal(data, schedule, label, **kwargs), scale)


def tilted_gaussian(conditional: GaussianMixture, unconditional: GaussianMixture, scale: float) -> GaussianMixture:
    """p_c^w p_u^(1 - w) / Z for two isotropic Gaussians: precision w / s_c^2 + (1 - w) / s_u^2 and
    mean (w m_c / s_c^2 + (1 - w) m_u / s_u^2) / precision; ValueError where the precision is not
    positive (no density)."""
    if len(conditional.means) != 1 or len(unconditional.means) != 1:
        raise ValueError("tilted_gaussian takes two single Gaussians")
    pc, pu = 1 / conditional.stds[0] ** 2, 1 / unconditional.stds[0] ** 2
    precision = scale * pc + (1 - scale) * pu
    if precision <= 0:
        raise ValueError(f"at scale {scale:g} the tilt has no density (precision {precision:g})")
    mean = (scale * pc * np.array(conditional.means[0]) + (1 - scale) * pu * np.array(unconditional.means[0])) / precision
    return GaussianMixture((tuple(mean.tolist()),), (float(precision ** -0.5),), (1.0,))


# --- the field: learned eps against eps* on a grid ------------------------------------------------


def noised(x0: torch.Tensor, schedule: ObjectivePath, t: int, noise: torch.Tensor) -> torch.Tensor:
    """x_t = a x0 + s noise at model index t, float64, (N, 2): DDPM's eq. 4, sqrt(abar_t) x0 +
    sqrt(1 - abar_t) noise; flow matching's (1 - t) x0 + t noise at t = (index + 1) / T."""
    t = schedule.check_level(t)
    table = schedule.float64
    return float(table["signal"][t]) * x0.double() + float(table["sigma"][t]) * noise.double()


def field_grid(points, num: int = 21, pad: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Grid axes spanning ``points`` (N, 2): per axis from min - pad * std to max + pad * std.

    For the field at a t, pass the noised data at that t (``noised``): q(x_t) moves from the data
    towards N(0, I). Returns xs (num,), ys (num,) float64."""
    if num < 2:
        raise ValueError(f"num must be at least 2; got {num}")
    p = np.asarray(points, dtype=np.float64)
    spread = p.std(0)
    lo, hi = p.min(0) - pad * spread, p.max(0) + pad * spread
    return np.linspace(lo[0], hi[0], num), np.linspace(lo[1], hi[1], num)


def grid_points(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(len(ys) * len(xs), 2) float64, x varying fastest: row iy * len(xs) + ix is (xs[ix], ys[iy])."""
    gx, gy = np.meshgrid(xs, ys, indexing="xy")  # (ny, nx) each
    return np.stack([gx.ravel(), gy.ravel()], 1)


def _as_model_fn(model: Denoiser | ModelFn) -> tuple[ModelFn, torch.device]:
    if isinstance(model, Denoiser):
        return model.at_fixed_times(), next(model.parameters()).device
    return model, torch.device("cpu")


def _learned(model_fn: ModelFn, device: torch.device, x: torch.Tensor, t: int) -> torch.Tensor:
    """The model's output at float64 points x (N, 2), computed in float32 on its device; float64 CPU."""
    with torch.inference_mode():
        return model_fn(x.to(device=device, dtype=torch.float32), t).cpu().double()


@dataclass(frozen=True)
class FieldFrame:
    """The learned and the ideal output (the path's ``output_name``: eps, or flow matching's
    velocity) at one t on a grid, points[iy * len(xs) + ix] = (xs[ix], ys[iy]), and the eps each
    implies (the path's ``eps_hat``), from which the score follows."""

    t: int  # model index
    xs: np.ndarray  # (nx,)
    ys: np.ndarray  # (ny,)
    points: np.ndarray  # (G, 2), G = nx * ny
    learned: np.ndarray  # (G, 2) the model's output (eps_theta; flow: v_theta)
    ideal: np.ndarray  # (G, 2) the ideal output (eps*; flow: v*)
    error: np.ndarray  # (G,) |learned - ideal|
    sigma: float  # s of the path at t (DDPM sqrt(1 - abar_t)): score = -eps / sigma
    learned_eps: np.ndarray  # (G, 2) the eps the learned output implies
    ideal_eps: np.ndarray  # (G, 2)

    @property
    def learned_score(self) -> np.ndarray:  # (G, 2)
        return -self.learned_eps / self.sigma

    @property
    def ideal_score(self) -> np.ndarray:  # (G, 2)
        return -self.ideal_eps / self.sigma


def field_at(
    model: Denoiser | ModelFn, ideal: IdealDenoiser, schedule: ObjectivePath, t: int,
    grid: tuple[np.ndarray, np.ndarray],
) -> FieldFrame:
    """The learned and the ideal output at model index t on the grid (xs, ys) (``field_grid``):
    eps_theta and eps*, or for flow matching v_theta and v*."""
    t = schedule.check_level(t)
    a, s = schedule.path_at(t)
    xs, ys = (np.asarray(axis, dtype=np.float64) for axis in grid)
    points = torch.from_numpy(grid_points(xs, ys))  # (G, 2)
    model_fn, device = _as_model_fn(model)
    learned = _learned(model_fn, device, points, t)
    wanted = ideal.predict(points, t)
    points, learned_np, wanted_np = points.numpy(), learned.numpy(), wanted.numpy()
    return FieldFrame(
        t=t, xs=xs, ys=ys, points=points, learned=learned_np, ideal=wanted_np,
        error=(learned - wanted).norm(dim=1).numpy(), sigma=s,
        learned_eps=schedule.eps_hat(points, learned_np, a, s), ideal_eps=schedule.eps_hat(points, wanted_np, a, s),
    )


@dataclass(frozen=True)
class ErrorCurve:
    """mean |learned - ideal| (the model's output: eps, or flow matching's v) over the noised data q(x_t) at each t:
    where the model is off."""

    times: np.ndarray  # (K,) model indices
    error: np.ndarray  # (K,)


def field_error_curve(
    model: Denoiser | ModelFn, ideal: IdealDenoiser, schedule: ObjectivePath, data_sample: torch.Tensor,
    times, *, seed: int = 0,
) -> ErrorCurve:
    """For each t in ``times``: E |output_theta(x_t, t) - output*(x_t, t)| over x_t = a x0 + s eps
    (DDPM: sqrt(abar_t) x0 + sqrt(1 - abar_t) eps), x0 the rows of ``data_sample`` (n, 2) and eps ~ N(0, I) drawn once from a
    generator seeded with ``seed`` (the same eps at every t, so the curve is smooth in t)."""
    times = np.asarray(times, dtype=np.int64)
    x0 = torch.as_tensor(data_sample).double()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).double()  # drawn in float32, like all noise
    model_fn, device = _as_model_fn(model)
    error = np.empty(len(times))
    for i, t in enumerate(times.tolist()):
        x_t = noised(x0, schedule, t, noise)
        error[i] = float((_learned(model_fn, device, x_t, t) - ideal.predict(x_t, t)).norm(dim=1).mean())
    return ErrorCurve(times, error)


# --- forward against reverse: q(x_t) beside the sampler's x_t ----------------------------------


@dataclass(frozen=True)
class DriftCurve:
    """Energy distance between the sampler's x_t and the true q(x_t), at each kept frame."""

    times: np.ndarray  # (K,) frame times T ... 0, as ``Trajectory.frame_times``
    energy_distance: np.ndarray  # (K,)
    floor: np.ndarray  # (K,) (1/n + 1/m) E|X - X'| of q(x_t): its expected value were x_t ~ q(x_t)
    reference_size: int  # m, the points of q(x_t) drawn at each frame

    @property
    def ratio(self) -> np.ndarray:
        return self.energy_distance / self.floor


def drift_curve(
    trajectory: Trajectory, data: DataConfig | Dataset, schedule: ObjectivePath, *,
    reference_size: int | None = None, seed: int = 1, pairs: int = 100_000, ot_batch: int | None = None,
) -> DriftCurve:
    """Energy distance (``metrics.energy_distance``) between each kept frame of ``trajectory`` (n
    points) and m = ``reference_size`` (default n) points of the true q(x_k) at that frame time k.

    q(x_k) is drawn with common random numbers: from one generator seeded with ``seed``, first
    x0 = data.sample(m) and then eps ~ N(0, I) (m, 2) (float32 draws, like all noise here), and x_k = sqrt(abar) x0 + sqrt(1 - abar) eps
    with abar = alphas_cumprod[k - 1] (k = 0: x0 itself). Use a seed other than the sampler's: for
    the Gaussian, data.sample draws the same normals as x_T would.

    Floor: (1/n + 1/m) E|X - X'| over q(x_k); for one Gaussian q(x_k) = N(sqrt(abar) mu, v I) with
    v = abar s^2 + 1 - abar and E|X - X'| = sqrt(pi v) exactly; otherwise the mean
    over ``pairs`` independent pairs, drawn next from the same generator (x0 pairs, then eps pairs)
    and reused at every k. Works for DDPM and DDIM trajectories alike: frame times are model times.

    Flow matching trained with the optimal-transport coupling in batches of ``ot_batch``: its path
    is not q(x_t) of independent pairs but x_t = (1 - t) x0 + t eps with eps paired to x0 batch by
    batch (``flow.paired_in_batches``), which is what its sampler should reproduce. So the reference
    eps are paired that way, and the floor is the Monte Carlo one over min(pairs, 20,000) pairs of
    two such paired sets (each set costs one assignment per batch)."""
    dataset = make_dataset(data) if isinstance(data, DataConfig) else data
    n = trajectory.frames.shape[1]
    m = reference_size or n
    g = torch.Generator().manual_seed(seed)
    x0 = dataset.sample(m, g).double()  # (m, 2)
    noise = torch.randn(m, 2, generator=g).double()
    exact = isinstance(dataset, GaussianMixture) and len(dataset.means) == 1 and ot_batch is None
    if ot_batch is not None:
        noise = paired_in_batches(x0, noise, ot_batch)
        pairs = min(pairs, 20_000)
        sets = []
        for _ in range(2):
            x0_set, noise_set = dataset.sample(pairs, g).double(), torch.randn(pairs, 2, generator=g).double()
            sets.append((x0_set, paired_in_batches(x0_set, noise_set, ot_batch)))
        x0_pair, noise_pair = sets[0][0] - sets[1][0], sets[0][1] - sets[1][1]
    elif not exact:
        x0_pair = dataset.sample(pairs, g).double() - dataset.sample(pairs, g).double()  # (P, 2) x0 - x0'
        noise_pair = torch.randn(pairs, 2, generator=g).double() - torch.randn(pairs, 2, generator=g).double()
    times = np.asarray(trajectory.frame_times, dtype=schedule.frame_dtype)
    distance, floor = np.empty(len(times)), np.empty(len(times))
    for i, k in enumerate(times.tolist()):
        signal, sigma = schedule.path_at_frame(k)
        reference = signal * x0 + sigma * noise  # (m, 2) ~ q(x_k)
        distance[i] = energy_distance(torch.from_numpy(trajectory.frames[i]), reference)
        if exact:
            v = signal**2 * dataset.stds[0] ** 2 + sigma**2
            spread = math.sqrt(math.pi * v)
        else:
            spread = float((signal * x0_pair + sigma * noise_pair).norm(dim=1).mean())
        floor[i] = (1 / n + 1 / m) * spread
    return DriftCurve(times, distance, floor, m)
