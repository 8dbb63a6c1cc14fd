"""How a `flow` preset is chosen: flow-matching candidates at the reference's training budget
(1000 Adam steps of 128 fresh points of the default `gaussian` data: epochs, batch size and data
are never changed), sampled with at most 20 model calls (Euler N steps: N calls; Heun N steps:
2N - 1), each scored by energy distance over its noise floor on 1000 samples, over 3 seeds (the
same seed for training and sampling). `improved` (DDPM, 1000 model calls) and `reference` are
scored the same way as reference rows.

Columns: the mean and worst ratio of energy distance to its floor over the seeds (1.0 = as good as
data), the mean generated std (the data's is 0.5) and the model calls of one sampling run.

    python -m bench.tune_flow                    # every candidate, a markdown table
    python -m bench.tune_flow "name" "name" ...  # only these
"""

import sys

import torch

from bench.tune_improved import score as score_over_seeds
from diffusion import improved, reference
from diffusion.config import model_calls

MAX_CALLS = 20
BASE = improved()  # sinusoidal 128x2 ReLU, lr 3e-3 cosine, EMA 0.99
EULER_20 = {"kind": "euler", "sample_steps": 20}
HEUN_10 = {"kind": "heun", "sample_steps": 10}  # 19 calls
OT = {"coupling": "ot"}


def flow(sampler=EULER_20, train=None, denoiser=None):
    """``improved()`` turned to flow matching, with these sampler / train / denoiser fields."""
    return BASE.replace(schedule={"objective": "flow"}, sampler=sampler, train=train or {}, denoiser=denoiser or {})


CANDIDATES = {
    "reference (DDPM)": reference(),
    "improved (DDPM, the preset)": improved(),
    # improved's network and training, flow objective
    "flow, Euler 20": flow(EULER_20),
    "flow, Heun 10": flow(HEUN_10),
    "flow OT, Euler 20": flow(EULER_20, OT),
    "flow OT, Heun 10": flow(HEUN_10, OT),
    # fewer calls
    "flow OT, Euler 10": flow({"kind": "euler", "sample_steps": 10}, OT),
    "flow OT, Heun 5": flow({"kind": "heun", "sample_steps": 5}, OT),
    # learning rate
    "flow OT, Heun 10, lr 1e-3": flow(HEUN_10, {**OT, "lr": 1e-3}),
    "flow OT, Heun 10, lr 5e-3": flow(HEUN_10, {**OT, "lr": 5e-3}),
    "flow OT, Heun 10, lr 1e-2": flow(HEUN_10, {**OT, "lr": 1e-2}),
    # weight average
    "flow OT, Heun 10, no EMA": flow(HEUN_10, {**OT, "ema_decay": 0.0}),
    "flow OT, Heun 10, EMA 0.995": flow(HEUN_10, {**OT, "ema_decay": 0.995}),
    "flow, Heun 10, EMA 0.995": flow(HEUN_10, {"ema_decay": 0.995}),
    # network
    "flow OT, Heun 10, 64x2": flow(HEUN_10, OT, {"hidden": 64}),
    "flow OT, Heun 10, 256x2": flow(HEUN_10, OT, {"hidden": 256}),
    "flow OT, Heun 10, 128x2 SiLU": flow(HEUN_10, OT, {"activation": "silu"}),
    "flow OT, Heun 10, 128x3 SiLU": flow(HEUN_10, OT, {"depth": 3, "activation": "silu"}),
    "flow OT, Heun 10, embedding 32": flow(HEUN_10, OT, {"embedding_dim": 32}),
    "flow OT, Heun 10, scalar time": flow(HEUN_10, OT, {"time_embedding": "scalar"}),
    # around the best network (64x2)
    "flow, Heun 10, 64x2": flow(HEUN_10, None, {"hidden": 64}),
    "flow OT, Euler 20, 64x2": flow(EULER_20, OT, {"hidden": 64}),
    "flow OT, Heun 10, 64x2, embedding 32": flow(HEUN_10, OT, {"hidden": 64, "embedding_dim": 32}),
    "flow OT, Heun 10, 64x2, no EMA": flow(HEUN_10, {**OT, "ema_decay": 0.0}, {"hidden": 64}),
}


def calls(config):
    """Model calls of one sampling run: T for DDPM, else the sampler's (``model_calls``)."""
    if config.sampler.kind == "ddpm":
        return config.schedule.num_timesteps
    return model_calls(config.sampler.kind, config.sampler.sample_steps)


def _check(name, config):
    """Flow candidates keep the reference's budget and data and stay within MAX_CALLS."""
    if config.schedule.objective != "flow":
        return
    ref = reference()
    budget = (config.train.epochs, config.train.batch_size, config.data)
    if budget != (ref.train.epochs, ref.train.batch_size, ref.data):
        raise ValueError(f"{name}: epochs, batch size and data must be the reference's")
    if calls(config) > MAX_CALLS:
        raise ValueError(f"{name}: {calls(config)} model calls, more than {MAX_CALLS}")


def score(config):
    """(mean ratio, worst ratio, mean generated std) over seeds 0 - 2: ``bench.tune_improved.score``."""
    return score_over_seeds(config, seeds=(0, 1, 2))


def main():
    torch.set_num_threads(1)
    names = sys.argv[1:] or list(CANDIDATES)
    for name in names:
        _check(name, CANDIDATES[name])
    print("| candidate | ED/floor mean | worst | gen. std | model calls |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        config = CANDIDATES[name]
        mean, worst, std = score(config)
        print(f"| {name} | {mean:.2f} | {worst:.2f} | {std:.3f} | {calls(config)} |", flush=True)


if __name__ == "__main__":
    main()
