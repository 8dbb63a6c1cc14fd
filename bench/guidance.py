"""What classifier-free guidance does, measured (issue 25): the `improved` preset trained
conditionally (label dropout 0.1) on the two moons and on the ring of 8 Gaussians (a mixture), then
sampled for every class at each guidance scale w (1000 samples, point i for class i mod K). Per w:
each class's energy distance to its own data over the floor and its spread against the class's
(``diffusion.metrics.class_scores``), averaged over the classes and over seeds 0 - 2, with the
worst class's distance beside. For the ring also the ideal guided field (u* + w (c* - u*), exact for
a mixture) sampled the same way: what guidance does with a perfect model, so the part of the
learned model's numbers that is guidance itself and not the network's error.

    python -m bench.guidance [--seeds 3] [--jobs 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor

import torch

from diffusion import improved
from diffusion.config import DataConfig
from diffusion.datasets import make_dataset
from diffusion.guidance import GUIDANCE_SCALES, guidance_sweep
from diffusion.ideal import guided_ideal
from diffusion.metrics import class_scores
from diffusion.objectives import path_of
from diffusion.samplers import class_labels, sample
from diffusion.training import Trainer

DATASETS = ("moons", "ring")


def learned(dataset: str, seed: int) -> tuple[float, dict]:
    """(training seconds, {w: rows}) for one conditional run."""
    torch.set_num_threads(1)
    config = improved().replace(data={"name": dataset}, train={"conditional": True, "seed": seed},
                                sampler={"seed": seed, "num_frames": 2})
    trainer = Trainer(config).train()
    sweep = guidance_sweep(trainer.sampling_model(), trainer.schedule, config.sampler, trainer.dataset,
                           config.data.classes)
    return trainer.elapsed, {w: [r for r in sweep.rows if r["guidance"] == w] for w in sweep.scales}


def ideal(dataset: str, seed: int) -> dict:
    """{w: rows} for the ideal guided field of ``dataset``, every class at once per w."""
    torch.set_num_threads(1)
    config = improved().replace(data={"name": dataset}, sampler={"seed": seed, "num_frames": 2})
    data, path = DataConfig(dataset), path_of(config.schedule)
    names = data.classes
    labels = class_labels(config.sampler, len(names), config.sampler.num_samples)
    out = {}
    for w in GUIDANCE_SCALES:
        fields = [guided_ideal(data, path, k, w) for k in range(len(names))]

        def model(x, t, fields=fields):  # each point follows its own class's guided field
            out = torch.empty_like(x)
            for k, field in enumerate(fields):
                mine = labels == k
                out[mine] = field(x[mine], t)
            return out

        samples = sample(model, path, config.sampler, torch.Generator().manual_seed(seed)).samples
        out[w] = [{"guidance": w, **s.to_dict()} for s in class_scores(samples, labels.numpy(), make_dataset(data), names)]
    return out


def summary(per_seed: list[dict]) -> dict:
    """{w: (mean distance ratio, worst class's, mean spread)} over classes and seeds."""
    out = {}
    for w in GUIDANCE_SCALES:
        rows = [r for runs in per_seed for r in runs[w]]
        by_class = {}
        for r in rows:
            by_class.setdefault(r["class"], []).append(r["energy_distance_ratio"])
        out[w] = (statistics.mean(r["energy_distance_ratio"] for r in rows),
                  max(statistics.mean(v) for v in by_class.values()),
                  statistics.mean(r["spread_ratio"] for r in rows))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.guidance")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    seeds = range(args.seeds)
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = {d: [pool.submit(learned, d, s) for s in seeds] for d in DATASETS}
        ideals = [pool.submit(ideal, "ring", s) for s in seeds]
        results = {d: [job.result() for job in jobs] for d, jobs in runs.items()}
        columns = {d: summary([r for _, r in results[d]]) for d in DATASETS}
        columns["ring, ideal field"] = summary([job.result() for job in ideals])
    seconds = [s for d in DATASETS for s, _ in results[d]]
    print(f"improved, conditional (label dropout 0.1), seeds 0 - {args.seeds - 1}; training "
          f"{min(seconds):.2f} - {max(seconds):.2f} s a run. Per cell: energy distance / floor, mean over classes "
          "(worst class) · spread / the class's\n")
    names = list(columns)
    print("| w | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for w in GUIDANCE_SCALES:
        cells = [f"{m:.2f} ({worst:.2f}) · {spread:.2f}" for m, worst, spread in (columns[n][w] for n in names)]
        print(f"| {w:g} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
