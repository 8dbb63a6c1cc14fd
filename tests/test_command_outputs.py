"""The command's monitoring outputs: loss_by_t.csv and previews.csv (and their --json lists) against
an in-process recomputation from a ``Trainer``, and the samples untouched by the previews."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import pytest
import torch

from cli import command as cli
from diffusion.monitoring import (
    LOSS_BINS,
    LOSS_BY_T_COLUMNS,
    PREVIEW_COLUMNS,
    PREVIEW_POINTS,
    PREVIEW_STEPS,
    TAIL_FRACTION,
    LossByT,
    Previewer,
    first_tail_step,
    live_model,
    loss_floor_by_bin,
    preview_steps,
)
from diffusion.samplers import sample_model
from diffusion.schedules import NoiseSchedule
from diffusion.training import Trainer
from runtime.watch import NUM_PREVIEWS

SMALL = ["--timesteps", "100", "--epochs", "200", "--samples", "100", "--frames", "2", "--device", "cpu"]
T, TOTAL_STEPS = 100, 200  # the reference trains on fresh batches: one step per epoch


def _run(argv: list[str]) -> str:
    """``cli.main(argv)``, which must succeed; its stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0
    return out.getvalue()


def _config(argv: list[str]):
    return cli.make_config(cli.build_parser().parse_args(argv), argv)


def _read(path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


@pytest.fixture(scope="module")
def gaussian(tmp_path_factory):
    """One --json --out run of the reference Gaussian, its checkpoint, and the in-process
    reference: a trainer without previews, its records of the last 20% of steps, its samples."""
    folder = tmp_path_factory.mktemp("gaussian")
    argv = [*SMALL, "--out", str(folder / "out"), "--json", "--save-checkpoint", str(folder / "ckpt")]
    report = json.loads(_run(argv))
    config = _config(argv)
    plain = Trainer(config)
    tail = [(r.step, r.t.clone(), r.sample_losses.clone()) for r in plain.run() if r.step >= first_tail_step(TOTAL_STEPS)]
    samples = sample_model(plain.sampling_model(), plain.schedule, config.sampler).samples
    return {"folder": folder, "report": report, "config": config, "plain": plain, "tail": tail, "samples": samples}


def test_loss_by_t_csv_bins_the_last_fifth_of_the_training_loss(gaussian):
    columns, rows = _read(gaussian["folder"] / "out" / "loss_by_t.csv")
    assert tuple(columns) == LOSS_BY_T_COLUMNS == ("t_start", "t_end", "loss", "floor")
    assert len(rows) == 20
    starts, ends = [int(r["t_start"]) for r in rows], [int(r["t_end"]) for r in rows]
    assert starts[0] == 0 and ends[-1] == T and starts[1:] == ends[:-1]  # 0..T-1, no gap, no overlap
    assert all(e > s for s, e in zip(starts, ends, strict=True))

    # the same records fed to LossByT here: the same bits
    tail = gaussian["tail"]
    assert [step for step, _, _ in tail] == list(range(161, 201))  # the last 20% of 200 steps
    acc = LossByT.for_run(T, TOTAL_STEPS, 20)
    for step, t, losses in tail:
        acc.update(step, t, losses)
    snap = acc.snapshot()
    assert snap.tail_count.sum() == 40 * 128 and snap.tail_count.min() > 0
    written = np.array([float(r["loss"]) for r in rows])
    np.testing.assert_array_equal(written, snap.tail_loss)
    # and directly, bin by bin, from the (t, loss) pairs (only the summation order differs)
    t = torch.cat([t for _, t, _ in tail]).numpy()
    losses = torch.cat([loss for _, _, loss in tail]).double().numpy()
    direct = [losses[(t >= s) & (t < e)].mean() for s, e in zip(starts, ends, strict=True)]
    np.testing.assert_allclose(written, direct, rtol=1e-12)

    # one Gaussian: the exact floor, and the trained loss can't be far below it
    config = gaussian["config"]
    floor = loss_floor_by_bin(config.data, NoiseSchedule.from_config(config.schedule), 20)
    assert floor.kind == "exact"
    np.testing.assert_array_equal([float(r["floor"]) for r in rows], floor.values)


def test_previews_csv_scores_the_live_weights_at_the_documented_steps(gaussian):
    columns, rows = _read(gaussian["folder"] / "out" / "previews.csv")
    assert tuple(columns) == PREVIEW_COLUMNS == ("step", "energy_distance", "floor")
    steps = [int(r["step"]) for r in rows]
    assert steps == preview_steps(TOTAL_STEPS) == list(range(10, 201, 10))  # every ceil(200 / 20) steps
    config = gaussian["config"]
    watched = Trainer(config)
    previewer = Previewer(watched.schedule, watched.dataset, seed=config.train.seed, num_points=300, sample_steps=30)
    expected = {r.step: previewer.preview(live_model(watched), r.step) for r in watched.run() if r.step in steps}
    for row in rows:
        preview = expected[int(row["step"])]
        assert float(row["floor"]) == preview.floor == previewer.floor
        assert float(row["energy_distance"]) == preview.energy_distance  # same weights, same draws: same bits
    # scores fall as the model learns: the last preview is far better than the first
    assert float(rows[-1]["energy_distance"]) < float(rows[0]["energy_distance"]) / 2


def test_previews_leave_the_samples_and_the_losses_as_a_run_without_them(gaussian):
    """The command previewed 20 times while training; the samples it wrote are bit for bit those of
    the same config trained here without previews (sampling is seeded), and so are the losses."""
    _, rows = _read(gaussian["folder"] / "out" / "samples.csv")
    written = np.array([[float(r["x"]), float(r["y"])] for r in rows], dtype=np.float32)
    assert gaussian["samples"].dtype == np.float32
    np.testing.assert_array_equal(written, gaussian["samples"])
    _, rows = _read(gaussian["folder"] / "out" / "losses.csv")
    assert [float(r["loss"]) for r in rows] == gaussian["plain"].losses


def test_json_reports_the_same_rows(gaussian):
    report = gaussian["report"]
    assert list(report) == ["config", "device", "final_loss", "train_seconds", "sample_seconds", "metrics",
                            "loss_by_t", "previews"]
    _, loss_rows = _read(gaussian["folder"] / "out" / "loss_by_t.csv")
    _, preview_rows = _read(gaussian["folder"] / "out" / "previews.csv")
    assert [list(r) for r in report["loss_by_t"]] == [list(LOSS_BY_T_COLUMNS)] * 20
    assert [list(r) for r in report["previews"]] == [list(PREVIEW_COLUMNS)] * 20
    for mine, row in zip(report["loss_by_t"], loss_rows, strict=True):
        assert (mine["t_start"], mine["t_end"]) == (int(row["t_start"]), int(row["t_end"]))
        assert (mine["loss"], mine["floor"]) == (float(row["loss"]), float(row["floor"]))
    for mine, row in zip(report["previews"], preview_rows, strict=True):
        assert mine == {"step": int(row["step"]), "energy_distance": float(row["energy_distance"]),
                        "floor": float(row["floor"])}
    assert report["final_loss"] == gaussian["plain"].losses[-1]


def test_moons_have_no_floor_but_a_binned_loss(tmp_path):
    report = json.loads(_run([*SMALL, "--dataset", "moons", "--out", str(tmp_path), "--json"]))
    _, rows = _read(tmp_path / "loss_by_t.csv")
    assert len(rows) == 20
    assert all(r["floor"] == "" for r in rows) and all(float(r["loss"]) > 0 for r in rows)
    assert all(r["floor"] is None for r in report["loss_by_t"])
    _, previews = _read(tmp_path / "previews.csv")
    config = _config([*SMALL, "--dataset", "moons"])
    schedule = NoiseSchedule.from_config(config.schedule)
    floor = Previewer(schedule, config.data, seed=config.train.seed, num_points=300, sample_steps=30).floor
    assert [int(r["step"]) for r in previews] == list(range(10, 201, 10))
    assert all(float(r["floor"]) == floor for r in previews)


def test_a_loaded_checkpoint_writes_only_the_headers(gaussian, tmp_path):
    """No training, so no loss by t and no previews: the files hold their header, as losses.csv
    does, and the JSON lists are empty."""
    report = json.loads(_run([*SMALL, "--load-checkpoint", str(gaussian["folder"] / "ckpt"), "--out", str(tmp_path),
                              "--json"]))
    assert report["loss_by_t"] == [] and report["previews"] == [] and report["final_loss"] is None
    for name, columns in (("loss_by_t.csv", LOSS_BY_T_COLUMNS), ("previews.csv", PREVIEW_COLUMNS),
                          ("losses.csv", ("step", "loss"))):
        assert (tmp_path / name).read_text().splitlines() == [",".join(columns)]
    _, rows = _read(tmp_path / "samples.csv")  # the loaded weights sample like the trained ones
    written = np.array([[float(r["x"]), float(r["y"])] for r in rows], dtype=np.float32)
    assert gaussian["samples"].dtype == np.float32
    np.testing.assert_array_equal(written, gaussian["samples"])


def test_help_and_docstring_state_the_numbers_the_command_uses():
    """The words must follow the code: each number the help and the module docstring state is the
    constant the command runs with (a changed constant fails here until the text is changed)."""
    text = " ".join(cli.build_parser().format_help().split())
    doc = " ".join(cli.__doc__.split())
    tail_percent = round(TAIL_FRACTION * 100)
    assert f"the last {tail_percent}% of training in {LOSS_BINS} bins of t" in text
    assert (f"the page's {PREVIEW_POINTS}-point preview every ceil(total_steps / {NUM_PREVIEWS}) "
            "optimizer steps and at the final step" in text)
    assert f"over the last {tail_percent}% of the optimizer steps, in {LOSS_BINS} equal bins of t" in doc
    assert f"{PREVIEW_POINTS} points, {PREVIEW_STEPS} DDIM steps or T if fewer" in doc
    assert f"every ceil(total_steps / {NUM_PREVIEWS}) optimizer steps and at the final step, at most {NUM_PREVIEWS}" in doc
