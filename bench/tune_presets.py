"""How the `improved` and `flow` presets' defaults were chosen (issue 23: good samples on every
built-in dataset within 3 s of training): candidates, each trained on every built-in dataset with
the *tuning* seeds 10 - 12 (the presets' own table, ``python -m bench.presets``, scores on the
held-out seeds 0 - 2), and scored by the energy distance of its own sampler's 1000 samples over the
noise floor. Printed per candidate: the mean ratio per dataset, the worst, and the median training
seconds (one torch thread; ``--jobs 2`` runs two trainings at once, which slows each a little).
The first row, "fresh data", scores 1000 fresh draws of the data itself with the same seeds: what a
perfect sampler gets, so the spread of the metric that no tuning can go below.

    python -m bench.tune_presets [--jobs 1] [--seeds 10 11 12] [NAME ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor

import torch

from diffusion import flow_matching, improved, reference
from diffusion.datasets import make_dataset
from diffusion.metrics import evaluate
from diffusion.objectives import path_of
from diffusion.samplers import sample_model, training_salt
from diffusion.training import Trainer

DATASETS = ("gaussian", "ring", "moons", "swiss_roll", "circles", "checkerboard", "spiral")
FOURIER = {"position_embedding": "fourier", "position_dim": 16}
OLD_IMPROVED = reference().replace(denoiser={"hidden": 128, "time_embedding": "sinusoidal"},
                                   train={"lr": 3e-3, "lr_schedule": "cosine", "ema_decay": 0.99})
OLD_FLOW = OLD_IMPROVED.replace(schedule={"objective": "flow"}, denoiser={"hidden": 64, "embedding_dim": 32},
                                train={"coupling": "ot"}, sampler={"kind": "heun", "sample_steps": 10})
CANDIDATES = {
    "improved before (1000 epochs)": OLD_IMPROVED,
    "improved before, 3000 epochs": OLD_IMPROVED.replace(train={"epochs": 3000}),
    "+ Fourier features of x (16), 3000": OLD_IMPROVED.replace(denoiser=FOURIER, train={"epochs": 3000}),
    "+ Fourier 16, 3000, lr 5e-3": OLD_IMPROVED.replace(denoiser=FOURIER, train={"epochs": 3000, "lr": 5e-3}),
    "+ Fourier 32, 3000": OLD_IMPROVED.replace(denoiser={**FOURIER, "position_dim": 32}, train={"epochs": 3000}),
    "+ Fourier 16, 4000": OLD_IMPROVED.replace(denoiser=FOURIER, train={"epochs": 4000}),
    "improved (the preset)": improved(),
    "flow before (1000 epochs)": OLD_FLOW,
    "flow + Fourier 16, 128 wide, OT, 1000": OLD_FLOW.replace(denoiser={**FOURIER, "hidden": 128}),
    "flow + Fourier 16, 128 wide, independent, 3000": OLD_FLOW.replace(
        denoiser={**FOURIER, "hidden": 128}, train={"coupling": "independent", "epochs": 3000}),
    "flow + Fourier 16, OT, 1500": OLD_FLOW.replace(denoiser=FOURIER, train={"epochs": 1500}),
    "flow + Fourier 16, 128 wide, OT, 1000, Heun 10 -> Euler 20": OLD_FLOW.replace(
        denoiser={**FOURIER, "hidden": 128}, sampler={"kind": "euler", "sample_steps": 20}),
    "flow (the preset)": flow_matching(),
}
FRESH_DATA = "fresh data (a perfect sampler)"  # not a config: the metric's own spread, the floor of any tuning


def score(config, dataset: str, seed: int) -> tuple[float, float]:
    """(training seconds, energy distance over floor) of one run."""
    torch.set_num_threads(1)
    run = config.replace(data={"name": dataset}, train={"seed": seed}, sampler={"seed": seed})
    trainer = Trainer(run)
    for _ in trainer.run():
        pass
    trajectory = sample_model(trainer.sampling_model(), path_of(run.schedule), run.sampler,
                              run_salt=training_salt(run.training))
    return trainer.elapsed, evaluate(trajectory.samples, make_dataset(run.data)).energy_distance.ratio


def fresh_score(dataset: str, seed: int) -> tuple[float, float]:
    """(0, energy distance over floor) of 1000 fresh draws of the data itself: what an exact sampler
    scores with this seed, the spread no tuning can remove."""
    dataset_ = make_dataset(reference().replace(data={"name": dataset}).data)
    points = dataset_.sample(1000, torch.Generator().manual_seed(5000 + seed)).numpy()
    return 0.0, evaluate(points, dataset_).energy_distance.ratio


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tune_presets")
    parser.add_argument("names", nargs="*", help="candidates to score (default: all)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12])
    args = parser.parse_args(argv)
    names = args.names or [FRESH_DATA, *CANDIDATES]
    unknown = [n for n in names if n not in CANDIDATES and n != FRESH_DATA]
    if unknown:
        parser.error(f"unknown candidate(s) {unknown}; choose from {list(CANDIDATES)}")
    print(f"| candidate | {' | '.join(DATASETS)} | worst | train s (median) |")
    print(f"|---|{'---|' * len(DATASETS)}---|---|")
    with ProcessPoolExecutor(args.jobs) as pool:
        for name in names:
            jobs = {(d, s): pool.submit(fresh_score, d, s) if name == FRESH_DATA else
                    pool.submit(score, CANDIDATES[name], d, s) for d in DATASETS for s in args.seeds}
            results = {key: job.result() for key, job in jobs.items()}
            means = [statistics.mean(results[(d, s)][1] for s in args.seeds) for d in DATASETS]
            seconds = statistics.median(t for t, _ in results.values())
            print(f"| {name} | {' | '.join(f'{m:.2f}' for m in means)} | {max(means):.2f} | {seconds:.2f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
