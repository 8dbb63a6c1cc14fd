"""The headless command: ``python -m cli [--preset reference] [flags]`` (``python -m diffusion`` runs it too).

Trains, samples and scores one experiment without a browser. Bad input exits with status 2 and
one line naming the flag and what is allowed. Every setting's flag is derived from its
declaration in ``diffusion/config.py``. ``--out DIR`` also writes a standalone HTML figure, drawn
by the dashboard's chart builders (``charts``, plotly): this front end lives outside the core.

What the page watches during training, ``--out`` writes and ``--json`` reports (keys
``loss_by_t`` and ``previews``, the same rows; empty cells are null there):
  loss_by_t.csv  t_start,t_end,loss,floor: the per-sample loss over the last 20% of the optimizer
                 steps, in 20 equal bins of t (T bins if T < 20; t_end exclusive), beside the
                 irreducible loss of the bin (``monitoring.loss_floor_by_bin``: exact for one
                 Gaussian, numerical for a mixture, about 1.5 s; empty where unknown, and the loss
                 is empty in a bin no sample fell in);
  previews.csv   step,energy_distance,floor: the page's preview (``monitoring.Previewer`` seeded
                 with the training seed, 300 points, 30 DDIM steps or T if fewer; flow matching:
                 30 Euler steps) of the live
                 weights (the weight average when there is one), scored against the data. The page
                 refreshes previews about every 0.3 s of training; the command, to be the same on
                 every machine, takes them at fixed steps: every ceil(total_steps / 20) optimizer
                 steps and at the final step, at most 20 (``monitoring.preview_steps``).
Previews never change the trained weights, so the samples are those of a run without them; their
time is not in train_seconds. Without --out or --json neither is computed. With
--load-checkpoint nothing is trained: both files hold just their header and both lists are empty,
as losses.csv holds just its header.

``--out`` also writes field.csv (the learned and the ideal noise on a 21 x 21 grid at six noise
levels) and drift.csv (the sampler's x_t against the true q(x_t) at each kept frame), and with
``--budget`` budget.csv (energy distance over floor for DDPM, DDIM and DPM-Solver++ 2M at 5 to T
steps). ``--likelihood`` adds the model's exact NLL through the probability-flow ODE beside the
data's entropy (``diffusion.likelihood``), and with ``--out`` density.csv (x,y,log_p_model,log_p_true
on a 60 x 60 grid over the data, log_p_true empty where the data's density is unknown).

Flow matching (``--objective flow``, sampled with ``--sampler euler|heun`` and ``--sample-steps``,
trained with ``--coupling independent|ot``) writes the same files: field.csv's eps columns hold
the velocity v and its ideal v*, and its t is the level index k, time (k + 1) / T; drift.csv's t
is the frame's time times T (a float); loss_by_t's bins are of levels (level k holds the t in
[k / T, (k + 1) / T)), with no floor for the optimal-transport coupling; budget.csv has Euler and
Heun at 1, 2, 5, ... T steps.
With ``--points FILE`` every position written (samples.csv, figure.html, field.csv's x and y) is in
the file's own units; the model trains on the points standardised, and the metrics, losses and
noise vectors are in those standardised units.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffusion import checkpoints
from diffusion.budget import BUDGET_COLUMNS, budget_rows
from diffusion.config import (
    PRESET_PURPOSES,
    PRESETS,
    SECTIONS,
    Declared,
    ExperimentConfig,
    declared,
    experiment_settings,
)
from diffusion.datasets import PointsError, load_points, make_dataset
from diffusion.guidance import GUIDANCE_COLUMNS, GUIDANCE_SCALES, guidance_rows
from diffusion.ideal import drift_curve, field_at, field_grid, ideal_denoiser
from diffusion.likelihood import density_grid, network_model, nll_report
from diffusion.metrics import class_scores, evaluate
from diffusion.monitoring import LOSS_BY_T_COLUMNS, PREVIEW_COLUMNS, loss_by_t_rows, loss_floor_by_bin, preview_rows
from diffusion.objectives import path_of
from diffusion.paths import ObjectivePath
from diffusion.samplers import sample_model, training_salt
from diffusion.training import Trainer, TrainingDiverged
from runtime.watch import AtSteps, Watch

# config field -> the flags that set it (the current one first), for error messages
FIELD_FLAGS = {d.path: (d.flag, *d.setting.old_flags) for d in experiment_settings()}
FIELD_FLAGS["data.points"] = ("--points",)


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors, as one line
        raise UsageError(message)


def _true_or_false(text: str) -> bool:
    """A switch's value as links write it: true or false (or 1 or 0)."""
    if text.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false; got {text!r}")
    return text.lower() in ("true", "1")


def _add_setting(group, d: Declared) -> None:
    allowed = f" Allowed: {d.allowed()}."
    if d.kind is bool:  # `--clip-x0` alone means true; `--common-noise false` turns a switch off
        group.add_argument(d.flag, *d.setting.old_flags, dest=d.key, type=_true_or_false, nargs="?", const=True,
                           metavar="true|false", help=d.setting.help + " Alone it means true." + allowed)
        return
    kind = d.kind if d.kind in (int, float) else str
    extra = {"choices": d.choices} if d.choices is not None else {}
    group.add_argument(d.flag, *d.setting.old_flags, dest=d.key, type=kind, metavar=d.key.upper(),
                       help=d.setting.help + allowed, **extra)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m diffusion", description="Train and sample a 2-D DDPM headless.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="reference", help="starting point (default: reference): "
                   + " ".join(f"{name}: {purpose}" for name, purpose in PRESET_PURPOSES.items()))
    p.add_argument("--points", metavar="FILE", help="CSV with columns x,y: train on your own points")
    for name, cls in SECTIONS.items():
        group = p.add_argument_group(name)
        for d in declared(cls):
            _add_setting(group, d)
    g = p.add_argument_group("run")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--save-checkpoint", metavar="DIR", help="write model.safetensors + config.json")
    g.add_argument("--load-checkpoint", metavar="PATH", help="sample a saved model instead of training")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    g.add_argument("--budget", action="store_true", help=(
        "also sample the model with DDPM (respaced below T), DDIM at eta 0 and 1 and DPM-Solver++ 2M at 5, 10, "
        "20, 50, 100, 200, 500 and T steps (those up to T; flow: Euler and Heun at 1, 2, 5, ... steps), each "
        "scored by its energy distance and floor: written to "
        "budget.csv with --out, as \"budget\" with --json, else printed as a table. A conditional model "
        "(--conditional true) is also sampled for every class at guidance 0, 0.5, 1, 1.5, 2, 3, 5 and 8, each "
        "class scored by its energy distance over the floor and its spread against the class's: "
        "guidance.csv with --out, \"guidance\" with --json, else a table"))
    g.add_argument("--likelihood", action="store_true", help=(
        "also compute the model's exact log-likelihood through the probability-flow ODE (Heun with "
        "--ode-steps and twice as many, Richardson-extrapolated) on 1000 fresh data points: adds nll, "
        "entropy (where the data's density is known) and kl_estimate = mean(log p_data - log p_model), each "
        "with its standard error, and the solver's error, to --json's output (else printed), in the data's own "
        "units (with --points: the file's); with --out "
        "writes density.csv: x,y,log_p_model,log_p_true on a 60 x 60 grid over the data (log_p_true empty "
        "where unknown), positions and densities in the data's own units"))
    g.add_argument("--out", metavar="DIR", help=(
        "write samples.csv, losses.csv, config.json, figure.html, loss_by_t.csv (the loss over the last "
        "20%% of training in 20 bins of t, beside its floor) and previews.csv (the page's 300-point "
        "preview every ceil(total_steps / 20) optimizer steps and at the final step); after "
        "--load-checkpoint the last two hold just their header"))
    return p


def _overrides(args: argparse.Namespace) -> dict[str, dict]:
    sections: dict[str, dict] = {}
    for d in experiment_settings():
        value = getattr(args, d.key)
        if value is not None and d.section != "data":
            sections.setdefault(d.section, {})[d.name] = value
    return sections


def make_config(args: argparse.Namespace, argv: list[str] = ()) -> ExperimentConfig:
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
        raise UsageError(_name_flag(str(error), list(argv))) from None


def _name_flag(message: str, argv: list[str]) -> str:
    """Prefix the flag that set the field the message names (the one the user typed)."""
    for field, flags in FIELD_FLAGS.items():
        if message.startswith(field + " ") or message.startswith(field + ","):
            typed = [f for f in flags if any(a == f or a.startswith(f + "=") for a in argv)]
            return f"{(typed or flags)[0]}: {message}"
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


@dataclass(frozen=True)
class Watched:
    """What the command saw while training: the rows of loss_by_t.csv and previews.csv (as
    ``monitoring.loss_by_t_rows`` and ``preview_rows`` give them); empty when nothing was trained."""

    loss_by_t: tuple[dict, ...] = ()
    previews: tuple[dict, ...] = ()


def _train(config: ExperimentConfig, device: torch.device, quiet: bool, watch: bool) -> tuple[Trainer, Watched]:
    """Train to the end; with ``watch``, also bin the loss by t and take the previews at fixed
    steps (the runtime's ``Watch``, as the page's runs are watched, with the command's policy)."""
    trainer = Trainer(config, device)
    progress = _Progress(enabled=not quiet)
    watcher = Watch(config.training, trainer, AtSteps.for_run(trainer.total_steps)) if watch else None
    for record in trainer.run():
        if watcher is not None:
            watcher.record(record)
        progress.update(record.step, record.total_steps, record.loss)
        epoch_done = record.step % trainer.steps_per_epoch == 0
        if not quiet and epoch_done and record.epoch % 100 == 0:
            if progress.enabled:
                sys.stderr.write("\r\033[K")
            print(f"Epoch {record.epoch}, Loss: {record.loss:.4f}", flush=True)
    if watcher is None:
        return trainer, Watched()
    floor = loss_floor_by_bin(trainer.dataset, path_of(config.schedule), watcher.loss_by_t.num_bins,
                              coupling=config.train.coupling)
    return trainer, Watched(tuple(loss_by_t_rows(watcher.loss_by_t.snapshot(), floor)),
                            tuple(preview_rows(watcher.previews)))


def _json_row(row: dict) -> dict:
    """A CSV row for JSON: an empty cell or a non-finite number becomes null."""
    return {k: None if v == "" or isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def _write_outputs(out: Path, config, losses, trajectory, dataset, watched: Watched, *, model, schedule) -> None:
    out.mkdir(parents=True, exist_ok=True)
    user = config.data.to_user  # samples, figure and field positions in the points' own units (--points)
    with open(out / "samples.csv", "w", newline="") as f:
        writer = csv.writer(f)
        if trajectory.labels is None:
            writer.writerow(["x", "y"])
            writer.writerows(user(trajectory.samples).tolist())
        else:  # a conditional model: each point's class by name, as a labelled CSV names it
            names = config.data.classes
            writer.writerow(["x", "y", "label"])
            writer.writerows([*p, names[k]] for p, k in zip(user(trajectory.samples).tolist(), trajectory.labels.tolist(), strict=True))
    with open(out / "losses.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss"])
        writer.writerows(enumerate(losses, start=1))
    for name, columns, rows in (("loss_by_t.csv", LOSS_BY_T_COLUMNS, watched.loss_by_t),
                                ("previews.csv", PREVIEW_COLUMNS, watched.previews)):
        with open(out / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    (out / "config.json").write_text(config.to_json())
    _write_field_and_drift(out, config, model, schedule, trajectory, dataset)
    import charts  # plotly: imported only when a figure is written

    data = dataset.sample(len(trajectory.samples), torch.Generator().manual_seed(config.sampler.seed + 1))
    shown = dataclasses.replace(trajectory, frames=user(trajectory.frames), predicted_x0=user(trajectory.predicted_x0))
    (out / "figure.html").write_text(charts.report_html(config, user(data.numpy()), shown, losses))


FIELD_COLUMNS = ("t", "x", "y", "eps_x", "eps_y", "ideal_x", "ideal_y")
DRIFT_COLUMNS = ("t", "energy_distance", "floor")


def _write_field_and_drift(out: Path, config, model, schedule: ObjectivePath, trajectory, dataset) -> None:
    """field.csv: the learned eps_theta and the ideal eps* (``diffusion.ideal``: exact for a Gaussian
    or mixture, else of a fixed 20,000-point sample or of the user's points) on a 21 x 21 grid
    spanning the data (20,000 draws, seed 0) padded by its standard deviation, at t = 0, T/10, T/4,
    T/2, 3T/4 and T - 1 (model indices, rounded down; repeats dropped when T < 10), rows x fastest.
    drift.csv: at each kept frame time of the trajectory (T ... 0), the energy distance between the
    sampler's x_t and as many points of the true q(x_t) (seed: the sampling seed + 1), and its floor."""
    T = schedule.num_timesteps
    times = dict.fromkeys([0, T // 10, T // 4, T // 2, 3 * T // 4, T - 1])  # ordered, no repeats
    ideal = ideal_denoiser(dataset, schedule)
    grid = field_grid(dataset.sample(20_000, torch.Generator().manual_seed(0)).numpy(), num=21, pad=1.0)
    with open(out / "field.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FIELD_COLUMNS)
        for t in times:
            frame = field_at(model, ideal, schedule, t, grid)
            positions = config.data.to_user(frame.points)  # eps stays in the model's (unitless) noise
            for (x, y), (ex, ey), (ix, iy) in zip(positions.tolist(), frame.learned.tolist(), frame.ideal.tolist(),
                                              strict=True):
                writer.writerow([t, x, y, ex, ey, ix, iy])
    coupled = schedule.batch_coupled(config.train.coupling)
    drift = drift_curve(trajectory, dataset, schedule, seed=config.sampler.seed + 1,
                        ot_batch=config.train.batch_size if coupled else None)
    with open(out / "drift.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(DRIFT_COLUMNS)
        writer.writerows(zip(drift.times.tolist(), drift.energy_distance.tolist(), drift.floor.tolist(), strict=True))


def _budget(args: argparse.Namespace, model, schedule: ObjectivePath, config: ExperimentConfig, dataset,
            device: torch.device) -> list[dict] | None:
    """With --budget, the budget's rows (``diffusion.budget``) for the sampler's sample count, seed,
    DDPM variance and clipping, with a progress bar on a terminal: written to DIR/budget.csv with
    --out, and returned (for --json, or ``_print_budget``). None without --budget."""
    if not args.budget:
        return None
    show = not args.json and sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if show:
            sys.stderr.write(f"\rbudget [{'#' * (30 * done // total)}{'.' * (30 - 30 * done // total)}] {done}/{total}")
            sys.stderr.write("\n" if done == total else "")
            sys.stderr.flush()

    s = config.sampler
    rows = [row.to_dict() for row in budget_rows(
        model, schedule, dataset, num_samples=s.num_samples, seed=s.seed, variance=s.variance, clip_x0=s.clip_x0,
        device=device, on_progress=progress)]
    if args.out:
        _write_rows(Path(args.out), "budget.csv", BUDGET_COLUMNS, rows)
    return rows


def _write_rows(out: Path, name: str, columns, rows: list[dict]) -> None:
    """DIR/name as CSV with a header of ``columns``; an OSError becomes --out's usage error."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as error:
        raise UsageError(f"--out: {error}") from None


def _guidance(args: argparse.Namespace, model, schedule: ObjectivePath, config: ExperimentConfig, dataset) -> list[dict] | None:
    """With --budget and a conditional model, the guidance sweep's rows (``diffusion.guidance``):
    written to DIR/guidance.csv with --out, and returned. None otherwise."""
    if not args.budget or not config.train.conditional:
        return None
    scales = GUIDANCE_SCALES if config.train.label_dropout > 0 else (1.0,)
    rows = guidance_rows(model, schedule, config, dataset, scales=scales, run_salt=training_salt(config.training))
    if args.out:
        _write_rows(Path(args.out), "guidance.csv", GUIDANCE_COLUMNS, rows)
    return rows


def _print_guidance(rows: list[dict]) -> None:
    print("guidance  class               energy distance / floor   spread / class's")
    for row in rows:
        print(f"{row['guidance']:>8g}  {row['name']:<18}  {row['energy_distance_ratio']:>23.2f}   {row['spread_ratio']:>16.2f}")


DENSITY_COLUMNS = ("x", "y", "log_p_model", "log_p_true")


def _likelihood(args: argparse.Namespace, model, config: ExperimentConfig, dataset) -> dict | None:
    """With --likelihood, the NLL report (``diffusion.likelihood``) as the JSON's keys, and with
    --out density.csv in the data's own units. None without --likelihood."""
    if not args.likelihood:
        return None
    path, steps = path_of(config.schedule), config.sampler.likelihood_steps
    net = network_model(model)
    report = nll_report(net, path, dataset, steps=steps).to_dict()
    shift = 2 * math.log(config.data.user_scale)  # a density per unit area of the user's axes: log p - 2 log scale
    report["nll"] += shift  # in the data's own units, as density.csv (KL and errors have no unit)
    if report["entropy"] is not None:
        report["entropy"] += shift
    if args.out:
        grid = density_grid(net, path, dataset, steps=steps)
        try:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            with open(Path(args.out) / "density.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(DENSITY_COLUMNS)
                for x, y, model_lp, true_lp in grid.rows():
                    ux, uy = config.data.to_user(np.array([[x, y]]))[0].tolist()
                    writer.writerow([ux, uy, model_lp - shift, "" if true_lp is None else true_lp - shift])
        except OSError as error:
            raise UsageError(f"--out: {error}") from None
    return report


def _print_budget(rows: list[dict]) -> None:
    """The budget as a table (without --out or --json)."""
    print(f"{'sampler':<8}{'eta':>5}{'steps':>7}{'calls':>7}{'seconds':>9}{'energy':>10}{'floor':>10}{'ratio':>7}")
    for r in rows:
        eta = "" if r["eta"] is None else f"{r['eta']:g}"
        ratio = r["energy_distance"] / r["floor"] if r["floor"] > 0 else float("nan")
        print(f"{r['sampler']:<8}{eta:>5}{r['steps']:>7}{r['model_calls']:>7}{r['seconds']:>9.3f}"
              f"{r['energy_distance']:>10.5f}{r['floor']:>10.5f}{ratio:>7.2f}")


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    device = _device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # the MLP is tiny: more threads only add overhead (measured)
    config = make_config(args, argv)
    for flag, path in (("--out", args.out), ("--save-checkpoint", args.save_checkpoint)):
        _check_writable_dir(flag, path)  # before training, so a typo costs nothing
    quiet = args.json
    losses: list[float] = []
    train_seconds = 0.0
    watched = Watched()
    if args.load_checkpoint:
        try:
            model, loaded = checkpoints.load(args.load_checkpoint)
        except checkpoints.CheckpointError as error:
            raise UsageError(f"--load-checkpoint: {error}") from None
        config = loaded.replace(sampler=config.sampler)
        model = model.to(device)
        schedule = path_of(config.schedule).to(device)
    else:
        try:
            trainer, watched = _train(config, device, quiet, watch=bool(args.out or args.json))
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
    trajectory = sample_model(model, schedule, config.sampler, device=device, run_salt=training_salt(config.training))
    if not trajectory.finite:
        print("error: sampling produced NaN or inf; the model is unusable (try a lower learning rate)", file=sys.stderr)
        return 1
    dataset = make_dataset(config.data)
    metrics = evaluate(trajectory.samples, dataset).to_dict()
    classes = ([score.to_dict() for score in class_scores(trajectory.samples, trajectory.labels, dataset, config.data.classes)]
               if trajectory.labels is not None else None)
    budget = _budget(args, model, schedule, config, dataset, device)
    guidance = _guidance(args, model, schedule, config, dataset)
    likelihood = _likelihood(args, model, config, dataset)
    if args.out:
        try:
            _write_outputs(Path(args.out), config, losses, trajectory, dataset, watched, model=model, schedule=schedule)
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
            "loss_by_t": [_json_row(row) for row in watched.loss_by_t],
            "previews": [_json_row(row) for row in watched.previews],
            **({"budget": [_json_row(row) for row in budget]} if budget is not None else {}),
            **({"classes": classes} if classes is not None else {}),
            **({"guidance": [_json_row(row) for row in guidance]} if guidance is not None else {}),
            **(likelihood or {}),
        }, indent=2))
        return 0
    print(f"Generated samples shape: {trajectory.samples.shape}")
    print(f"train {train_seconds:.2f} s, sample {trajectory.seconds:.2f} s on {device}")
    print(f"mean {metrics['mean'][0]:.3f}, {metrics['mean'][1]:.3f}   (data {metrics['data_mean'][0]:.3f}, {metrics['data_mean'][1]:.3f})")
    print(f"std  {metrics['std'][0]:.3f}, {metrics['std'][1]:.3f}   (data {metrics['data_std'][0]:.3f}, {metrics['data_std'][1]:.3f})")
    for name in ("energy_distance", "sliced_wasserstein", "mmd"):
        print(f"{name:<19} {metrics[name]:.5f}   floor {metrics[name + '_floor']:.5f}   ratio {metrics[name + '_ratio']:.2f}")
    for row in classes or ():
        print(f"class {row['class']} ({row['name']}): {row['count']} samples, energy distance ratio "
              f"{row['energy_distance_ratio']:.2f}, spread {row['spread_ratio']:.2f} of the class's")
    if likelihood is not None:
        def shown(name):
            value, error = likelihood[name], likelihood[name + "_se"]
            return "unknown" if value is None else f"{value:.3f} ± {error:.3f}"
        print(f"nll {shown('nll')} nats   entropy {shown('entropy')}   nll - entropy {shown('kl_estimate')}   "
              f"(ODE: {likelihood['ode_steps']} and {2 * likelihood['ode_steps']} Heun steps, error "
              f"{likelihood['ode_error']:.4f})")
    if budget is not None and not args.out:
        _print_budget(budget)
    if guidance is not None and not args.out:
        _print_guidance(guidance)
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
