"""Your own points come back in your own units: the model trains on them standardised, and every
position shown or written goes back through the point set's offset and scale (page, command,
model file). And a script that starts a training job and exits ends cleanly."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from cli import command as cli
from diffusion import checkpoints, reference
from diffusion.config import PointSet
from diffusion.datasets import load_points, points_in_user_units
from diffusion.samplers import sample_model
from tests.pages import computing, fresh_caches, open_page, open_tab, poll_until, wait_finished  # noqa: F401
from tests.test_live_views import _decode, chart, trace

ROOT = Path(__file__).resolve().parents[1]


def cloud(n=400, centre=(5.0, -3.0), spread=1.0, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2)) * spread + np.array(centre)


def csv_bytes(points: np.ndarray) -> bytes:
    return ("x,y\n" + "\n".join(f"{x:.6f},{y:.6f}" for x, y in points)).encode()


@settings(max_examples=40, deadline=None)
@given(hs.lists(hs.tuples(hs.floats(-1e6, 1e6), hs.floats(-1e6, 1e6)), min_size=2, max_size=50), )
def test_standardise_then_back_is_the_identity(rows):
    points = np.array(rows, dtype=np.float64)
    if (points - points.mean(axis=0)).std() < 1e-6 * max(1.0, np.abs(points).max()):
        return  # no spread: refused elsewhere
    point_set = points_in_user_units(points)
    np.testing.assert_allclose(point_set.array.mean(axis=0), 0, atol=1e-5)
    assert point_set.array.std() == pytest.approx(1.0, rel=1e-5)
    back = point_set.to_user(point_set.array)
    np.testing.assert_allclose(back, points, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(points).max()))


def test_a_csv_remembers_its_units_and_the_units_travel_in_the_config_json():
    data = load_points(csv_bytes(cloud()))
    assert data.points.offset == pytest.approx(tuple(cloud().mean(axis=0)), abs=1e-6)
    assert data.points.scale == pytest.approx((cloud() - cloud().mean(axis=0)).std(), rel=1e-6)
    config = reference().replace(data=data)
    raw = config.to_dict()
    assert raw["data"]["points_offset"] == list(data.points.offset) and raw["data"]["points_scale"] == data.points.scale
    again = type(config).from_dict(raw, points=PointSet.from_array(data.points.array))
    assert again == config and again.data.points.offset == data.points.offset


def test_the_command_writes_samples_in_the_points_own_units(tmp_path):
    (tmp_path / "p.csv").write_bytes(csv_bytes(cloud()))
    code = cli.main(["--points", str(tmp_path / "p.csv"), "--timesteps", "100", "--epochs", "60", "--batch-size", "64",
                     "--preset", "improved", "--samples", "500", "--frames", "2", "--out", str(tmp_path / "out")])
    assert code == 0
    with open(tmp_path / "out" / "samples.csv") as f:
        samples = np.array([[float(r["x"]), float(r["y"])] for r in csv.DictReader(f)])
    # 500 samples of a model of N((5, -3), I): the mean within a few standard errors of (5, -3)
    # even for a rough model (its spread is at most a few units)
    assert np.abs(samples.mean(axis=0) - [5.0, -3.0]).max() < 0.5
    assert 0.3 < samples.std(axis=0).mean() < 3.0


def test_a_model_file_keeps_the_units_so_a_loaded_model_samples_in_them(tmp_path):
    from diffusion.training import Trainer

    config = reference().replace(data=load_points(csv_bytes(cloud())), schedule={"num_timesteps": 100},
                                 train={"epochs": 5, "batch_size": 64})
    trainer = Trainer(config).train()
    model, loaded = checkpoints.from_bytes(checkpoints.to_bytes(trainer.sampling_model(), config))
    assert loaded.data.points == config.data.points and loaded.data.points.offset == config.data.points.offset
    checkpoints.save(trainer.sampling_model(), config, tmp_path / "m")
    code = cli.main(["--load-checkpoint", str(tmp_path / "m"), "--samples", "300", "--frames", "2",
                     "--out", str(tmp_path / "out")])
    assert code == 0
    with open(tmp_path / "out" / "samples.csv") as f:
        samples = np.array([[float(r["x"]), float(r["y"])] for r in csv.DictReader(f)])
    sampler = loaded.sampler.__class__(**{**loaded.sampler.__dict__, "num_samples": 300, "num_frames": 2})
    direct = config.data.to_user(sample_model(model, trainer.schedule, sampler).samples)
    np.testing.assert_allclose(samples, direct, rtol=1e-6, atol=1e-6)


@pytest.mark.usefixtures("fresh_caches")
def test_the_page_draws_and_offers_samples_in_the_points_own_units():
    at = open_page(dataset="points", preset="improved")
    at.file_uploader(key="points_file").upload("shifted.csv", csv_bytes(cloud()), "text/csv").run()
    wait_finished(at)
    poll_until(open_tab(at, "samples"), lambda at: not computing(at))
    results = chart(at, "Generated samples")
    xs = _decode(trace(results, "Generated samples")["x"])
    ys = _decode(trace(results, "Generated samples")["y"])
    assert abs(xs.mean() - 5.0) < 0.6 and abs(ys.mean() + 3.0) < 0.6
    data_x = _decode(trace(results, "Original data")["x"])
    assert abs(data_x.mean() - 5.0) < 0.2  # the data itself, in the file's units
    assert any("the metrics are computed in the units the model trains in" in c.value for c in at.caption)


def test_a_script_that_starts_a_training_job_and_exits_returns_status_0():
    script = textwrap.dedent("""
        import time
        from diffusion import reference
        from runtime.registry import shared_registry
        registry = shared_registry()
        job = registry.new_job("script", reference().replace(train={"epochs": 20000}).training)
        registry.start(job)
        while job.step == 0:
            time.sleep(0.01)
        print("training", job.step > 0)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "training True"
    assert "terminate called" not in result.stderr


def test_to_model_undoes_to_user_and_the_scale_is_the_point_sets():
    from diffusion.config import DataConfig, PointSet

    points = PointSet.from_array(np.array([[0.0, 1.0], [-1.0, 0.5]]), offset=(100.0, -50.0), scale=10.0)
    data = DataConfig(name="points", points=PointSet(digest="d", array=points.array, offset=(100.0, -50.0), scale=10.0))
    user = np.array([[120.0, -45.0], [95.0, -60.0]])
    np.testing.assert_allclose(data.to_user(data.to_model(user)), user, rtol=1e-12)
    np.testing.assert_allclose(data.to_model(user), [[2.0, 0.5], [-0.5, -1.0]], rtol=1e-12)
    assert data.user_scale == 10.0 and DataConfig().user_scale == 1.0
    np.testing.assert_array_equal(DataConfig().to_model(user), user)
