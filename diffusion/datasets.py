"""2-D data: the reference Gaussian, classic toy shapes, and the user's own points.

Every draw goes through an explicit ``torch.Generator``. Where the density is known in closed form
(a Gaussian or a mixture of isotropic Gaussians) the dataset also knows the exact optimal noise
prediction eps*(x_t, t) = E[eps | x_t] on any path x_t = a x_0 + s eps, and the irreducible part of the loss.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import MAX_CLASSES, MAX_POINTS, DataConfig, PointSet
from .paths import ObjectivePath


class PointsError(ValueError):
    """A user's point file that cannot be used; the message says why and what is allowed."""


@dataclass(frozen=True)
class GaussianMixture:
    """sum_k w_k N(mu_k, s_k^2 I): sampling plus the exact denoiser of its noised marginals."""

    means: tuple[tuple[float, float], ...]
    stds: tuple[float, ...]
    weights: tuple[float, ...]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:  # (n, 2)
        return self.sample_labelled(n, generator)[0]

    def sample_labelled(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 2) points and (n,) int64 labels: each point's component. The same draws as ``sample``."""
        means = torch.tensor(self.means, dtype=torch.float32)
        stds = torch.tensor(self.stds, dtype=torch.float32)
        if len(self.means) == 1:  # same draws, in the same order, as the reference script
            return torch.randn(n, 2, generator=generator) * stds[0] + means[0], torch.zeros(n, dtype=torch.long)
        k = torch.multinomial(torch.tensor(self.weights), n, replacement=True, generator=generator)
        return torch.randn(n, 2, generator=generator) * stds[k, None] + means[k], k

    def component(self, k: int) -> GaussianMixture:
        """The mixture's component k alone (a class of the ring)."""
        return GaussianMixture((self.means[k],), (self.stds[k],), (1.0,))

    @property
    def mean(self) -> np.ndarray:
        return np.average(np.array(self.means), axis=0, weights=self.weights)

    @property
    def std(self) -> np.ndarray:
        """Per-axis standard deviation of the mixture."""
        means, w = np.array(self.means), np.array(self.weights)
        second = (w[:, None] * (means**2 + np.array(self.stds)[:, None] ** 2)).sum(0)
        return np.sqrt(second - self.mean**2)

    def _component_terms(self, x_t: torch.Tensor, t: torch.Tensor, schedule: ObjectivePath):
        """Per component k, at x_t = a x_0 + s eps (a, s: the schedule's signal and sigma at level
        t): the log-responsibility log p(k | x_t), E[eps | x_t, k] and E[x_0 | x_t, k], in float64.
        Shapes (B, K), (B, K, 2), (B, K, 2). With var_k = a^2 s_k^2 + s^2:
            E[eps | x_t, k] = s (x_t - a mu_k) / var_k,   E[x_0 | x_t, k] = mu_k + a s_k^2 (x_t - a mu_k) / var_k."""
        t = t.cpu()
        a = torch.tensor(schedule.float64["signal"])[t].to(x_t.device)[:, None]  # (B, 1)
        s = torch.tensor(schedule.float64["sigma"])[t].to(x_t.device)[:, None]
        return self._terms_on_path(x_t, a, s)

    def _terms_on_path(self, x_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor):
        x = x_t.double()
        a, s = a.double(), s.double()
        means = torch.tensor(self.means, dtype=torch.float64, device=x.device)  # (K, 2)
        s2_k = torch.tensor(self.stds, dtype=torch.float64, device=x.device) ** 2  # (K,)
        var = a**2 * s2_k + s**2  # (B, K)
        centred = x[:, None, :] - a[:, :, None] * means  # (B, K, 2)
        log_w = torch.log(torch.tensor(self.weights, dtype=torch.float64, device=x.device))
        # log N(x_t; a mu_k, var_k I) in 2-D, up to the shared constant
        log_r = log_w - (centred**2).sum(-1) / (2 * var) - torch.log(var)
        log_r = log_r - torch.logsumexp(log_r, dim=1, keepdim=True)
        eps_k = s[:, :, None] * centred / var[:, :, None]
        x0_k = means + (a * s2_k / var)[:, :, None] * centred
        return log_r, eps_k, x0_k

    def target_terms(self, x_t: torch.Tensor, t: torch.Tensor, schedule: ObjectivePath):
        """Per component k, the conditional mean and per-coordinate variance of the network's target
        (the path's ``target``: eps for DDPM, the velocity v = eps - x_0 for flow matching) given x_t:
        (log r (B, K), mean (B, K, 2), variance (B, K)). The target is linear in (x_0, eps), so its
        mean is the target of the means. Within a component x_0 is Gaussian given x_t with variance
        s_k^2 s^2 / var_k, so Var(target | x_t, k) = g s_k^2 / var_k with g the path's ``target_gain``
        (eps: a^2; v on flow matching's path: 1)."""
        log_r, eps_k, x0_k = self._component_terms(x_t, t, schedule)
        t = t.cpu()
        a = torch.tensor(schedule.float64["signal"])[t].to(x_t.device)[:, None]
        s = torch.tensor(schedule.float64["sigma"])[t].to(x_t.device)[:, None]
        s2_k = torch.tensor(self.stds, dtype=torch.float64, device=x_t.device) ** 2
        var = a**2 * s2_k + s**2
        return log_r, schedule.target(x0_k, eps_k), schedule.target_gain(a, s) * s2_k / var

    def optimal_eps(self, x_t: torch.Tensor, t: torch.Tensor, schedule: ObjectivePath) -> torch.Tensor:
        """eps*(x_t, t) = E[eps | x_t]: per component s (x_t - a mu_k) / (a^2 s_k^2 + s^2) (DDPM:
        a = sqrt(abar), s = sqrt(1 - abar)), weighted by the posterior over components. x_t (B, 2), t (B,)."""
        t = torch.as_tensor(t, dtype=torch.long).expand(len(x_t))
        log_r, eps_k, _ = self._component_terms(x_t, t, schedule)
        return (log_r.exp()[:, :, None] * eps_k).sum(1).to(x_t.dtype)

    def optimal_target(self, x_t: torch.Tensor, t: torch.Tensor, schedule: ObjectivePath) -> torch.Tensor:
        """The ideal prediction E[target | x_t]: eps* for DDPM, v* = E[eps - x_0 | x_t] for flow matching."""
        t = torch.as_tensor(t, dtype=torch.long).expand(len(x_t))
        log_r, mean_k, _ = self.target_terms(x_t, t, schedule)
        return (log_r.exp()[:, :, None] * mean_k).sum(1).to(x_t.dtype)

    def irreducible_loss(
        self, schedule: ObjectivePath, *, n: int = 4096, generator: torch.Generator | None = None
    ) -> np.ndarray:
        """Per-dimension E||target - target*||^2 / 2 at each level t, shape (T,): the floor of the
        loss (target: eps for DDPM, v for flow matching).

        One Gaussian, exactly: g s0^2 / (a^2 s0^2 + s^2) with g the path's ``target_gain`` (eps: a^2, so
        DDPM's abar s0^2 / (abar s0^2 + 1 - abar); v: 1). A mixture has no closed form: Monte Carlo with
        ``n`` draws per t (the same x_0 and eps at every t)."""
        a, s = schedule.float64["signal"], schedule.float64["sigma"]
        if len(self.means) == 1:
            s2 = self.stds[0] ** 2
            return schedule.target_gain(a, s) * s2 / (a**2 * s2 + s**2)
        generator = generator or torch.Generator().manual_seed(0)
        x0 = self.sample(n, generator).double()
        eps = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        target = schedule.target(x0, eps)
        out = np.empty(len(a))
        for t in range(len(a)):
            x_t = a[t] * x0 + s[t] * eps
            best = self.optimal_target(x_t, torch.full((n,), t, dtype=torch.long), schedule)
            out[t] = float(((target - best) ** 2).mean())
        return out

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = log sum_k w_k N(x; mu_k, s_k^2 I), x (N, 2) -> (N,) float64."""
        x = torch.as_tensor(x).double()
        means = torch.tensor(self.means, dtype=torch.float64)
        var = torch.tensor(self.stds, dtype=torch.float64) ** 2  # (K,)
        log_w = torch.log(torch.tensor(self.weights, dtype=torch.float64))
        squared = ((x[:, None, :] - means) ** 2).sum(-1)  # (N, K)
        return torch.logsumexp(log_w - squared / (2 * var) - torch.log(2 * math.pi * var), dim=1)

    @property
    def entropy(self) -> float | None:
        """H = -E log p(X) in nats where it has a closed form: log(2 pi e s^2) for one isotropic
        2-D Gaussian; None for a mixture (``likelihood.data_entropy`` estimates it)."""
        return math.log(2 * math.pi * math.e * self.stds[0] ** 2) if len(self.means) == 1 else None

    def mean_pairwise_distance(self) -> float | None:
        """E|X - X'| in closed form where it has one: s * sqrt(pi) for one 2-D Gaussian."""
        return self.stds[0] * math.sqrt(math.pi) if len(self.means) == 1 else None


def _ring() -> GaussianMixture:
    angles = [2 * math.pi * k / 8 for k in range(8)]
    means = tuple((2.0 * math.cos(a), 2.0 * math.sin(a)) for a in angles)
    return GaussianMixture(means, (0.15,) * 8, (1 / 8,) * 8)


@dataclass(frozen=True)
class ToyShape:
    """A shape known only by how to draw it."""

    name: str

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:  # (n, 2)
        return self.sample_labelled(n, generator)[0]

    def sample_labelled(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 2) points and (n,) int64 labels, the classes of ``config.DATASET_CLASSES`` (all 0 for
        a shape without classes). The same draws as ``sample``: the label is read off them."""
        g = generator
        u = torch.rand(n, generator=g)
        jitter = torch.randn(n, 2, generator=g)
        if self.name == "moons":  # two interleaved half circles, centred
            upper = u < 0.5
            angle = math.pi * torch.where(upper, u * 2, u * 2 - 1)
            x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
            y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
            points = torch.stack([x - 0.5, y - 0.25], 1) * 1.6
            return points + 0.08 * jitter, (~upper).long()
        if self.name == "swiss_roll":
            turn = 1.5 * math.pi * (1 + 2 * u)
            points = torch.stack([turn * torch.cos(turn), turn * torch.sin(turn)], 1) / 5.0
            return points + 0.06 * jitter, torch.zeros(n, dtype=torch.long)
        if self.name == "circles":  # radii 2 and 1
            outer = u < 0.5
            radius = torch.where(outer, 2.0, 1.0)
            angle = 2 * math.pi * torch.rand(n, generator=g)
            return radius[:, None] * torch.stack([angle.cos(), angle.sin()], 1) + 0.06 * jitter, (~outer).long()
        if self.name == "checkerboard":  # 8 of the 16 unit squares of [-2, 2]^2
            x = 4 * u - 2
            pick = torch.randint(0, 2, (n,), generator=g)
            y = torch.rand(n, generator=g) + (pick * 2 - 2) + (torch.floor(x) % 2)  # rows from -2 or from 0
            column = (torch.floor(x) + 2).long().clamp(0, 3)  # 0..3, left to right
            return torch.stack([x, y], 1), 2 * column + pick  # per column, the lower square first
        if self.name == "spiral":  # two interleaved arms
            second = torch.rand(n, generator=g) >= 0.5
            arm = torch.where(second, math.pi, 0.0)
            r = 0.3 + 2.2 * u
            angle = 3 * math.pi * u + arm
            return torch.stack([r * angle.cos(), r * angle.sin()], 1) + 0.05 * jitter, second.long()
        raise ValueError(f"unknown toy shape {self.name!r}")


@dataclass(frozen=True)
class FixedPoints:
    """The user's own point set: training makes passes (epochs) over it."""

    points: torch.Tensor  # (N, 2)
    labels: torch.Tensor | None = None  # (N,) int64, from the file's label column

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:  # (n, 2), with replacement
        return self.points[torch.randint(0, len(self.points), (n,), generator=generator)]

    def sample_labelled(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 2) points with replacement and their (n,) labels (all 0 without a label column)."""
        index = torch.randint(0, len(self.points), (n,), generator=generator)
        labels = self.labels[index] if self.labels is not None else torch.zeros(n, dtype=torch.long)
        return self.points[index], labels


Dataset = GaussianMixture | ToyShape | FixedPoints

REFERENCE_GAUSSIAN = GaussianMixture(((2.0, 2.0),), (0.5,), (1.0,))



def make_dataset(config: DataConfig) -> Dataset:
    if config.name == "gaussian":
        return REFERENCE_GAUSSIAN
    if config.name == "ring":
        return _ring()
    if config.name == "points":
        labels = config.points.labels
        return FixedPoints(torch.from_numpy(config.points.array.copy()),
                           None if labels is None else torch.from_numpy(labels.copy()))
    return ToyShape(config.name)


def _read_points(data: bytes | str) -> tuple[np.ndarray, list[str] | None]:
    """Read a CSV with a header row naming columns x and y, and optionally label (others are
    ignored): (N, 2) float64 in the file's units, and each row's label as written (None without
    the column). Standardised (``points_in_user_units``) the points have mean 0 and overall
    standard deviation 1, the scale the noise schedules are made for.
    Raises PointsError with a message that says what is wrong and what is allowed."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise PointsError("the file is not UTF-8 text; save it as a UTF-8 CSV with columns x,y") from None
    if "\x00" in data:
        raise PointsError("the file is binary, not CSV text; expected a CSV with columns x,y")
    reader = csv.reader(data.splitlines())  # any line ending: \n, \r\n, or \r (old Mac "CSV")
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise PointsError(f"line 1 is not CSV: {error}") from None
    if header is None:
        raise PointsError("the file is empty; expected a header row x,y and at least 2 points")
    columns = [name.strip().lower() for name in header]
    if "x" not in columns or "y" not in columns:
        raise PointsError(f"the header must name columns x and y; found {', '.join(header) or 'nothing'}")
    ix, iy = columns.index("x"), columns.index("y")
    il = columns.index("label") if "label" in columns else None
    rows, line_numbers, labels = [], [], []
    try:
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(rows) >= MAX_POINTS:
                raise PointsError(f"the file has more than {MAX_POINTS:,} points, the limit; subsample it")
            try:
                rows.append((float(row[ix]), float(row[iy])))
            except (ValueError, IndexError):
                shown = ",".join(row)[:40]
                raise PointsError(f"line {line_no} is not two numbers x,y: {shown!r}") from None
            if il is not None:
                label = row[il].strip() if il < len(row) else ""
                if not label:
                    raise PointsError(f"line {line_no} has no label; with a label column every point needs one")
                labels.append(label)
            line_numbers.append(line_no)
    except csv.Error as error:
        raise PointsError(f"line {reader.line_num} is not CSV: {error}") from None
    points = np.array(rows, dtype=np.float64).reshape(-1, 2)
    if len(points) < 2:
        raise PointsError(f"the file has {len(points)} point(s); at least 2 are needed") from None
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise PointsError(f"line {line_numbers[int(np.argmax(bad))]} holds NaN or inf; every x,y must be a finite number")
    if np.abs(points).max() > 1e15:
        raise PointsError("values beyond 1e15 in size cannot be used; rescale the data")
    return points, (labels if il is not None else None)  # (N, 2) float64, as written


def class_names(labels: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """(the classes, each row's index into them) of a label column: numbers in numeric order when
    every label is a number, else in text order. PointsError beyond ``MAX_CLASSES``."""
    names = sorted(set(labels))
    try:
        names.sort(key=float)
    except ValueError:
        pass
    if len(names) > MAX_CLASSES:
        raise PointsError(f"the label column names {len(names)} classes; at most {MAX_CLASSES} are allowed")
    index = {name: k for k, name in enumerate(names)}
    return tuple(names), np.array([index[label] for label in labels], dtype=np.int64)


def load_points(data: bytes | str, *, standardize: bool = True) -> DataConfig:
    """The data config for a user's CSV file: the model trains on the points standardised (mean 0,
    overall std 1); the point set keeps their mean and std, so outputs go back to the file's units.
    A label column gives the points classes (``class_names``)."""
    raw, labels = _read_points(data)
    classes, index = class_names(labels) if labels is not None else ((), None)
    if not standardize:
        return DataConfig("points", PointSet.from_array(raw, labels=index, classes=classes))
    return DataConfig("points", points_in_user_units(raw, index, classes))


def points_in_user_units(points: np.ndarray, labels: np.ndarray | None = None, classes: tuple[str, ...] = ()) -> PointSet:
    """A point set from points in the user's own units: standardised, with the way back kept."""
    points = np.asarray(points, dtype=np.float64)
    offset = points.mean(axis=0)
    centred = points - offset
    scale = float(centred.std())
    if scale < 1e-12:
        raise PointsError("all points are identical; the data needs some spread")
    return PointSet.from_array(centred / scale, (float(offset[0]), float(offset[1])), scale, labels, classes)
