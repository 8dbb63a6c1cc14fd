"""How close generated points are to the data, each statistic next to its noise floor.

A statistic S(X, Y) between the generated set X (n points) and a fresh true set Y (m points) is
never 0 even for a perfect sampler; its floor is the value of the same statistic between two
independent true sets of the same sizes. We report both and their ratio (1.0 = as good as data).

Energy distance (V-statistic, diagonals included, Euclidean):
    E(X, Y) = 2 mean|x - y| - mean|x - x'| - mean|y - y'|
Its floor is exactly (1/n + 1/m) E|X - X'|, with E|X - X'| = s sqrt(pi) for N(mu, s^2 I) in 2-D,
or estimated on a large true sample (small-sample estimates of it move the floor by 25% or more).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .datasets import Dataset, GaussianMixture

Statistic = Callable[[torch.Tensor, torch.Tensor], float]


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = torch.as_tensor(x).double(), torch.as_tensor(y).double()
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return float(2 * xy - xx - yy)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, num_projections: int = 128, seed: int = 0) -> float:
    """Sliced Wasserstein-2: sqrt of the mean over random unit directions of W2^2 between the 1-D
    projections, each computed by matching quantiles (at the sizes' common quantile levels)."""
    x, y = torch.as_tensor(x).double(), torch.as_tensor(y).double()
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(x.shape[1], num_projections, generator=g, dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ directions, dim=0)  # (n, P)
    py, _ = torch.sort(y @ directions, dim=0)  # (m, P)
    if len(px) != len(py):
        levels = torch.linspace(0, 1, max(len(px), len(py)), dtype=torch.float64)
        px, py = torch.quantile(px, levels, dim=0), torch.quantile(py, levels, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def rbf_mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float = 0.5) -> float:
    """Squared maximum mean discrepancy (V-statistic) with k(a, b) = exp(-|a - b|^2 / (2 h^2))."""
    x, y = torch.as_tensor(x).double(), torch.as_tensor(y).double()

    def k(a, b):
        return torch.exp(-torch.cdist(a, b) ** 2 / (2 * bandwidth**2)).mean()

    return float(k(x, x) + k(y, y) - 2 * k(x, y))


def mean_error(x: torch.Tensor, y: torch.Tensor) -> float:
    """|mean(X) - mean(Y)|, Euclidean."""
    return float((torch.as_tensor(x).double().mean(0) - torch.as_tensor(y).double().mean(0)).norm())


def std_error(x: torch.Tensor, y: torch.Tensor) -> float:
    """|std(X) - std(Y)| over the two axes, Euclidean."""
    return float((torch.as_tensor(x).double().std(0) - torch.as_tensor(y).double().std(0)).norm())


@dataclass(frozen=True)
class Comparison:
    value: float  # mean over fresh true sets
    floor: float  # expected value between two fresh true sets of the same sizes

    @property
    def ratio(self) -> float:
        return self.value / self.floor if self.floor > 0 else float("inf")


@dataclass(frozen=True)
class Evaluation:
    energy_distance: Comparison
    sliced_wasserstein: Comparison
    mmd: Comparison
    mean_error: Comparison
    std_error: Comparison
    mean: tuple[float, float]  # of the generated points
    std: tuple[float, float]
    data_mean: tuple[float, float]
    data_std: tuple[float, float]

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Comparison):
                out[f.name] = value.value
                out[f.name + "_floor"] = value.floor
                out[f.name + "_ratio"] = value.ratio
            else:
                out[f.name] = list(value)
        return out


STATISTICS: dict[str, Statistic] = {
    "energy_distance": energy_distance,
    "sliced_wasserstein": sliced_wasserstein,
    "mmd": rbf_mmd,
    "mean_error": mean_error,
    "std_error": std_error,
}


def mean_pairwise_distance(dataset: Dataset, generator: torch.Generator, n: int = 200_000) -> float:
    """E|X - X'|: closed form where known, else the mean over ``n`` independent pairs."""
    if isinstance(dataset, GaussianMixture) and dataset.mean_pairwise_distance() is not None:
        return dataset.mean_pairwise_distance()
    a, b = dataset.sample(n, generator).double(), dataset.sample(n, generator).double()
    return float((a - b).norm(dim=1).mean())


def evaluate(
    samples: np.ndarray | torch.Tensor,
    dataset: Dataset,
    *,
    seed: int = 1234,
    num_reference_sets: int = 3,
    reference_size: int | None = None,
) -> Evaluation:
    """Compare ``samples`` (n, 2) with ``num_reference_sets`` fresh true sets of ``reference_size``
    (default n) points, and each statistic with its floor (energy distance: exact formula; the
    others: the mean over as many pairs of fresh true sets)."""
    x = torch.as_tensor(np.asarray(samples), dtype=torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("samples contain NaN or inf; they cannot be compared with the data")
    n = len(x)
    m = reference_size or n
    g = torch.Generator().manual_seed(seed)
    refs = [dataset.sample(m, g).double() for _ in range(num_reference_sets)]
    pairs = [(dataset.sample(n, g).double(), dataset.sample(m, g).double()) for _ in range(num_reference_sets)]
    results = {}
    for name, stat in STATISTICS.items():
        value = float(np.mean([stat(x, y) for y in refs]))
        if name == "energy_distance":
            floor = (1 / n + 1 / m) * mean_pairwise_distance(dataset, g)
        else:
            floor = float(np.mean([stat(a, b) for a, b in pairs]))
        results[name] = Comparison(value, floor)
    big = dataset.sample(100_000, g).double()
    return Evaluation(
        **results,
        mean=tuple(x.mean(0).tolist()),
        std=tuple(x.std(0).tolist()),
        data_mean=tuple(big.mean(0).tolist()),
        data_std=tuple(big.std(0).tolist()),
    )


# --- per class: what guidance does (issue 25) -----------------------------------------------------


@dataclass(frozen=True)
class OneClass:
    """The points of one class of a labelled dataset (``sample_labelled``), drawn by keeping that
    class's share of larger labelled draws."""

    dataset: Dataset
    label: int

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:  # (n, 2)
        kept: list[torch.Tensor] = []
        found, draws = 0, 0
        while found < n:
            x, labels = self.dataset.sample_labelled(max(2 * (n - found), 64), generator)
            draws += len(x)
            mine = x[labels == self.label]
            kept.append(mine)
            found += len(mine)
            if found == 0 and draws >= 100_000:
                raise ValueError(f"class {self.label} never occurs in the data (none in {draws:,} draws)")
        return torch.cat(kept)[:n]


CLASS_REFERENCE_SIZE = 2000  # true points per class the samples are compared with
CLASS_PAIRS = 20_000  # pairs of true points for a class's E|X - X'|


@dataclass(frozen=True)
class ClassScore:
    """How one class's samples compare with that class's data.

    energy_distance: of the n samples given that class to ``CLASS_REFERENCE_SIZE`` fresh points of
                     it, over its floor (1/n + 1/m) E|X - X'| (1.0: as good as data);
    spread:          the samples' root-mean-square distance from their own mean over the class data's
                     (1.0: as spread out as the class; below 1: crowded towards a mode, the price of
                     strong guidance)."""

    label: int
    name: str
    count: int
    energy_distance: Comparison
    spread: float

    def to_dict(self) -> dict:
        return {"class": self.label, "name": self.name, "count": self.count,
                "energy_distance": self.energy_distance.value, "energy_distance_floor": self.energy_distance.floor,
                "energy_distance_ratio": self.energy_distance.ratio, "spread_ratio": self.spread}


def rms_spread(x: torch.Tensor) -> float:
    """sqrt(mean |x_i - mean(x)|^2): the points' spread about their mean."""
    x = torch.as_tensor(x).double()
    return float(((x - x.mean(0)) ** 2).sum(1).mean().sqrt())


def class_scores(
    samples: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    dataset: Dataset,
    names: tuple[str, ...],
    *,
    seed: int = 1234,
) -> list[ClassScore]:
    """One ``ClassScore`` for each class with at least 2 samples, in label order. The true sets are
    drawn from a generator seeded with ``seed`` + the label, so a class is always compared with the
    same data."""
    x = torch.as_tensor(np.asarray(samples), dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(labels))
    out = []
    for label, name in enumerate(names):
        mine = x[labels == label]
        if len(mine) < 2:
            continue
        truth = OneClass(dataset, label)
        g = torch.Generator().manual_seed(seed + label)
        reference = truth.sample(CLASS_REFERENCE_SIZE, g).double()
        a, b = truth.sample(CLASS_PAIRS, g).double(), truth.sample(CLASS_PAIRS, g).double()
        pairwise = float((a - b).norm(dim=1).mean())
        floor = (1 / len(mine) + 1 / len(reference)) * pairwise
        spread = rms_spread(mine) / rms_spread(torch.cat([a, b]))
        out.append(ClassScore(label, name, len(mine), Comparison(energy_distance(mine, reference), floor), spread))
    return out
