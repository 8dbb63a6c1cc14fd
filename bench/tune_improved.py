"""How the `improved` preset was chosen: candidates at the reference's training budget
(1000 Adam steps, batch 128, same data, T=1000 linear betas), each scored by energy distance
over its noise floor, averaged over 5 training seeds (1000 samples each).

    python -m bench.tune_improved
"""

import statistics
import sys

import torch

from diffusion import improved, reference
from diffusion.datasets import make_dataset
from diffusion.metrics import evaluate
from diffusion.samplers import sample_model
from diffusion.training import Trainer

BASE = reference()
SINUSOIDAL = {"time_embedding": "sinusoidal"}
COSINE_3E3 = {"lr": 3e-3, "lr_schedule": "cosine"}
CANDIDATES = {
    "reference": BASE,
    "sinusoidal": BASE.replace(denoiser=SINUSOIDAL),
    "sinusoidal + cosine lr 3e-3": BASE.replace(denoiser=SINUSOIDAL, train=COSINE_3E3),
    "  + posterior variance": BASE.replace(denoiser=SINUSOIDAL, train=COSINE_3E3, sampler={"variance": "posterior"}),
    "  + wider SiLU 128x3": BASE.replace(denoiser={**SINUSOIDAL, "hidden": 128, "depth": 3, "activation": "silu"},
                                         train=COSINE_3E3),
    "  + EMA 0.99": BASE.replace(denoiser=SINUSOIDAL, train={**COSINE_3E3, "ema_decay": 0.99}),
    "sinusoidal + cosine lr 1e-2": BASE.replace(denoiser=SINUSOIDAL, train={"lr": 1e-2, "lr_schedule": "cosine"}),
    "sinusoidal + cosine lr 5e-3 + EMA": BASE.replace(denoiser=SINUSOIDAL, train={"lr": 5e-3, "lr_schedule": "cosine",
                                                                                    "ema_decay": 0.99}),
    "sinusoidal + cosine 3e-3, 128x2": BASE.replace(denoiser={**SINUSOIDAL, "hidden": 128}, train=COSINE_3E3),
    "sinusoidal + cosine 3e-3, 64x3 SiLU": BASE.replace(denoiser={**SINUSOIDAL, "depth": 3, "activation": "silu"},
                                                      train=COSINE_3E3),
    "sinusoidal 32 + cosine 3e-3": BASE.replace(denoiser={**SINUSOIDAL, "embedding_dim": 32}, train=COSINE_3E3),
    "sinusoidal + cosine 2e-3 + EMA": BASE.replace(denoiser=SINUSOIDAL, train={"lr": 2e-3, "lr_schedule": "cosine",
                                                                               "ema_decay": 0.99}),
    "sinusoidal + cosine 3e-3, 128x2 + EMA": BASE.replace(denoiser={**SINUSOIDAL, "hidden": 128},
                                                           train={**COSINE_3E3, "ema_decay": 0.99}),
    "sinusoidal + cosine 3e-3, 256x2": BASE.replace(denoiser={**SINUSOIDAL, "hidden": 256}, train=COSINE_3E3),
    "improved (the preset)": improved(),
}


def score(config, seeds=(0, 1, 2, 3, 4)):
    ratios, stds = [], []
    for seed in seeds:
        run = config.replace(train={"seed": seed}, sampler={"seed": seed})
        trainer = Trainer(run).train()
        trajectory = sample_model(trainer.sampling_model(), trainer.schedule, run.sampler)
        result = evaluate(trajectory.samples, make_dataset(run.data), seed=100 + seed)
        ratios.append(result.energy_distance.ratio)
        stds.append(sum(result.std) / 2)
    return statistics.mean(ratios), max(ratios), statistics.mean(stds)


def main():
    torch.set_num_threads(1)
    names = sys.argv[1:] or list(CANDIDATES)
    print(f"{'candidate':<30} {'ED/floor mean':>14} {'worst':>7} {'gen. std':>9}")
    for name in names:
        mean, worst, std = score(CANDIDATES[name])
        print(f"{name:<30} {mean:>14.2f} {worst:>7.2f} {std:>9.3f}", flush=True)


if __name__ == "__main__":
    main()
