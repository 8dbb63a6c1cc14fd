"""Benchmark: the trainer's Adam (``training.Adam``, torch's fused kernel ``torch._fused_adam_``
called directly) against the public ``torch.optim.Adam(fused=True)``, over whole training runs of
the reference and improved presets.

    python -m bench.optimizer [--repeats 9]

One torch thread, the two optimizers alternating run by run in this process (drifts in the
machine's load hit both alike), medians. Each pair of runs is checked to end in the same bits, so
the two time the same arithmetic. "extra" is what the public optimizer adds: per step, and as a
share of the public run's time; "slower by" is the public run's time over the private one's, - 1. A benchmark, not a test: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from diffusion.config import improved, reference
from diffusion.training import Adam, Trainer


class PublicAdam:
    """``torch.optim.Adam(fused=True)`` behind the trainer's interface (``step(grads)``): what
    the trainer would run without ``training.Adam``, the gradients handed over through ``.grad``."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float):
        self.params = list(params)
        self.optimizer = torch.optim.Adam(self.params, lr=lr, fused=True)
        self.param_groups = self.optimizer.param_groups  # the trainer sets the lr here each step

    def step(self, grads: list[torch.Tensor]) -> None:
        for param, grad in zip(self.params, grads, strict=True):
            param.grad = grad
        self.optimizer.step()


def timed_run(config, optimizer: str) -> tuple[float, Trainer]:
    """Seconds of ``train()`` (set-up excluded) with the trainer's Adam or torch.optim.Adam."""
    trainer = Trainer(config)
    assert isinstance(trainer.optimizer, Adam)
    if optimizer == "public":
        trainer.optimizer = PublicAdam(list(trainer.model.parameters()), config.train.lr)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start, trainer


def compare(name: str, config, repeats: int) -> tuple[str, ...]:
    seconds = {"private": [], "public": []}
    for i in range(repeats):
        order = ("private", "public") if i % 2 == 0 else ("public", "private")
        trained = {}
        for optimizer in order:
            elapsed, trained[optimizer] = timed_run(config, optimizer)
            seconds[optimizer].append(elapsed)
        a, b = trained["private"], trained["public"]
        assert a.losses == b.losses and all(
            torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True)
        ), f"{name}: the two optimizers gave different numbers"
    steps = config.training.total_steps
    private, public = statistics.median(seconds["private"]), statistics.median(seconds["public"])
    per_step_us = (public - private) / steps * 1e6
    return (name, f"{steps / private:,.0f}", f"{steps / public:,.0f}", f"{per_step_us:+.0f} us",
            f"{(public - private) / public:.0%}", f"{public / private - 1:.0%}",
            ", ".join(f"{s:.2f}" for s in seconds["private"]), ", ".join(f"{s:.2f}" for s in seconds["public"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.optimizer", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, torch threads 1, {args.repeats} repeats each, alternating (medians)\n")
    print("| preset | steps/s, training.Adam (private kernel) | steps/s, torch.optim.Adam(fused=True) | extra per step "
          "| extra, share of the public run | public run slower by | private runs (s) | public runs (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, make in (("reference", reference), ("improved", improved)):
        print("| " + " | ".join(compare(name, make(), args.repeats)) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
