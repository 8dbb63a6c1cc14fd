"""Classifier-free guidance (issue 25): labelled data, the conditional network and its label
dropout, guided sampling for every sampler, the closed-form tilt, per-class metrics, the command."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math

import pytest
import torch
import torch.nn.functional as F

from cli import command as cli
from diffusion import improved
from diffusion.config import DATASET_CLASSES, DenoiserConfig, ExperimentConfig, SamplerConfig, ScheduleConfig
from diffusion.datasets import GaussianMixture, make_dataset
from diffusion.denoiser import Denoiser
from diffusion.guidance import GUIDANCE_SCALES, guidance_rows
from diffusion.ideal import GuidedIdeal, IdealDenoiser, class_ideal, guided_ideal, ideal_denoiser, tilted_gaussian
from diffusion.metrics import CLASS_PAIRS, CLASS_REFERENCE_SIZE, OneClass, class_scores, energy_distance, rms_spread
from diffusion.objectives import path_of
from diffusion.samplers import class_labels, sample, sample_model
from diffusion.schedules import make_schedule
from diffusion.training import Trainer

LABELLED = [name for name, classes in DATASET_CLASSES.items() if classes]


def small(dataset: str = "moons", **train) -> ExperimentConfig:
    """A quick conditional run: T = 50, a 32-wide network, 300 steps of 128."""
    return ExperimentConfig().replace(
        data={"name": dataset}, schedule={"num_timesteps": 50}, denoiser={"hidden": 32},
        train={"conditional": True, "epochs": 300, **train}, sampler={"num_samples": 200, "num_frames": 2})


# --- labelled data ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*LABELLED, "gaussian", "swiss_roll"])
def test_labelled_draws_are_the_plain_draws(name, gen):
    dataset = make_dataset(ExperimentConfig().data.__class__(name))
    x, labels = dataset.sample_labelled(500, gen(7))
    assert torch.equal(x, dataset.sample(500, gen(7)))  # unconditional runs keep their random stream
    assert labels.dtype == torch.long and labels.shape == (500,)
    classes = max(len(DATASET_CLASSES[name]), 1)
    assert labels.min() >= 0 and labels.max() < classes


@pytest.mark.parametrize("name", LABELLED)
def test_every_class_has_its_share(name, gen):
    """Every built-in class is equally likely: each count within 5 binomial standard deviations."""
    k = len(DATASET_CLASSES[name])
    n = 20_000
    _, labels = make_dataset(ExperimentConfig().data.__class__(name)).sample_labelled(n, gen(1))
    counts = torch.bincount(labels, minlength=k).double()
    sd = math.sqrt(n * (1 / k) * (1 - 1 / k))
    assert (counts - n / k).abs().max() < 5 * sd


def test_labels_name_the_geometry(gen):
    data = ExperimentConfig().data.__class__
    x, y = make_dataset(data("circles")).sample_labelled(2000, gen(0))
    radius = x.norm(dim=1)
    assert (radius[y == 0] > 1.5).all() and (radius[y == 1] < 1.5).all()  # outer then inner
    x, y = make_dataset(data("ring")).sample_labelled(2000, gen(0))
    angle = torch.atan2(x[:, 1], x[:, 0]) % (2 * math.pi)
    nearest = torch.round(angle / (math.pi / 4)).long() % 8
    assert torch.equal(nearest, y)  # component k sits at 45 k degrees
    x, y = make_dataset(data("checkerboard")).sample_labelled(2000, gen(0))
    column, row = torch.floor(x[:, 0]) + 2, torch.floor(x[:, 1]) + 2  # 0..3 each
    assert torch.equal(2 * column.long() + (row >= 2).long(), y)  # column by column, bottom to top
    x, y = make_dataset(data("moons")).sample_labelled(4000, gen(0))
    assert x[y == 0, 1].mean() > 0.3 and x[y == 1, 1].mean() < -0.3  # the upper moon is 0


# --- settings ------------------------------------------------------------------------------------


def test_conditional_needs_classes_and_names_the_datasets_that_have_them():
    with pytest.raises(ValueError, match="train.conditional needs data with classes; 'gaussian' has none. "
                                         "Datasets with classes: ring, moons, circles, checkerboard, spiral"):
        ExperimentConfig().replace(train={"conditional": True})


def test_class_and_guidance_are_checked_against_the_run():
    config = small("moons")
    with pytest.raises(ValueError, match=r"sampler.class_label must be a whole number from -1 to 1 \(-1 or a class"):
        config.replace(sampler={"class_label": 2})
    with pytest.raises(ValueError, match="guidance 2 needs the unconditional model, which a label dropout of 0"):
        config.replace(train={"label_dropout": 0.0}, sampler={"guidance": 2.0})
    config.replace(train={"label_dropout": 0.0}, sampler={"guidance": 1.0, "class_label": 1})  # allowed


def test_guidance_doubles_the_sampling_work_but_not_at_0_or_1():
    config = small("ring")
    assert config.training.num_classes == 8
    assert config.training.parameter_count == config.denoiser.parameter_count + 9 * 32  # one-hot of 8 + null
    from diffusion.config import guidance_calls

    assert [guidance_calls(config.train, config.replace(sampler={"guidance": w}).sampler) for w in (0.0, 1.0, 2.5)] == [1, 1, 2]


# --- the network -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net():
    config = DenoiserConfig(hidden=16, time_embedding="sinusoidal", position_embedding="fourier", position_dim=4)
    return Denoiser(config, 40, torch.Generator().manual_seed(2), num_classes=3)


def test_the_class_is_a_one_hot_input_and_none_is_the_null_class(net, gen):
    x, t = torch.randn(6, 2, generator=gen(1)), torch.randint(0, 40, (6,), generator=gen(2))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    inputs = net.inputs(x, t, labels)
    assert torch.equal(inputs[:, -4:], F.one_hot(labels, 4).float())
    assert torch.equal(net(x, t), net(x, t, torch.full((6,), net.null_class)))
    assert not torch.allclose(net(x, t, torch.zeros(6, dtype=torch.long)), net(x, t))


def test_the_backward_pass_with_classes_equals_autograd(net, gen):
    g = gen(3)
    x, target = torch.randn(33, 2, generator=g), torch.randn(33, 2, generator=g)
    t, labels = torch.randint(0, 40, (33,), generator=g), torch.randint(0, 4, (33,), generator=g)
    loss, _, grads = net.losses_and_grads(x, t, target, labels)
    expected = F.mse_loss(net(x, t, labels), target)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-6, atol=1e-7)
    for mine, theirs in zip(grads, torch.autograd.grad(expected, list(net.parameters())), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)


def test_guided_prediction_is_u_plus_w_times_c_minus_u(net, gen):
    x = torch.randn(5, 2, generator=gen(4))
    labels = torch.tensor([0, 1, 2, 0, 1])
    t = 17
    times = torch.full((5,), t)
    with torch.no_grad():
        u, c = net(x, times), net(x, times, labels)
        torch.testing.assert_close(net.at_fixed_times(labels)(x, t), c, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net.guided(labels, 0.0)(x, t), u, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net.guided(labels, 1.0)(x, t), c, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net.guided(labels, 3.5)(x, t), u + 3.5 * (c - u), rtol=1e-5, atol=1e-5)


def test_class_labels_every_class_in_equal_shares_or_one():
    assert class_labels(SamplerConfig(), 0, 5) is None
    assert class_labels(SamplerConfig(), 3, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert class_labels(SamplerConfig(class_label=2), 3, 4).tolist() == [2, 2, 2, 2]


# --- training ------------------------------------------------------------------------------------


def test_label_dropout_sends_its_share_to_the_null_class_and_leaves_plain_runs_alone(monkeypatch):
    seen = []
    trainer = Trainer(small("ring", label_dropout=0.3, epochs=40))
    original = trainer.model.losses_and_grads

    def spy(x, t, target, labels=None):
        seen.append(labels.clone())
        return original(x, t, target, labels)

    monkeypatch.setattr(trainer.model, "losses_and_grads", spy)
    trainer.train()
    labels = torch.cat(seen)
    n, p = len(labels), 0.3
    dropped = int((labels == 8).sum())
    assert abs(dropped - n * p) < 5 * math.sqrt(n * p * (1 - p))
    assert labels.max() == 8 and torch.bincount(labels[labels < 8], minlength=8).min() > 0


def test_conditional_training_is_reproducible():
    a, b = Trainer(small("spiral", epochs=30)).train(), Trainer(small("spiral", epochs=30)).train()
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_at_guidance_0_the_conditional_model_samples_the_unconditional_distribution():
    """Trained with half its labels dropped, the conditional model at w = 0 draws the same
    distribution as a model trained without labels: their two sample sets' energy distance is
    within 3 floors (two independent perfect samplers: 1 on average), while the same model asked
    for one class (w = 1) is far from both (one moon is not two)."""
    base = ExperimentConfig().replace(
        data={"name": "moons"}, schedule={"num_timesteps": 100}, denoiser={"hidden": 64, "time_embedding": "sinusoidal"},
        train={"epochs": 1500, "batch_size": 256, "lr": 3e-3, "lr_schedule": "cosine", "ema_decay": 0.99},
        sampler={"num_samples": 1000, "num_frames": 2})
    plain = Trainer(base).train()
    conditional_config = base.replace(train={"conditional": True, "label_dropout": 0.5})
    conditional = Trainer(conditional_config).train()
    s = plain.sampling_model(), conditional.sampling_model()
    x_plain = sample_model(s[0], plain.schedule, base.sampler).samples
    x_zero = sample_model(s[1], conditional.schedule, conditional_config.replace(sampler={"guidance": 0.0}).sampler).samples
    x_one = sample_model(s[1], conditional.schedule, conditional_config.replace(sampler={"class_label": 0}).sampler).samples
    data = make_dataset(base.data)
    g = torch.Generator().manual_seed(5)
    a, b = data.sample(20_000, g).double(), data.sample(20_000, g).double()
    floor = (2 / 1000) * float((a - b).norm(dim=1).mean())
    assert energy_distance(torch.as_tensor(x_plain), torch.as_tensor(x_zero)) < 3 * floor
    assert energy_distance(torch.as_tensor(x_plain), torch.as_tensor(x_one)) > 20 * floor


# --- the ideal guided field: the closed-form tilt ------------------------------------------------------


COND = GaussianMixture(((1.0, 0.5),), (0.5,), (1.0,))
UNCOND = GaussianMixture(((-1.0, 0.0),), (0.5,), (1.0,))


def test_tilted_gaussian_in_closed_form():
    tilt = tilted_gaussian(COND, UNCOND, 3.0)
    assert tilt.means[0] == pytest.approx((5.0, 1.5)) and tilt.stds[0] == pytest.approx(0.5)
    wide = GaussianMixture(((0.0, 0.0),), (1.0,), (1.0,))
    tilt = tilted_gaussian(COND, wide, 2.0)  # precision 2 / 0.25 - 1 = 7
    assert tilt.stds[0] == pytest.approx(7 ** -0.5) and tilt.means[0] == pytest.approx((8 / 7, 4 / 7))
    with pytest.raises(ValueError, match="no density"):
        tilted_gaussian(wide, COND, 2.0)  # precision 2 - 4 < 0


@pytest.mark.parametrize("kind, steps", [("ddpm", 0), ("ddim", 100), ("dpm_solver", 30), ("euler", 200), ("heun", 40)])
@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0])
def test_guided_sampling_with_the_ideal_fields_draws_the_tilted_gaussian(kind, steps, scale):
    """Two Gaussians of one spread: every sampler following u* + w (c* - u*) ends at
    N(w m_c + (1 - w) m_u, s^2 I). 4000 samples: the mean within 5 standard errors (5 x 0.5 /
    sqrt(4000) = 0.04) plus 0.03 for the solver, the spread within 5 standard errors of a standard
    deviation (5 x 0.5 / sqrt(2 x 4000) = 0.028) plus 0.02."""
    path = (path_of(ScheduleConfig(objective="flow", num_timesteps=50)) if kind in ("euler", "heun")
            else make_schedule("linear", 1000, 1e-4, 0.02))
    ideal = GuidedIdeal(IdealDenoiser(path, "exact", "", mixture=UNCOND),
                        IdealDenoiser(path, "exact", "", mixture=COND), scale)
    config = SamplerConfig(kind=kind, sample_steps=max(steps, 1), num_samples=4000, num_frames=2)
    samples = torch.as_tensor(sample(ideal, path, config, torch.Generator().manual_seed(11)).samples).double()
    tilt = tilted_gaussian(COND, UNCOND, scale)
    assert (samples.mean(0) - torch.tensor(tilt.means[0])).abs().max() < 0.07
    assert (samples.std(0) - tilt.stds[0]).abs().max() < 0.05


def test_the_guided_ideal_of_the_ring_is_the_combination_of_its_class_and_its_mixture(schedule, gen):
    data = ExperimentConfig().data.__class__("ring")
    x = torch.randn(50, 2, generator=gen(0)) * 2
    guided = guided_ideal(data, schedule, 3, 2.0)
    u = ideal_denoiser(data, schedule).predict(x, 300)
    c = make_dataset(data).component(3).optimal_eps(x, torch.full((50,), 300), schedule)
    torch.testing.assert_close(guided(x, 300), u + 2.0 * (c - u))
    moons = class_ideal(ExperimentConfig().data.__class__("moons"), schedule, 1, reference_points=2000)
    assert moons.kind == "empirical" and (moons.points[:, 1].mean() < 0)  # the lower moon's own points


# --- per-class metrics -------------------------------------------------------------------------------


def test_one_class_draws_only_that_class(gen):
    data = make_dataset(ExperimentConfig().data.__class__("circles"))
    inner = OneClass(data, 1).sample(3000, gen(0))
    assert inner.shape == (3000, 2) and (inner.norm(dim=1) < 1.5).all()


def test_class_scores_against_direct_computation(gen):
    data = make_dataset(ExperimentConfig().data.__class__("moons"))
    x, labels = data.sample_labelled(600, gen(9))
    labels[:5] = 1 - labels[:5]  # a few points given the wrong class
    scores = class_scores(x, labels, data, DATASET_CLASSES["moons"], seed=100)
    assert [s.label for s in scores] == [0, 1]
    for score in scores:
        mine = x[labels == score.label].double()
        g = torch.Generator().manual_seed(100 + score.label)
        truth = OneClass(data, score.label)
        reference = truth.sample(CLASS_REFERENCE_SIZE, g).double()
        a, b = truth.sample(CLASS_PAIRS, g).double(), truth.sample(CLASS_PAIRS, g).double()
        assert score.count == len(mine)
        assert score.energy_distance.value == pytest.approx(energy_distance(mine, reference), rel=1e-12)
        floor = (1 / len(mine) + 1 / CLASS_REFERENCE_SIZE) * float((a - b).norm(dim=1).mean())
        assert score.energy_distance.floor == pytest.approx(floor, rel=1e-12)
        assert score.spread == pytest.approx(rms_spread(mine) / rms_spread(torch.cat([a, b])), rel=1e-12)


def test_a_class_squeezed_to_its_mean_scores_a_small_spread(gen):
    data = make_dataset(ExperimentConfig().data.__class__("ring"))
    x, labels = data.sample_labelled(800, gen(1))
    means = torch.tensor(data.means, dtype=torch.float32)[labels]
    squeezed = means + 0.5 * (x - means)
    spreads = [s.spread for s in class_scores(squeezed, labels, data, DATASET_CLASSES["ring"])]
    # each class's true spread is 0.15 sqrt(2); half of it, up to the sample's own error (~3% at 100 points)
    assert all(0.4 < s < 0.6 for s in spreads)


# --- the sweep and the command ------------------------------------------------------------------------


def test_the_guidance_sweep_scores_every_class_at_every_scale():
    config = small("moons", label_dropout=0.2)
    trainer = Trainer(config).train()
    rows = guidance_rows(trainer.sampling_model(), trainer.schedule, config, trainer.dataset, scales=(0.0, 1.0, 4.0))
    assert [(r["guidance"], r["class"]) for r in rows] == [(w, k) for w in (0.0, 1.0, 4.0) for k in (0, 1)]
    assert all(r["count"] == 100 for r in rows)
    with pytest.raises(ValueError, match="scales other than 1 need the unconditional model"):
        guidance_rows(trainer.sampling_model(), trainer.schedule, config.replace(train={"label_dropout": 0.0}),
                      trainer.dataset, scales=(2.0,))


def _run(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0
    return out.getvalue()


SMALL = ["--dataset", "moons", "--conditional", "true", "--timesteps", "50", "--epochs", "100", "--hidden", "32",
         "--samples", "100", "--frames", "2", "--device", "cpu"]


def test_the_command_writes_labels_per_class_scores_and_the_guidance_table(tmp_path):
    out = json.loads(_run([*SMALL, "--guidance", "2", "--budget", "--json", "--out", str(tmp_path)]))
    assert out["config"]["sampler"]["guidance"] == 2.0 and out["config"]["train"]["conditional"] is True
    assert [c["name"] for c in out["classes"]] == ["upper moon", "lower moon"]
    assert [c["count"] for c in out["classes"]] == [50, 50]
    with open(tmp_path / "samples.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows[:4]] == ["upper moon", "lower moon", "upper moon", "lower moon"]
    with open(tmp_path / "guidance.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(float(r["guidance"]), r["name"]) for r in table] == [
        (w, name) for w in GUIDANCE_SCALES for name in ("upper moon", "lower moon")]
    assert out["guidance"] == [{k: (float(v) if k not in ("name",) else v) if k not in ("class", "count") else int(v)
                                for k, v in r.items()} for r in table]


def test_the_command_samples_one_class(tmp_path):
    text = _run([*SMALL, "--class", "1", "--out", str(tmp_path)])
    assert "class 1 (lower moon): 100 samples" in text and "class 0" not in text
    with open(tmp_path / "samples.csv", newline="") as f:
        assert {r["label"] for r in csv.DictReader(f)} == {"lower moon"}


def test_the_command_names_a_bad_class():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main([*SMALL, "--class", "5"]) == 2
    assert "sampler.class_label must be a whole number from -1 to 1" in err.getvalue()
    assert "--class" in err.getvalue()


def test_a_conditional_model_file_round_trips(tmp_path):
    from diffusion import checkpoints

    config = small("spiral", epochs=20)
    trainer = Trainer(config).train()
    checkpoints.save(trainer.sampling_model(), config, tmp_path)
    model, loaded = checkpoints.load(tmp_path)
    assert loaded == config and model.num_classes == 2
    x = torch.randn(10, 2)
    labels = torch.tensor([0, 1] * 5)
    torch.testing.assert_close(model.guided(labels, 2.0)(x, 10), trainer.sampling_model().guided(labels, 2.0)(x, 10))


def test_the_improved_preset_takes_classes():
    config = improved().replace(data={"name": "checkerboard"}, train={"conditional": True}, sampler={"class_label": 7})
    assert config.training.num_classes == 8


# --- a user's labelled points ---------------------------------------------------------------------------


def _labelled_csv(n: int = 300, names=("cat", "dog", "emu")) -> str:
    centres = [(100.0, 50.0), (130.0, 50.0), (115.0, 80.0)]
    g = torch.Generator().manual_seed(4)
    rows = ["x,y,label"]
    for i in range(n):
        k = i % len(names)
        x, y = (torch.randn(2, generator=g) * 3 + torch.tensor(centres[k])).tolist()
        rows.append(f"{x},{y},{names[k]}")
    return "\n".join(rows)


def test_a_label_column_gives_the_points_classes():
    from diffusion.datasets import load_points

    data = load_points(_labelled_csv())
    assert data.classes == ("cat", "dog", "emu") and data.points.labels[:4].tolist() == [0, 1, 2, 0]
    numbered = load_points("x,y,label\n0,0,10\n1,1,9\n2,0,10\n")
    assert numbered.classes == ("9", "10")  # numbers in numeric order, not text order
    assert numbered.points.labels.tolist() == [1, 0, 1]
    unlabelled = load_points("x,y\n0,0\n1,1\n2,0\n")
    assert unlabelled.classes == () and unlabelled.points != numbered.points  # the labels are in the digest


@pytest.mark.parametrize("text, message", [
    ("x,y,label\n0,0,a\n1,1,\n", "line 3 has no label; with a label column every point needs one"),
    ("x,y,label\n" + "".join(f"{i},{i % 3},c{i}\n" for i in range(17)), "names 17 classes; at most 16"),
])
def test_a_bad_label_column_is_named(text, message):
    from diffusion.datasets import PointsError, load_points

    with pytest.raises(PointsError, match=message):
        load_points(text)


def test_unlabelled_points_cannot_train_a_conditional_model():
    from diffusion.datasets import load_points

    with pytest.raises(ValueError, match="'points' has none.*or your points with a label column"):
        ExperimentConfig().replace(data=load_points("x,y\n0,0\n1,1\n2,0\n"), train={"conditional": True})


def test_labels_round_trip_in_the_users_units_through_training_sampling_and_samples_csv(tmp_path):
    """A labelled CSV in its own units (centres near (100, 50)) trains a conditional model; its
    samples.csv is in those units with the file's class names, and reads back as the same classes.
    Asked for one class, the samples sit nearer that class's centre than any other's."""
    from diffusion.datasets import load_points

    source = tmp_path / "animals.csv"
    source.write_text(_labelled_csv(600))
    out = tmp_path / "out"
    _run(["--points", str(source), "--conditional", "true", "--label-dropout", "0.2", "--timesteps", "100",
          "--hidden", "64", "--epochs", "300", "--batch-size", "128", "--lr", "3e-3", "--samples", "300",
          "--frames", "2", "--class", "2", "--out", str(out), "--device", "cpu"])
    back = load_points((out / "samples.csv").read_text())
    assert back.classes == ("emu",)
    samples = back.to_user(back.points.array)
    centres = torch.tensor([(100.0, 50.0), (130.0, 50.0), (115.0, 80.0)], dtype=torch.float64)
    nearest = torch.cdist(torch.as_tensor(samples), centres).argmin(1)
    assert (nearest == 2).float().mean() > 0.9


def test_a_conditional_model_of_labelled_points_round_trips_with_its_classes(tmp_path):
    from diffusion import checkpoints
    from diffusion.datasets import load_points

    config = ExperimentConfig().replace(data=load_points(_labelled_csv()), schedule={"num_timesteps": 50},
                                        train={"conditional": True, "epochs": 3}, sampler={"class_label": 1})
    trainer = Trainer(config).train()
    checkpoints.save(trainer.sampling_model(), config, tmp_path)
    model, loaded = checkpoints.load(tmp_path)
    assert loaded == config and loaded.data.classes == ("cat", "dog", "emu") and model.num_classes == 3
    assert loaded.data.points.labels.tolist() == config.data.points.labels.tolist()


def test_conditional_batches_of_fixed_points_carry_each_points_own_label(monkeypatch):
    from diffusion.datasets import load_points

    config = ExperimentConfig().replace(data=load_points(_labelled_csv(90)), schedule={"num_timesteps": 50},
                                        train={"conditional": True, "label_dropout": 0.0, "epochs": 2,
                                               "batch_size": 32})
    trainer = Trainer(config)
    points, labels = trainer.dataset.points, trainer.dataset.labels
    for _ in range(trainer.steps_per_epoch * 2):
        x, y = trainer._batch()
        rows = torch.cdist(x, points).argmin(1)
        assert torch.equal(labels[rows], y)
        trainer.step += 1
