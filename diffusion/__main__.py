"""The headless command: ``python -m diffusion [--preset reference] [flags]``.

Trains, samples and scores one experiment without a browser. Bad input exits with status 2 and
one line naming the flag and what is allowed. ``--out DIR`` also writes a standalone HTML figure,
drawn by the dashboard's chart builders (``ui.charts``, plotly), imported only for that.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import get_args

import torch

from . import checkpoints
from .config import (
    PRESETS,
    Activation,
    DatasetName,
    ExperimentConfig,
    LRSchedule,
    SamplerKind,
    ScheduleKind,
    TimeEmbedding,
    Variance,
)
from .datasets import PointsError, load_points, make_dataset
from .metrics import evaluate
from .samplers import sample_model
from .training import Trainer, TrainingDiverged

# flag -> (config section, field)
FLAGS = {
    "steps": ("schedule", "num_timesteps"),
    "schedule": ("schedule", "kind"),
    "beta_start": ("schedule", "beta_start"),
    "beta_end": ("schedule", "beta_end"),
    "epochs": ("train", "epochs"),
    "lr": ("train", "lr"),
    "lr_schedule": ("train", "lr_schedule"),
    "ema": ("train", "ema_decay"),
    "batch_size": ("train", "batch_size"),
    "seed": ("train", "seed"),
    "hidden": ("denoiser", "hidden"),
    "depth": ("denoiser", "depth"),
    "activation": ("denoiser", "activation"),
    "time_embedding": ("denoiser", "time_embedding"),
    "sampler": ("sampler", "kind"),
    "variance": ("sampler", "variance"),
    "sample_steps": ("sampler", "steps"),
    "eta": ("sampler", "eta"),
    "samples": ("sampler", "num_samples"),
    "frames": ("sampler", "num_frames"),
    "sample_seed": ("sampler", "seed"),
}
FIELD_FLAGS = {f"{section}.{field}": "--" + flag.replace("_", "-") for flag, (section, field) in FLAGS.items()}
FIELD_FLAGS.update({"data.name": "--dataset", "data.points": "--points"})


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors, as one line
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m diffusion", description="Train and sample a 2-D DDPM headless.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="reference", help="starting point (default: reference)")
    p.add_argument("--dataset", choices=get_args(DatasetName), help="distribution to learn")
    p.add_argument("--points", metavar="FILE", help="CSV with columns x,y: train on your own points")
    g = p.add_argument_group("schedule")
    g.add_argument("--steps", type=int, help="diffusion steps T")
    g.add_argument("--schedule", choices=get_args(ScheduleKind))
    g.add_argument("--beta-start", type=float)
    g.add_argument("--beta-end", type=float)
    g = p.add_argument_group("denoiser")
    g.add_argument("--hidden", type=int, help="units per hidden layer")
    g.add_argument("--depth", type=int, help="hidden layers")
    g.add_argument("--activation", choices=get_args(Activation))
    g.add_argument("--time-embedding", choices=get_args(TimeEmbedding))
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, help="fresh data: optimizer steps on one fresh batch; points: passes")
    g.add_argument("--lr", type=float, help="Adam learning rate")
    g.add_argument("--lr-schedule", choices=get_args(LRSchedule))
    g.add_argument("--ema", type=float, help="weight EMA decay, 0 = off")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--seed", type=int, help="training seed")
    g = p.add_argument_group("sampling")
    g.add_argument("--sampler", choices=get_args(SamplerKind))
    g.add_argument("--variance", choices=get_args(Variance), help="DDPM sigma_t^2: beta or posterior")
    g.add_argument("--sample-steps", type=int, help="DDIM steps")
    g.add_argument("--eta", type=float, help="DDIM eta (0 = deterministic)")
    g.add_argument("--samples", type=int, help="number of points to generate")
    g.add_argument("--frames", type=int, help="frames kept of the reverse process")
    g.add_argument("--sample-seed", type=int)
    g = p.add_argument_group("run")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--save-checkpoint", metavar="DIR", help="write model.safetensors + config.json")
    g.add_argument("--load-checkpoint", metavar="PATH", help="sample a saved model instead of training")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    g.add_argument("--out", metavar="DIR", help="write samples.csv, losses.csv, config.json, figure.html")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, dict]:
    sections: dict[str, dict] = {}
    for flag, (section, field) in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            sections.setdefault(section, {})[field] = value
    return sections


def make_config(args: argparse.Namespace) -> ExperimentConfig:
    """Preset, then the dataset, then every flag given. Errors name the flag."""
    try:
        config = PRESETS[args.preset]()
        if args.points:
            try:
                data = load_points(Path(args.points).read_bytes())
            except OSError as error:
                raise UsageError(f"--points: cannot read {args.points}: {error.strerror}") from None
            except PointsError as error:
                raise UsageError(f"--points: {args.points}: {error}") from None
            if args.dataset not in (None, "points"):
                raise UsageError("--points trains on your file; leave out --dataset or use --dataset points")
            config = config.replace(data=data)
        elif args.dataset == "points":
            raise UsageError("--dataset points needs --points FILE (a CSV with columns x,y)")
        elif args.dataset:
            config = config.replace(data={"name": args.dataset})
        return config.replace(**_overrides(args))
    except ValueError as error:
        raise UsageError(_name_flag(str(error))) from None


def _name_flag(message: str) -> str:
    for field, flag in FIELD_FLAGS.items():
        if message.startswith(field + " ") or message.startswith(field + ","):
            return f"{flag}: {message}"
    return message


def _check_writable_dir(flag: str, path: str | None) -> None:
    if path is None:
        return
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UsageError(f"{flag}: {path} exists and is not a folder")
    parent = next((p for p in [target, *target.parents] if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{flag}: cannot write in {parent}")


def _device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


class _Progress:
    """A one-line progress bar on stderr, only when it is a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.last = 0.0

    def update(self, step: int, total: int, loss: float) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.1 and step < total):
            return
        self.last = now
        filled = int(30 * step / total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {step}/{total} loss {loss:.4f}")
        if step == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _train(config: ExperimentConfig, device: torch.device, quiet: bool) -> Trainer:
    trainer = Trainer(config, device)
    progress = _Progress(enabled=not quiet)
    for record in trainer.run():
        progress.update(record.step, record.total_steps, record.loss)
        epoch_done = record.step % trainer.steps_per_epoch == 0
        if not quiet and epoch_done and record.epoch % 100 == 0:
            if progress.enabled:
                sys.stderr.write("\r\033[K")
            print(f"Epoch {record.epoch}, Loss: {record.loss:.4f}", flush=True)
    return trainer


def _write_outputs(out: Path, config, losses, trajectory, dataset) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "y"])
        writer.writerows(trajectory.samples.tolist())
    with open(out / "losses.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss"])
        writer.writerows(enumerate(losses, start=1))
    (out / "config.json").write_text(config.to_json())
    from ui import charts  # plotly lives with the dashboard's chart builders

    data = dataset.sample(len(trajectory.samples), torch.Generator().manual_seed(config.sampler.seed + 1))
    (out / "figure.html").write_text(charts.report_html(config, data.numpy(), trajectory, losses))


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = _device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # the MLP is tiny: more threads only add overhead (measured)
    config = make_config(args)
    for flag, path in (("--out", args.out), ("--save-checkpoint", args.save_checkpoint)):
        _check_writable_dir(flag, path)  # before training, so a typo costs nothing
    quiet = args.json
    losses: list[float] = []
    train_seconds = 0.0
    if args.load_checkpoint:
        try:
            model, loaded = checkpoints.load(args.load_checkpoint)
        except checkpoints.CheckpointError as error:
            raise UsageError(f"--load-checkpoint: {error}") from None
        config = loaded.replace(sampler=config.sampler)
        model = model.to(device)
        from .schedules import NoiseSchedule

        schedule = NoiseSchedule.from_config(config.schedule).to(device)
    else:
        try:
            trainer = _train(config, device, quiet)
        except TrainingDiverged as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        model, schedule = trainer.sampling_model(), trainer.schedule
        losses, train_seconds = trainer.losses, trainer.elapsed
        if args.save_checkpoint:
            try:
                checkpoints.save(model, config, args.save_checkpoint)
            except OSError as error:
                raise UsageError(f"--save-checkpoint: {error}") from None
    trajectory = sample_model(model, schedule, config.sampler, device=device)
    if not trajectory.finite:
        print("error: sampling produced NaN or inf; the model is unusable (try a lower learning rate)", file=sys.stderr)
        return 1
    dataset = make_dataset(config.data)
    metrics = evaluate(trajectory.samples, dataset).to_dict()
    if args.out:
        try:
            _write_outputs(Path(args.out), config, losses, trajectory, dataset)
        except OSError as error:
            raise UsageError(f"--out: {error}") from None
    if args.json:
        print(json.dumps({
            "config": config.to_dict(),
            "device": str(device),
            "final_loss": losses[-1] if losses else None,
            "train_seconds": train_seconds,
            "sample_seconds": trajectory.seconds,
            "metrics": metrics,
        }, indent=2))
        return 0
    print(f"Generated samples shape: {trajectory.samples.shape}")
    print(f"train {train_seconds:.2f} s, sample {trajectory.seconds:.2f} s on {device}")
    print(f"mean {metrics['mean'][0]:.3f}, {metrics['mean'][1]:.3f}   (data {metrics['data_mean'][0]:.3f}, {metrics['data_mean'][1]:.3f})")
    print(f"std  {metrics['std'][0]:.3f}, {metrics['std'][1]:.3f}   (data {metrics['data_std'][0]:.3f}, {metrics['data_std'][1]:.3f})")
    for name in ("energy_distance", "sliced_wasserstein", "mmd"):
        print(f"{name:<19} {metrics[name]:.5f}   floor {metrics[name + '_floor']:.5f}   ratio {metrics[name + '_ratio']:.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
