"""NLL against the data's entropy for the presets, through the headless command (``--likelihood``):
for each preset and dataset, over seeds, the mean NLL, H and NLL - H (the estimate of KL(data ||
model), with its standard error), the ODE solver's error and the training seconds; and the
sampling budget's deterministic samplers at <= 20 model calls against the 1000-step DDIM (eta 0).

    python -m bench.likelihood [--seeds 3] [--datasets gaussian ring] [--budget moons ...]
"""

import argparse
import json
import statistics
import subprocess
import sys

PRESETS = ("reference", "improved", "flow")


def run(preset: str, dataset: str, seed: int, *extra: str) -> dict:
    argv = [sys.executable, "-m", "diffusion", "--preset", preset, "--dataset", dataset, "--seed", str(seed),
            "--sample-seed", str(seed), "--json", *extra]
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def likelihood_table(datasets, seeds: int) -> None:
    print("| preset | dataset | NLL (nats) | H | NLL - H (per seed, ± s.e.) | ODE error | train s |")
    print("|---|---|---|---|---|---|---|")
    for dataset in datasets:
        for preset in PRESETS:
            runs = [run(preset, dataset, seed, "--likelihood") for seed in range(seeds)]
            kl = ", ".join(f"{r['kl_estimate']:.3f} ± {r['kl_estimate_se']:.3f}" for r in runs)
            entropy = runs[0]["entropy"]
            h = f"{entropy:.3f}" + ("" if runs[0]["entropy_se"] == 0 else f" ± {runs[0]['entropy_se']:.3f}")
            print(f"| {preset} | {dataset} | {statistics.mean(r['nll'] for r in runs):.3f} | {h} | {kl} "
                  f"| {max(r['ode_error'] for r in runs):.4f} | {statistics.median(r['train_seconds'] for r in runs):.2f} |",
                  flush=True)


def budget_table(datasets, seeds: int) -> None:
    """improved's DDIM (eta 0) and DPM-Solver++ 2M at 10 and 20 calls, over the 1000-step DDIM."""
    print("| dataset | DDIM η=0, 1000 calls | DDIM η=0, 20 | DPM-Solver++ 2M, 10 | DPM-Solver++ 2M, 20 | 2M at 20 / DDIM at 1000 |")
    print("|---|---|---|---|---|---|")
    for dataset in datasets:
        ratios: dict[tuple, list[float]] = {}
        for seed in range(seeds):
            rows = run("improved", dataset, seed, "--budget")["budget"]
            for r in rows:
                ratios.setdefault((r["sampler"], r["eta"], r["model_calls"]), []).append(r["energy_distance"] / r["floor"])
        mean = {k: statistics.mean(v) for k, v in ratios.items()}
        ddim, dpm = ("ddim", 0.0), ("dpm_solver", None)
        print(f"| {dataset} | {mean[(*ddim, 1000)]:.2f} | {mean[(*ddim, 20)]:.2f} | {mean[(*dpm, 10)]:.2f} "
              f"| {mean[(*dpm, 20)]:.2f} | {mean[(*dpm, 20)] / mean[(*ddim, 1000)]:.2f} |", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.likelihood")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=["gaussian", "ring"])
    parser.add_argument("--budget", nargs="*", default=["gaussian", "ring", "moons"],
                        help="datasets for the budget's table (none: skip it)")
    args = parser.parse_args(argv)
    likelihood_table(args.datasets, args.seeds)
    if args.budget:
        print()
        budget_table(args.budget, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
