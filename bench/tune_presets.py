"""How the `improved` and `flow` presets' defaults were chosen (issue 23: good samples on every
built-in dataset within 3 s of training): candidates, each trained on every built-in dataset with
the *tuning* seeds 10 - 12 (the presets' own table, ``python -m bench.presets``, scores on the
held-out seeds 0 - 2), and scored by the energy distance of its own sampler's 1000 samples over the
noise floor. Printed per candidate: the mean ratio per dataset, the worst, the mean blur ratio per
dataset (``bench.quality``: 1 is as sharp as the data), and the median training
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

from bench.quality import DATASETS, DRAWS, fresh_score, score
from diffusion import flow_matching, improved, reference

FOURIER = {"position_embedding": "fourier", "position_dim": 16}
OLD_IMPROVED = reference().replace(denoiser={"hidden": 128, "time_embedding": "sinusoidal"},
                                   train={"lr": 3e-3, "lr_schedule": "cosine", "ema_decay": 0.99})
OLD_FLOW = OLD_IMPROVED.replace(schedule={"objective": "flow"}, denoiser={"hidden": 64, "embedding_dim": 32},
                                train={"coupling": "ot"}, sampler={"kind": "heun", "sample_steps": 10})
# the improved preset as it was first tuned (the 'improved, ...' variants below start from it)
FIRST_IMPROVED = improved().replace(denoiser={"hidden": 128}, train={"epochs": 2500, "lr": 3e-3, "time_power": 1.0})
# its second version (64 wide, 4000 steps at 5e-3, every noise level drawn equally)
SECOND_IMPROVED = improved().replace(train={"time_power": 1.0})
CANDIDATES = {
    "improved before (1000 epochs)": OLD_IMPROVED,
    "improved before, 3000 epochs": OLD_IMPROVED.replace(train={"epochs": 3000}),
    "+ Fourier features of x (16), 3000": OLD_IMPROVED.replace(denoiser=FOURIER, train={"epochs": 3000}),
    "+ Fourier 16, 3000, lr 5e-3": OLD_IMPROVED.replace(denoiser=FOURIER, train={"epochs": 3000, "lr": 5e-3}),
    "+ Fourier 32, 3000": OLD_IMPROVED.replace(denoiser={**FOURIER, "position_dim": 32}, train={"epochs": 3000}),
    "+ Fourier 16, 4000": OLD_IMPROVED.replace(denoiser=FOURIER, train={"epochs": 4000}),
    "+ Fourier 16, batch 256, 2500": OLD_IMPROVED.replace(denoiser=FOURIER, train={"epochs": 2500, "batch_size": 256}),
    "+ Fourier 8, batch 256, 2500": OLD_IMPROVED.replace(denoiser={**FOURIER, "position_dim": 8},
                                                         train={"epochs": 2500, "batch_size": 256}),
    "+ Fourier 16, batch 256, 2500, EMA 0.995": OLD_IMPROVED.replace(
        denoiser=FOURIER, train={"epochs": 2500, "batch_size": 256, "ema_decay": 0.995}),
    "+ Fourier 32, batch 256, 2500": OLD_IMPROVED.replace(denoiser={**FOURIER, "position_dim": 32},
                                                          train={"epochs": 2500, "batch_size": 256}),
    "+ Fourier 32, batch 256, 2200, cosine betas": OLD_IMPROVED.replace(
        schedule={"kind": "cosine"}, denoiser={**FOURIER, "position_dim": 32}, train={"epochs": 2200, "batch_size": 256}),
    "improved, first version (128 wide, 2500)": FIRST_IMPROVED,
    "improved (the preset)": improved(),
    "improved, lr 5e-3": FIRST_IMPROVED.replace(train={"lr": 5e-3}),
    "improved, batch 512, 1500": FIRST_IMPROVED.replace(train={"batch_size": 512, "epochs": 1500}),
    "improved, 3 layers, 2000": FIRST_IMPROVED.replace(denoiser={"depth": 3}, train={"epochs": 2000}),
    "improved, EMA 0.999": FIRST_IMPROVED.replace(train={"ema_decay": 0.999}),
    "improved, 64 wide, 3500": FIRST_IMPROVED.replace(denoiser={"hidden": 64}, train={"epochs": 3500}),
    "improved, 64 wide, 3500, lr 5e-3": FIRST_IMPROVED.replace(denoiser={"hidden": 64}, train={"epochs": 3500, "lr": 5e-3}),
    "improved, 96 wide, 3200": FIRST_IMPROVED.replace(denoiser={"hidden": 96}, train={"epochs": 3200}),
    "improved, 64 wide, 4000, lr 5e-3": FIRST_IMPROVED.replace(denoiser={"hidden": 64}, train={"epochs": 4000, "lr": 5e-3}),
    "improved, 64 wide, 5000, lr 5e-3": FIRST_IMPROVED.replace(denoiser={"hidden": 64}, train={"epochs": 5000, "lr": 5e-3}),
    "improved, 64 wide, 4000, lr 1e-2": FIRST_IMPROVED.replace(denoiser={"hidden": 64}, train={"epochs": 4000, "lr": 1e-2}),
    "improved, 48 wide, 5000, lr 5e-3": FIRST_IMPROVED.replace(denoiser={"hidden": 48}, train={"epochs": 5000, "lr": 5e-3}),
    "improved, second version, EMA 0.995": SECOND_IMPROVED.replace(train={"ema_decay": 0.995}),
    "improved, second version, batch 384, 3000": SECOND_IMPROVED.replace(train={"batch_size": 384, "epochs": 3000}),
    "improved, low-noise emphasis 1.5": SECOND_IMPROVED.replace(train={"time_power": 1.5}),
    "improved, low-noise emphasis 2": SECOND_IMPROVED.replace(train={"time_power": 2.0}),
    "improved, low-noise emphasis 3": SECOND_IMPROVED.replace(train={"time_power": 3.0}),
    "flow before (1000 epochs)": OLD_FLOW,
    "flow + Fourier 16, 128 wide, OT, 1000": OLD_FLOW.replace(denoiser={**FOURIER, "hidden": 128}),
    "flow + Fourier 16, 128 wide, independent, 3000": OLD_FLOW.replace(
        denoiser={**FOURIER, "hidden": 128}, train={"coupling": "independent", "epochs": 3000}),
    "flow + Fourier 16, 128 wide, independent, batch 256, 2500": OLD_FLOW.replace(
        denoiser={**FOURIER, "hidden": 128}, train={"coupling": "independent", "epochs": 2500, "batch_size": 256}),
    "flow + Fourier 16, OT, 1500": OLD_FLOW.replace(denoiser=FOURIER, train={"epochs": 1500}),
    "flow + Fourier 16, 128 wide, OT, 1000, Heun 10 -> Euler 20": OLD_FLOW.replace(
        denoiser={**FOURIER, "hidden": 128}, sampler={"kind": "euler", "sample_steps": 20}),
    "flow (the preset)": flow_matching(),
    "flow, low-noise emphasis 2": flow_matching().replace(train={"time_power": 2.0}),
}
FRESH_DATA = "fresh data (a perfect sampler)"  # not a config: the metric's own spread, the floor of any tuning


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tune_presets")
    parser.add_argument("names", nargs="*", help="candidates to score (default: all)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12])
    parser.add_argument("--draws", type=int, default=DRAWS, help="sample sets of 1000 scored per trained run")
    args = parser.parse_args(argv)
    names = args.names or [FRESH_DATA, *CANDIDATES]
    unknown = [n for n in names if n not in CANDIDATES and n != FRESH_DATA]
    if unknown:
        parser.error(f"unknown candidate(s) {unknown}; choose from {list(CANDIDATES)}")
    print(f"| candidate | {' | '.join(DATASETS)} | worst | blur: {' | '.join(DATASETS)} | train s (median) |")
    print(f"|---|{'---|' * (2 * len(DATASETS))}---|---|")
    with ProcessPoolExecutor(args.jobs) as pool:
        for name in names:
            jobs = {(d, s): pool.submit(fresh_score, d, s, args.draws) if name == FRESH_DATA else
                    pool.submit(score, CANDIDATES[name], d, s, args.draws) for d in DATASETS for s in args.seeds}
            results = {key: job.result() for key, job in jobs.items()}
            means = [statistics.mean(r for s in args.seeds for r in results[(d, s)].ratios) for d in DATASETS]
            blurs = [statistics.mean(b for s in args.seeds for b in results[(d, s)].blurs) for d in DATASETS]
            seconds = statistics.median(r.seconds for r in results.values())
            print(f"| {name} | {' | '.join(f'{m:.2f}' for m in means)} | {max(means):.2f} | "
                  f"{' | '.join(f'{b:.2f}' for b in blurs)} | {seconds:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
