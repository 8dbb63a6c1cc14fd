"""Reference vs improved vs flow, each run through the headless command for 3 seeds (1000 samples):
energy distance and its noise floor, generated std, train and sample seconds; improved also at the
seed script's budget (``--epochs 1000 --batch-size 128``), for a like-for-like row.

With ``--every-dataset``: each preset at its own defaults on every built-in dataset, held-out seeds
0 - 2 (the tuning, ``bench.tune_presets``, uses 10 - 12): the training seconds (median, one torch
thread) and the quality score of ``bench.quality`` (energy distance over its floor, ``--draws`` sets
of 1000 samples per run, default 60, against a 20,000-point true set) and its blur ratio (how far
samples sit from the nearest true point, over fresh data's), per seed and their mean, with a perfect
sampler's scores (fresh data) on the same seeds first. Where the data has an exact ideal denoiser
(the Gaussian, the ring), each preset's row also shows that ideal's score with the very noise the
preset's model was sampled with: what a perfect model gets on those seeds' luck.

With ``--train-seconds``: only the training, of each preset at its own defaults on every built-in
dataset, seeds 0 - 2, one run at a time on one torch thread (the median and the slowest): the 3 s
target's figure, apart from ``--every-dataset``'s, whose runs share the machine with their scoring;
the reference's row says how fast the shared machine was during the run.

With ``--steps-per-second``: the improved preset's training steps per second and points per second
at batch sizes 128 - 1024 (one torch thread): what a bigger batch costs.

    python -m bench.presets [--seeds 3] [--every-dataset [--jobs 1] [--draws 60]] [--train-seconds] [--steps-per-second]
"""

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

HELD_OUT_DRAWS = 60  # sample sets per held-out run: with 20, the noise's luck moved a perfect model's mean by up to 0.3


def run(preset: str, seed: int, *extra: str) -> dict:
    argv = [sys.executable, "-m", "diffusion", "--preset", preset, "--seed", str(seed), "--sample-seed", str(seed),
            "--json", *extra]
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


# improved first at the seed script's budget (1000 steps of 128 points), then at its own defaults
ROWS = (("reference", ()), ("improved", ("--epochs", "1000", "--batch-size", "128")), ("improved", ()), ("flow", ()))


def every_dataset(seeds: int, jobs: int, draws: int) -> None:
    from bench.quality import DATASETS, fresh_score, ideal_score, score
    from diffusion import PRESETS

    def cell(values: list[float]) -> str:
        return f"{statistics.mean(values):.2f} ({', '.join(f'{x:.2f}' for x in values)})"

    print(f"{draws} sample sets per run")
    print("| dataset | preset | train s | ED / floor, mean (per seed) | perfect model, same noise | blur, mean (per seed) |")
    print("|---|---|---|---|---|---|")
    with ProcessPoolExecutor(jobs) as pool:
        ideal_jobs = {}  # presets with the same path and sampler share the ideal's (reference and improved)
        for dataset in DATASETS:
            for preset in ("fresh data", *PRESETS):
                fresh = preset == "fresh data"
                runs = [pool.submit(fresh_score, dataset, seed, draws) if fresh else
                        pool.submit(score, PRESETS[preset](), dataset, seed, draws) for seed in range(seeds)]
                ideals = []
                for seed in range(0 if fresh else seeds):
                    config = PRESETS[preset]()
                    key = (dataset, config.schedule, config.sampler, seed)
                    if key not in ideal_jobs:
                        ideal_jobs[key] = pool.submit(ideal_score, config, dataset, seed, draws)
                    ideals.append(ideal_jobs[key])
                results, perfect = [job.result() for job in runs], [job.result() for job in ideals]
                seconds = "-" if fresh else f"{statistics.median(r.seconds for r in results):.2f}"
                ratios, blurs = ([statistics.mean(getattr(r, kind)) for r in results] for kind in ("ratios", "blurs"))
                same_noise = cell([statistics.mean(r.ratios) for r in perfect]) if perfect and None not in perfect else "-"
                print(f"| {dataset} | {preset} | {seconds} | {cell(ratios)} | {same_noise} | {cell(blurs)} |", flush=True)


def train_seconds(seeds: int) -> None:
    import torch

    from bench.quality import DATASETS, data_config
    from diffusion import PRESETS
    from diffusion.training import Trainer

    torch.set_num_threads(1)
    print("| preset | " + " | ".join(DATASETS) + " | slowest |")
    print(f"|---|{'---|' * len(DATASETS)}---|")
    for preset in ("reference", "improved", "flow"):  # the reference's row: how fast the machine is right now
        medians, slowest = [], 0.0
        for dataset in DATASETS:
            runs = [Trainer(PRESETS[preset]().replace(data=data_config(dataset), train={"seed": seed})).train().elapsed
                    for seed in range(seeds)]
            medians.append(statistics.median(runs))
            slowest = max(slowest, *runs)
        print(f"| {preset} | {' | '.join(f'{m:.2f}' for m in medians)} | {slowest:.2f} |", flush=True)


def steps_per_second(batches=(128, 256, 512, 1024), steps: int = 600) -> None:
    import torch

    from diffusion import improved
    from diffusion.training import Trainer

    torch.set_num_threads(1)
    print("| batch | ms per step | steps / s | points / s |")
    print("|---|---|---|---|")
    for batch in batches:
        trainer = Trainer(improved().replace(train={"epochs": steps, "batch_size": batch}))
        for _ in trainer.run():
            pass
        per_step = trainer.elapsed / steps
        print(f"| {batch} | {per_step * 1e3:.2f} | {1 / per_step:.0f} | {batch / per_step:,.0f} |", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.presets")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--every-dataset", action="store_true", help="every built-in dataset, each preset's defaults")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once with --every-dataset")
    parser.add_argument("--draws", type=int, default=HELD_OUT_DRAWS, help="sample sets of 1000 scored per run, with --every-dataset")
    parser.add_argument("--train-seconds", action="store_true", help="each preset's training alone, every dataset")
    parser.add_argument("--steps-per-second", action="store_true", help="training speed at batch sizes 128 - 1024")
    args = parser.parse_args(argv)
    if args.every_dataset:
        every_dataset(args.seeds, args.jobs, args.draws)
        return 0
    if args.train_seconds:
        train_seconds(args.seeds)
        return 0
    if args.steps_per_second:
        steps_per_second()
        return 0
    print("| preset | energy distance | noise floor | ED / floor | generated std (x, y) | train s | sample s |")
    print("|---|---|---|---|---|---|---|")
    for preset, extra in ROWS:
        runs = [run(preset, seed, *extra) for seed in range(args.seeds)]
        m = [r["metrics"] for r in runs]

        def mean(values):
            return statistics.mean(values)

        per_seed = ", ".join(f"{x['energy_distance_ratio']:.2f}" for x in m)
        print(f"| {preset} {' '.join(extra)} | {mean([x['energy_distance'] for x in m]):.4f} "
              f"| {mean([x['energy_distance_floor'] for x in m]):.4f} "
              f"| {mean([x['energy_distance_ratio'] for x in m]):.2f} "
              f"({per_seed}) "
              f"| {mean([x['std'][0] for x in m]):.3f}, {mean([x['std'][1] for x in m]):.3f} "
              f"| {statistics.median([r['train_seconds'] for r in runs]):.2f} "
              f"| {statistics.median([r['sample_seconds'] for r in runs]):.2f} |", flush=True)
    print(f"\nmean over seeds 0..{args.seeds - 1} (each seed: training and sampling); times: medians, one thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
