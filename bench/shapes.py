"""The presets on drawn and uploaded shapes the tuning never saw (issue 23: at most 1.5 x the floor):
a thin stroke, two letters, five uneven blobs and a circle with a bar through it, 600 points each,
standardised as the page standardises a drawing or a file. Each preset at its own defaults (on a
point set an epoch is one pass over it, 3 steps of 256 here, so improved's 4000 epochs are 12,000
steps), seeds 0 - 2, scored like ``bench.presets`` (``bench.quality``) against the point set
itself, with a perfect sampler's score (draws from the set) first.

    python -m bench.shapes [--jobs 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from bench.quality import fresh_score, score
from diffusion import PRESETS
from diffusion.config import DataConfig
from diffusion.datasets import points_in_user_units

SIZE = 600


def _along(rng, segments: list[tuple[tuple[float, float], tuple[float, float]]], n: int, width: float) -> np.ndarray:
    """n points on straight strokes (each point on a stroke chosen by its length), jittered by width."""
    a, b = np.array([s[0] for s in segments], float), np.array([s[1] for s in segments], float)
    lengths = np.linalg.norm(b - a, axis=1)
    which = rng.choice(len(segments), size=n, p=lengths / lengths.sum())
    u = rng.random(n)[:, None]
    return a[which] + u * (b[which] - a[which]) + rng.normal(0, width, (n, 2))


def shapes() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2026)
    x = rng.uniform(-3, 3, SIZE)
    stroke = np.stack([x, 0.8 * np.sin(1.5 * x)], 1) + rng.normal(0, 0.02, (SIZE, 2))
    letters = _along(rng, [((-3, -1), (-2, 1)), ((-2, 1), (-1, -1)), ((-2.5, 0), (-1.5, 0)),  # A
                           ((0.5, 1), (2.5, 1)), ((1.5, 1), (1.5, -1))], SIZE, 0.03)  # T
    centres = np.array([[-2, -1], [-1, 1.5], [0.5, 0], [2, 1], [1.5, -1.5]])
    which = rng.choice(5, size=SIZE, p=[0.35, 0.25, 0.2, 0.12, 0.08])
    blobs = centres[which] + rng.normal(0, 0.12, (SIZE, 2))
    angle = rng.uniform(0, 2 * np.pi, SIZE)
    on_bar = rng.random(SIZE) < 0.3
    ring = np.stack([np.cos(angle), np.sin(angle)], 1)
    bar = np.stack([rng.uniform(-1, 1, SIZE), np.zeros(SIZE)], 1)
    circle_bar = np.where(on_bar[:, None], bar, ring) + rng.normal(0, 0.02, (SIZE, 2))
    return {"thin stroke": stroke, "letters A T": letters, "five uneven blobs": blobs, "circle with a bar": circle_bar}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shapes")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    print("| shape | preset | train s | ED / floor, mean (per seed) |")
    print("|---|---|---|---|")
    with ProcessPoolExecutor(args.jobs) as pool:
        for name, points in shapes().items():
            data = DataConfig("points", points_in_user_units(points))
            for preset in ("fresh data", "improved", "flow"):
                jobs = [pool.submit(fresh_score, data, seed) if preset == "fresh data" else
                        pool.submit(score, PRESETS[preset](), data, seed) for seed in range(args.seeds)]
                results = [job.result() for job in jobs]
                per_seed = [statistics.mean(r.ratios) for r in results]
                seconds = "-" if preset == "fresh data" else f"{statistics.median(r.seconds for r in results):.2f}"
                print(f"| {name} | {preset} | {seconds} | {statistics.mean(per_seed):.2f} "
                      f"({', '.join(f'{x:.2f}' for x in per_seed)}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
