"""The two backends of the runtime side by side on this machine: one worker each, the same long run.

    python -m bench.backends [--seconds 8] [--repeats 3]

For each backend (local worker processes, then Ray actors on a local Ray that this process starts,
or on ``RAY_ADDRESS``'s cluster), twice in turn (local, Ray, local, Ray): the seconds until the
worker says Ready, one run's training rate
over ``--seconds`` (steps/s, median of ``--repeats`` windows), the overhead per chunk against the
local rate (``CHUNK_STEPS`` steps), how long a pause takes to hand the run back and a resume to
train again, and what travels: the pickled size of each kind of message (median), and of the
``Train`` message that carries a paused run to a worker. Nothing here is asserted: it prints a table.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import time
from collections import defaultdict

import torch

from diffusion import improved
from runtime.messages import Train
from runtime.registry import RunRegistry
from runtime.worker import CHUNK_STEPS

KEY = improved().replace(train={"epochs": 20_000, "batch_size": 1024}, data={"name": "moons"}).training


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(0.002)
    return time.monotonic()


def measure(backend: str, seconds: float, repeats: int) -> dict:
    started = time.monotonic()
    registry = RunRegistry(1, backend=backend)
    sizes: dict[str, list[int]] = defaultdict(list)
    deliver = registry.pool._on_message

    def recorded(worker, message):
        sizes[type(message).__name__].append(len(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)))
        deliver(worker, message)

    registry.pool._on_message = recorded  # the pool's readers look it up per message
    try:
        ready = wait_for(lambda: sizes["Ready"]) - started  # the worker said Ready: it takes jobs
        run = registry.new_job("bench", KEY)
        registry.start(run)
        wait_for(lambda: run.step > 0)
        rates = []
        for _ in range(repeats):
            step, t0 = run.step, time.monotonic()
            time.sleep(seconds)
            rates.append((run.step - step) / (time.monotonic() - t0))
        asked = time.monotonic()
        registry.pause(run)
        pause_s = wait_for(lambda: run.status == "paused") - asked
        train = Train(run.id, run.key, run.trainer_state, run.watch_state, run.until_step, 0.0, run.wall)
        train_bytes = len(pickle.dumps(train, protocol=pickle.HIGHEST_PROTOCOL))
        step, asked = run.step, time.monotonic()
        registry.start(run)
        resume_s = wait_for(lambda: run.step > step) - asked
    finally:
        registry.close()
    return {"ready_s": ready, "steps_per_s": statistics.median(rates), "pause_s": pause_s, "resume_s": resume_s,
            "train_bytes": train_bytes, "sizes": {k: statistics.median(v) for k, v in sizes.items()},
            "counts": {k: len(v) for k, v in sizes.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backends", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="one window of the training rate")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rounds = [(backend, measure(backend, args.seconds, args.repeats)) for backend in ("local", "ray", "local", "ray")]
    local, ray_ = ({**first, "steps_per_s": statistics.mean([first["steps_per_s"], second["steps_per_s"]]),
                    "ready_s": first["ready_s"], "ready_again_s": second["ready_s"]}
                   for first, second in (([r for b, r in rounds if b == name]) for name in ("local", "ray")))
    print(f"One run of `improved` at 20000 epochs, batch 1024, on one worker; local, Ray, local, Ray, each "
          f"{args.repeats} windows of {args.seconds:g} s (rate: mean of the two rounds' medians; the rest: first round; "
          "'again': a second registry, Ray already connected).\n")
    print("| measure | local processes | Ray actors |\n|---|---|---|")
    print(f"| workers take jobs after (s): first / again | {local['ready_s']:.2f} / {local['ready_again_s']:.2f} | "
          f"{ray_['ready_s']:.2f} / {ray_['ready_again_s']:.2f} |")
    print(f"| training rate (steps/s) | {local['steps_per_s']:.0f} | {ray_['steps_per_s']:.0f} |")
    per_chunk = CHUNK_STEPS * (1 / ray_["steps_per_s"] - 1 / local["steps_per_s"]) * 1e3
    print(f"| overhead per chunk of {CHUNK_STEPS} steps (ms) | - | {per_chunk:+.2f} |")
    print(f"| pause: run handed back after (s) | {local['pause_s']:.3f} | {ray_['pause_s']:.3f} |")
    print(f"| resume: training again after (s) | {local['resume_s']:.3f} | {ray_['resume_s']:.3f} |")
    print(f"| a paused run's Train message (kB) | {local['train_bytes'] / 1e3:.0f} | {ray_['train_bytes'] / 1e3:.0f} |")
    for kind in sorted(set(local["sizes"]) | set(ray_["sizes"])):
        cells = [f"{r['sizes'][kind] / 1e3:.1f} ({r['counts'][kind]})" if kind in r["sizes"] else "-"
                 for r in (local, ray_)]
        print(f"| {kind} message, kB (how many) | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
