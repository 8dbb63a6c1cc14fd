"""Reference vs improved vs flow, each run through the headless command for 3 seeds (1000 samples):
energy distance and its noise floor, generated std, train and sample seconds. With
``--every-dataset``: each preset at its own defaults on every built-in dataset, the training
seconds (median) and the energy distance over its floor for each seed and their mean.

    python -m bench.presets [--seeds 3] [--every-dataset]
"""

import argparse
import json
import statistics
import subprocess
import sys


def run(preset: str, seed: int, *extra: str) -> dict:
    argv = [sys.executable, "-m", "diffusion", "--preset", preset, "--seed", str(seed), "--sample-seed", str(seed),
            "--json", *extra]
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


DATASETS = ("gaussian", "ring", "moons", "swiss_roll", "circles", "checkerboard", "spiral")


def every_dataset(seeds: int) -> None:
    print("| dataset | preset | train s | ED / floor, mean (per seed) |")
    print("|---|---|---|---|")
    for dataset in DATASETS:
        for preset in ("reference", "improved", "flow"):
            runs = [run(preset, seed, "--dataset", dataset) for seed in range(seeds)]
            ratios = [r["metrics"]["energy_distance_ratio"] for r in runs]
            print(f"| {dataset} | {preset} | {statistics.median(r['train_seconds'] for r in runs):.2f} "
                  f"| {statistics.mean(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)}) |", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.presets")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--every-dataset", action="store_true", help="every built-in dataset, each preset's defaults")
    args = parser.parse_args(argv)
    if args.every_dataset:
        every_dataset(args.seeds)
        return 0
    print("| preset | energy distance | noise floor | ED / floor | generated std (x, y) | train s | sample s |")
    print("|---|---|---|---|---|---|---|")
    for preset in ("reference", "improved", "flow"):
        runs = [run(preset, seed) for seed in range(args.seeds)]
        m = [r["metrics"] for r in runs]

        def mean(values):
            return statistics.mean(values)

        per_seed = ", ".join(f"{x['energy_distance_ratio']:.2f}" for x in m)
        print(f"| {preset} | {mean([x['energy_distance'] for x in m]):.4f} "
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
