"""The density a trained model defines, exactly: the probability-flow ODE and its divergence in 2-D.

Every path x_t = a x_0 + s eps has a deterministic twin of its sampler, the probability-flow ODE
(Song et al. 2021), whose solutions carry the data's distribution through the same marginals. Each
path writes it in its own variable u, from u = 0 (the data) to the last node (taken as N(0, I)),
for the state y = x / c(u) (``paths.ObjectivePath.ode_*``):
    DDPM   u = sigma-bar = s / a, y = x / a:   dy/du = eps_theta(x, t)    (DDIM, eta = 0, is its Euler step)
    flow   u = t, y = x:                        dy/du = v_theta(x, t)
A trained model thus defines a density. Along a solution, d log p_u(y) / du = -div_y f (the
instantaneous change of variables, Chen et al. 2018), so
    log p_model(x) = log N(c_N y_N; 0, I) + 2 log c_N + integral_0^{u_N} div_y f(y(u), u) du.
In 2-D the divergence is the trace of a 2 x 2 Jacobian: exact, two backward passes (no Hutchinson
estimate). The solver is Heun's (trapezoidal, second order) on the path's ``ode_nodes``, the
divergence integrated by the same rule; with a second solve of twice the steps, Richardson's
extrapolation cancels its h^2 error term, and the difference of the two is the error shown.

For DDPM the prior is N(0, I) at level T - 1, where the sampler starts, though the data's noised
marginal there is N(a_T mu, ...): that mismatch is part of the model's density (tiny when a_T is).
With the ideal field of one Gaussian N(mu, s0^2 I) the flow map is affine,
    x_u = a mu + sqrt(v / s0^2) (x - mu),  v = a^2 s0^2 + s^2,
so ``gaussian_model_log_density`` gives the solve's exact answer; a test holds the solver to it.

What is here:
    log_likelihood     log p_model(x) for points, one solve
    extrapolated_log_likelihood   the same from two solves, with its error
    data_entropy       H of the data: exact for one Gaussian, Monte Carlo with its error for mixtures
    nll_report         mean NLL on fresh data, H and NLL - H (an estimate of KL(data || model))
    density_grid       log p_model (and log p_true where known) on a grid over the data
    probe              one start point's ODE path, a few stochastic paths from it, log p along it
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .datasets import Dataset, GaussianMixture
from .paths import ObjectivePath

# (x (N, 2) float64, a, s, the network's time input) -> the network's output (N, 2), differentiable in x
PathModel = Callable[[torch.Tensor, float, float, float], torch.Tensor]
LOG_2PI = math.log(2 * math.pi)


def network_model(model: torch.nn.Module) -> PathModel:
    """A trained ``Denoiser`` as a ``PathModel``: its own forward at a continuous time (features
    computed), in float32 inside, differentiable in x."""

    device = next(model.parameters()).device

    def output(x: torch.Tensor, a: float, s: float, time: float) -> torch.Tensor:
        times = torch.full((len(x),), float(time), dtype=torch.float64)
        return model(x.float().to(device), times).double().to(x.device)

    return output


def ideal_model(mixture: GaussianMixture, path: ObjectivePath) -> PathModel:
    """The ideal network of ``path``'s objective for a Gaussian mixture, at any (a, s): the path's
    target of E[x_0 | x] and E[eps | x] (``ideal.IdealDenoiser.predict``), differentiable in x."""

    def output(x: torch.Tensor, a: float, s: float, time: float) -> torch.Tensor:
        n = len(x)
        log_r, eps_k, x0_k = mixture._terms_on_path(
            x, torch.full((n, 1), a, dtype=torch.float64), torch.full((n, 1), s, dtype=torch.float64))
        r = log_r.exp()[:, :, None]
        return path.target((r * x0_k).sum(1), (r * eps_k).sum(1))

    return output


def _field(model: PathModel, path: ObjectivePath, y: torch.Tensor, u: float,
           divergence: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ODE's velocity f(y, u) and, if asked, its divergence tr(df/dy), each per point."""
    a, s, time = path.ode_point(u)
    c = path.ode_scale(u)
    if not divergence:
        with torch.no_grad():
            x = c * y
            return path.ode_velocity(x, model(x, a, s, time), a, s), None
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        x = c * y
        f = path.ode_velocity(x, model(x, a, s, time), a, s)
        d0 = torch.autograd.grad(f[:, 0].sum(), y, retain_graph=True)[0][:, 0]
        d1 = torch.autograd.grad(f[:, 1].sum(), y)[0][:, 1]
    return f.detach(), (d0 + d1).detach()


@dataclass(frozen=True)
class OdeSolve:
    """The nodes of one Heun solve from the data to the prior: the ODE variable, the points x in
    the path's own coordinates, and the divergence integrated from u = 0 up to each node."""

    u: np.ndarray  # (K,)
    x: np.ndarray  # (K, N, 2)
    integrated_divergence: np.ndarray  # (K, N), 0 at the data
    log_p: np.ndarray  # (K, N): log p_u(x_u) under the model, in x's coordinates


def _prior_log_density(x: torch.Tensor) -> torch.Tensor:
    return -(x**2).sum(1) / 2 - LOG_2PI


def solve(model: PathModel, path: ObjectivePath, x: torch.Tensor | np.ndarray, steps: int,
          *, keep: bool = False) -> OdeSolve:
    """Carry points x (N, 2) at u = 0 to the prior by Heun's method on ``path.ode_nodes(steps)``
    (2 model calls a step, each with its divergence). ``keep``: every node's points, not just the
    two ends. Everything in float64."""
    nodes = path.ode_nodes(steps)
    y = torch.as_tensor(np.asarray(x), dtype=torch.float64) / path.ode_scale(float(nodes[0]))
    integrated = torch.zeros(len(y), dtype=torch.float64)
    kept_y, kept_d = [y], [integrated]
    for u, u_next in zip(nodes[:-1].tolist(), nodes[1:].tolist(), strict=True):
        h = u_next - u
        f, d = _field(model, path, y, u)
        f2, d2 = _field(model, path, y + h * f, u_next)
        y = y + h / 2 * (f + f2)
        integrated = integrated + h / 2 * (d + d2)
        if keep or u_next == nodes[-1]:
            kept_y.append(y)
            kept_d.append(integrated)
    us = nodes if keep else nodes[[0, -1]]
    scales = np.array([path.ode_scale(float(u)) for u in us])
    xs = torch.stack(kept_y).numpy() * scales[:, None, None]
    div = torch.stack(kept_d).numpy()
    # log p_N in y's coordinates, then back along the path: log p_u(y_u) = log p_N(y_N) + int_u^N div
    end = _prior_log_density(torch.from_numpy(xs[-1])).numpy() + 2 * math.log(scales[-1])
    log_p_y = end[None, :] + (div[-1][None, :] - div)
    return OdeSolve(us, xs, div, log_p_y - 2 * np.log(scales)[:, None])


def log_likelihood(model: PathModel, path: ObjectivePath, x, steps: int, *, batch: int = 4096) -> np.ndarray:
    """log p_model(x) in nats for points x (N, 2) (the model's units), by ``solve`` in batches."""
    x = np.asarray(x, dtype=np.float64)
    return np.concatenate([solve(model, path, x[i : i + batch], steps).log_p[0]
                           for i in range(0, len(x), batch)]) if len(x) else np.empty(0)


def extrapolated_log_likelihood(model: PathModel, path: ObjectivePath, x, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """log p_model(x) with its solver error: solved with ``steps`` (a) and 2 x ``steps`` (b). Heun's
    error falls as h^2, so b's error is about (b - a) / 3 and Richardson's (4 b - a) / 3 cancels that
    term (Richardson 1911). Returns that value and |b - a| / 3 per point, the estimated error of b,
    which the extrapolated value's is smaller than once the steps are fine enough for h^2 to lead
    (``tests/test_likelihood.py`` holds both at 32 steps; at 8 the estimate falls short by 2x)."""
    a = log_likelihood(model, path, x, steps)
    b = log_likelihood(model, path, x, 2 * steps)
    return (4 * b - a) / 3, np.abs(b - a) / 3


def gaussian_model_log_density(mu: np.ndarray, s0: float, path: ObjectivePath, steps: int, x) -> np.ndarray:
    """The exact density the ideal field of N(mu, s0^2 I) defines on ``path`` with the N(0, I) prior
    at the last of ``path.ode_nodes(steps)``: the affine flow map x -> a mu + sqrt(v) / s0 (x - mu),
    v = a^2 s0^2 + s^2 there, so log p = log N(that; 0, I) + log(v / s0^2)."""
    a, s, _ = path.ode_point(float(path.ode_nodes(steps)[-1]))
    v = a * a * s0 * s0 + s * s
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    end = a * torch.as_tensor(np.asarray(mu), dtype=torch.float64) + math.sqrt(v) / s0 * (x - torch.as_tensor(mu))
    return (_prior_log_density(end) + math.log(v / (s0 * s0))).numpy()


# --- the data's own density, where it is known --------------------------------------------------------


def true_log_density(dataset: Dataset, x) -> np.ndarray | None:
    """log p_data(x) (N,) where the density has a closed form (a Gaussian or a mixture), else None."""
    if isinstance(dataset, GaussianMixture):
        return dataset.log_density(torch.as_tensor(np.asarray(x), dtype=torch.float64)).numpy()
    return None


@dataclass(frozen=True)
class Estimate:
    """A number with its Monte Carlo standard error (0 where it is exact)."""

    value: float
    error: float

    def __str__(self) -> str:
        return f"{self.value:.3f}" if self.error == 0 else f"{self.value:.3f} ± {self.error:.3f}"


def _mean(values: np.ndarray) -> Estimate:
    return Estimate(float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(len(values))))


def data_entropy(dataset: Dataset, n: int = 20_000, seed: int = 0) -> Estimate | None:
    """H = -E log p(X) in nats: exact for one Gaussian (log(2 pi e s^2)), the mean of -log p over
    ``n`` draws with its standard error for a mixture, None where the density is unknown."""
    if not isinstance(dataset, GaussianMixture):
        return None
    if dataset.entropy is not None:
        return Estimate(dataset.entropy, 0.0)
    x = dataset.sample(n, torch.Generator().manual_seed(seed))
    return _mean(-true_log_density(dataset, x))


@dataclass(frozen=True)
class NLLReport:
    """The model's mean negative log-likelihood on fresh data beside the data's entropy.

    ``kl`` is mean(log p_data - log p_model) over the same points, an unbiased estimate of
    KL(data || model) >= 0 (NLL - H, with the lower error of paired differences); its standard
    error is the floor it cannot be told from 0 below. None where the data's density is unknown."""

    nll: Estimate
    entropy: Estimate | None
    kl: Estimate | None
    solver_error: float  # mean estimated error of log p (``extrapolated_log_likelihood``) over the points
    steps: int
    num_points: int

    def to_dict(self) -> dict:
        """The command's JSON: ``nll``, ``entropy`` and ``kl_estimate`` (null where unknown), each
        with its standard error, and the solver's."""
        def pair(name, e):
            return {name: None if e is None else e.value, f"{name}_se": None if e is None else e.error}
        return (pair("nll", self.nll) | pair("entropy", self.entropy) | pair("kl_estimate", self.kl)
                | {"ode_steps": self.steps, "ode_error": self.solver_error, "likelihood_points": self.num_points})


def nll_report(model: PathModel, path: ObjectivePath, dataset: Dataset, *, num_points: int = 1000,
               steps: int = 32, seed: int = 4321,
               report: Callable[[int, int, str], None] = lambda done, total, text: None) -> NLLReport:
    """NLL of ``num_points`` fresh points (generator seeded with ``seed``), solved with ``steps``
    and, for the solver's error, 2 x ``steps``. ``report(done, total, text)`` after each solve."""
    x = dataset.sample(num_points, torch.Generator().manual_seed(seed)).double().numpy()
    report(0, 2, f"log p of {num_points:,} points with {steps} and {2 * steps} steps")
    log_p, error = extrapolated_log_likelihood(model, path, x, steps)
    report(1, 2, "the data's entropy")
    truth = true_log_density(dataset, x)
    entropy = data_entropy(dataset)
    report(2, 2, "done")
    kl = None if truth is None else _mean(truth - log_p)
    return NLLReport(_mean(-log_p), entropy, kl, float(np.mean(error)), steps, num_points)


# --- the density on a grid --------------------------------------------------------------------------


@dataclass(frozen=True)
class DensityGrid:
    """log p on a grid over the data: rows ys, columns xs (the model's units)."""

    xs: np.ndarray  # (nx,)
    ys: np.ndarray  # (ny,)
    log_p_model: np.ndarray  # (ny, nx)
    log_p_true: np.ndarray | None  # (ny, nx), where the data's density is known
    solver_error: float  # mean estimated error of log p_model over the grid
    steps: int

    def rows(self) -> list[tuple[float, float, float, float | None]]:
        """(x, y, log_p_model, log_p_true) row by row, for density.csv."""
        out = []
        for i, y in enumerate(self.ys.tolist()):
            for j, x in enumerate(self.xs.tolist()):
                true = None if self.log_p_true is None else float(self.log_p_true[i, j])
                out.append((x, y, float(self.log_p_model[i, j]), true))
        return out


def grid_over(points: np.ndarray, num: int = 60, pad: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """``num`` x ``num`` grid over the points' range (the 0.5 % to 99.5 % quantiles), widened by
    ``pad`` of its span on each side."""
    low, high = np.quantile(points, 0.005, axis=0), np.quantile(points, 0.995, axis=0)
    span = np.maximum(high - low, 1e-3)
    low, high = low - pad * span, high + pad * span
    return np.linspace(low[0], high[0], num), np.linspace(low[1], high[1], num)


def density_grid(model: PathModel, path: ObjectivePath, dataset: Dataset, *, num: int = 60, steps: int = 32,
                 seed: int = 4322,
                 report: Callable[[int, int, str], None] = lambda done, total, text: None) -> DensityGrid:
    """log p_model on a ``num`` x ``num`` grid over 5,000 draws of the data (generator seeded with
    ``seed``), with the solver's error against 2 x ``steps``; log p_true where it is known."""
    xs, ys = grid_over(dataset.sample(5000, torch.Generator().manual_seed(seed)).numpy(), num)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    report(0, 1, f"log p on the {num} x {num} grid with {steps} and {2 * steps} steps")
    log_p, error = extrapolated_log_likelihood(model, path, grid, steps)
    report(1, 1, "done")
    truth = true_log_density(dataset, grid)
    return DensityGrid(xs, ys, log_p.reshape(num, num), None if truth is None else truth.reshape(num, num),
                       float(np.mean(error)), steps)


# --- the trajectory probe -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbePaths:
    """From one start point: its ODE path and a few stochastic ones, over the ODE variable's nodes
    from the data (index 0) to the prior (last), and log p_u(x_u) along the ODE path."""

    u: np.ndarray  # (K,)
    time: np.ndarray  # (K,) the path's time at each node, 0 (the data) to 1 (noise; DDPM: level / T), for an axis
    ode: np.ndarray  # (K, 2)
    log_p: np.ndarray  # (K,) log p_u(x_u) under the model along the ODE path
    stochastic: np.ndarray  # (P, K, 2)
    from_prior: bool


def _ancestral(path: ObjectivePath, model: PathModel, x: torch.Tensor, u: float, u_prev: float,
               z: torch.Tensor) -> torch.Tensor:
    """One stochastic step towards the data on any path (DDIM with eta = 1, Song et al. 2021, in
    terms of a and s): x' = a' x0_hat + sqrt(s'^2 - var) eps_hat + sqrt(var) z, with var the
    variance of q(x_{u'} | x_u, x_0): (s^2 - (a / a')^2 s'^2) s'^2 / s^2."""
    a, s, time = path.ode_point(u)
    a2, s2, _ = path.ode_point(u_prev)
    with torch.no_grad():
        out = model(x, a, s, time)
        x0, eps = path.x0_hat(x, out, a, s), path.eps_hat(x, out, a, s)
    var = max((s * s - (a / a2) ** 2 * s2 * s2) * s2 * s2 / (s * s), 0.0) if s > 0 else 0.0
    return a2 * x0 + math.sqrt(max(s2 * s2 - var, 0.0)) * eps + math.sqrt(var) * z


def probe(model: PathModel, path: ObjectivePath, start, *, from_prior: bool, steps: int = 60, paths: int = 5,
          seed: int = 0) -> ProbePaths:
    """The ODE path through ``start`` (2,) and ``paths`` stochastic ones from it (generator seeded
    with ``seed``), on ``path.ode_nodes(steps)``. ``from_prior``: start is x at the prior's end and
    the paths run to the data (the ODE by Heun, the others by ``_ancestral`` steps); else start is a
    data point and they run to the prior (the ODE, and the forward noising q(x_u' | x_u))."""
    nodes = path.ode_nodes(steps)
    start = torch.as_tensor(np.asarray(start, dtype=np.float64)).reshape(1, 2)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(len(nodes), paths, 2, generator=g, dtype=torch.float64)
    if from_prior:  # back from u_N: Heun on the reversed nodes, then read log p off a forward solve
        y = start / path.ode_scale(float(nodes[-1]))
        ys = [y]
        for u, u_prev in zip(nodes[:0:-1].tolist(), nodes[-2::-1].tolist(), strict=True):
            h = u_prev - u
            f, _ = _field(model, path, y, u, divergence=False)
            f2, _ = _field(model, path, y + h * f, u_prev, divergence=False)
            y = y + h / 2 * (f + f2)
            ys.append(y)
        x0 = ys[-1] * path.ode_scale(0.0)
        x = start.expand(paths, 2).clone()
        walked = [x]
        for i, (u, u_prev) in enumerate(zip(nodes[:0:-1].tolist(), nodes[-2::-1].tolist(), strict=True)):
            x = _ancestral(path, model, x, u, u_prev, z[i])
            walked.append(x)
        stochastic = torch.stack(walked[::-1], 1).numpy()  # (P, K, 2), data first
    else:
        x0 = start
        x = start.expand(paths, 2).clone()
        walked = [x]
        for i, (u, u_next) in enumerate(zip(nodes[:-1].tolist(), nodes[1:].tolist(), strict=True)):
            (a, s, _), (a2, s2, _) = path.ode_point(u), path.ode_point(u_next)
            ratio = a2 / a
            x = ratio * x + math.sqrt(max(s2 * s2 - ratio * ratio * s * s, 0.0)) * z[i]
            walked.append(x)
        stochastic = torch.stack(walked, 1).numpy()
    solved = solve(model, path, x0, steps, keep=True)
    ode = solved.x[:, 0, :]
    if from_prior:  # the Heun path walked back, not the forward solve's (the two differ by the solver's error)
        ode = (torch.cat(ys[::-1]).numpy() * np.array([path.ode_scale(float(u)) for u in nodes])[:, None])
    time = np.array([path.ode_point(float(u))[2] for u in nodes])
    return ProbePaths(nodes, time, ode, solved.log_p[:, 0], stochastic, from_prior)
