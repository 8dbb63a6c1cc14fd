"""Config: validation messages, presets, value semantics, (de)serialisation, steps per epoch.

The caps (samples x frames, optimizer steps of a point set) and the ranges tied to other fields
(DDIM steps <= T) are tested over their whole domain in test_robustness_settings.py."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion.config import (
    PRESET_PURPOSES,
    PRESETS,
    DataConfig,
    DenoiserConfig,
    ExperimentConfig,
    PointSet,
    SamplerConfig,
    ScheduleConfig,
    TrainConfig,
    experiment_settings,
    flow_matching,
    improved,
    reference,
)


def _points(n: int, seed: int = 0) -> PointSet:
    return PointSet.from_array(np.random.default_rng(seed).normal(size=(n, 2)))


# (section class, field, bad value, substrings the message must contain: the field and what is allowed)
BAD_VALUES = [
    (DataConfig, "name", "mnist", ["data.name", "gaussian", "points"]),
    (ScheduleConfig, "kind", "exponential", ["schedule.kind", "linear", "quadratic", "cosine", "sigmoid"]),
    (ScheduleConfig, "num_timesteps", 0, ["schedule.num_timesteps", "1", "4000"]),
    (ScheduleConfig, "num_timesteps", 4001, ["schedule.num_timesteps", "1", "4000"]),
    (ScheduleConfig, "num_timesteps", 10.0, ["schedule.num_timesteps", "whole number"]),
    (ScheduleConfig, "num_timesteps", True, ["schedule.num_timesteps", "whole number"]),
    (ScheduleConfig, "num_timesteps", "1000", ["schedule.num_timesteps", "whole number"]),
    (ScheduleConfig, "beta_start", 0.0, ["schedule.beta_start", "[1e-08, 0.9999]"]),
    (ScheduleConfig, "beta_start", -1e-4, ["schedule.beta_start", "[1e-08, 0.9999]"]),
    (ScheduleConfig, "beta_start", float("nan"), ["schedule.beta_start", "[1e-08, 0.9999]"]),
    (ScheduleConfig, "beta_start", "0.1", ["schedule.beta_start", "number", "[1e-08, 0.9999]"]),
    (ScheduleConfig, "beta_end", 1.0, ["schedule.beta_end", "[1e-08, 0.9999]"]),
    (ScheduleConfig, "beta_end", 1.5, ["schedule.beta_end", "[1e-08, 0.9999]"]),
    (ScheduleConfig, "beta_end", float("inf"), ["schedule.beta_end", "[1e-08, 0.9999]"]),
    (ScheduleConfig, "beta_end", 5e-5, ["schedule.beta_end", "beta_start", "0.0001"]),  # below beta_start
    (DenoiserConfig, "hidden", 0, ["denoiser.hidden", "1", "512"]),
    (DenoiserConfig, "hidden", 513, ["denoiser.hidden", "1", "512"]),
    (DenoiserConfig, "depth", 0, ["denoiser.depth", "1", "8"]),
    (DenoiserConfig, "depth", 9, ["denoiser.depth", "1", "8"]),
    (DenoiserConfig, "activation", "sigmoid", ["denoiser.activation", "relu", "silu", "gelu", "tanh"]),
    (DenoiserConfig, "time_embedding", "fourier", ["denoiser.time_embedding", "scalar", "sinusoidal"]),
    (DenoiserConfig, "embedding_dim", 1, ["denoiser.embedding_dim", "2", "256"]),
    (DenoiserConfig, "embedding_dim", 258, ["denoiser.embedding_dim", "2", "256"]),
    (DenoiserConfig, "embedding_dim", 15, ["denoiser.embedding_dim", "even"]),
    (TrainConfig, "epochs", 0, ["train.epochs", "1", "20000"]),
    (TrainConfig, "epochs", 20_001, ["train.epochs", "1", "20000"]),
    (TrainConfig, "batch_size", 0, ["train.batch_size", "1", "4096"]),
    (TrainConfig, "batch_size", 4097, ["train.batch_size", "1", "4096"]),
    (TrainConfig, "lr", 0.0, ["train.lr", "(0, 1]"]),
    (TrainConfig, "lr", -1e-3, ["train.lr", "(0, 1]"]),
    (TrainConfig, "lr", 1.5, ["train.lr", "(0, 1]"]),
    (TrainConfig, "lr", float("nan"), ["train.lr", "(0, 1]"]),
    (TrainConfig, "lr_schedule", "step", ["train.lr_schedule", "constant", "cosine"]),
    (TrainConfig, "ema_decay", 1.0, ["train.ema_decay", "[0, 1)"]),
    (TrainConfig, "ema_decay", -0.1, ["train.ema_decay", "[0, 1)"]),
    (TrainConfig, "seed", -1, ["train.seed", "0", "2147483647"]),
    (TrainConfig, "seed", 2**31, ["train.seed", "0", "2147483647"]),
    (SamplerConfig, "kind", "rk4", ["sampler.kind", "ddpm", "ddim", "euler", "heun"]),
    (ScheduleConfig, "objective", "score", ["schedule.objective", "ddpm", "flow"]),
    (TrainConfig, "coupling", "sinkhorn", ["train.coupling", "independent", "ot"]),
    (SamplerConfig, "variance", "learned", ["sampler.variance", "beta", "posterior"]),
    (SamplerConfig, "sample_steps", 0, ["sampler.sample_steps", "1", "4000"]),
    (SamplerConfig, "eta", -0.1, ["sampler.eta", "[0, 1]"]),
    (SamplerConfig, "eta", 1.1, ["sampler.eta", "[0, 1]"]),
    (SamplerConfig, "num_samples", 0, ["sampler.num_samples", "1", "5000"]),
    (SamplerConfig, "num_samples", 5001, ["sampler.num_samples", "1", "5000"]),
    (SamplerConfig, "num_frames", 1, ["sampler.num_frames", "2", "200"]),
    (SamplerConfig, "num_frames", 201, ["sampler.num_frames", "2", "200"]),
    (SamplerConfig, "seed", -1, ["sampler.seed", "0"]),
]


@pytest.mark.parametrize(
    "cls, name, value, expected", BAD_VALUES, ids=[f"{c.__name__}.{n}={v!r}" for c, n, v, _ in BAD_VALUES]
)
def test_bad_value_raises_value_error_naming_field_and_allowed_range(cls, name, value, expected):
    with pytest.raises(ValueError) as info:
        cls(**{name: value})
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} missing from {message!r}"


# Values exactly on the allowed boundaries must be accepted (off-by-one in the checks).
GOOD_BOUNDARIES = [
    (ScheduleConfig, {"num_timesteps": 1}),
    (ScheduleConfig, {"num_timesteps": 4000}),
    (ScheduleConfig, {"beta_start": 0.02, "beta_end": 0.02}),  # equal ends allowed
    (ScheduleConfig, {"num_timesteps": np.int64(50)}),  # numpy integers from widgets
    (DenoiserConfig, {"hidden": 1, "depth": 1}),
    (DenoiserConfig, {"hidden": 512, "depth": 8, "embedding_dim": 256}),
    (TrainConfig, {"lr": 1.0, "ema_decay": 0.0, "seed": 0}),
    (TrainConfig, {"epochs": 20_000, "batch_size": 4096, "ema_decay": 0.999, "seed": 2**31 - 1}),
    (SamplerConfig, {"eta": 0.0}),
    (SamplerConfig, {"eta": 1.0, "num_frames": 2}),
    (SamplerConfig, {"num_samples": 5000, "num_frames": 100}),  # exactly the samples x frames cap
    (SamplerConfig, {"num_samples": 2500, "num_frames": 200}),
]


@pytest.mark.parametrize("cls, values", GOOD_BOUNDARIES)
def test_boundary_values_are_accepted(cls, values):
    config = cls(**values)
    for name, value in values.items():
        assert getattr(config, name) == value


@settings(max_examples=60, deadline=None, database=None)
@given(st.integers(min_value=-10_000, max_value=10_000))
def test_num_timesteps_accepted_exactly_in_1_to_4000(value):
    if 1 <= value <= 4000:
        assert ScheduleConfig(num_timesteps=value).num_timesteps == value
    else:
        with pytest.raises(ValueError, match=r"schedule\.num_timesteps"):
            ScheduleConfig(num_timesteps=value)


@settings(max_examples=60, deadline=None, database=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_lr_accepted_exactly_in_half_open_unit_interval(value):
    if math.isfinite(value) and 0 < value <= 1:
        assert TrainConfig(lr=value).lr == value
    else:
        with pytest.raises(ValueError, match=r"train\.lr"):
            TrainConfig(lr=value)


def test_points_dataset_needs_points_and_others_refuse_them():
    with pytest.raises(ValueError, match=r"^data\.points is required when data\.name is 'points'"):
        DataConfig("points")
    for name in ("gaussian", "moons"):
        with pytest.raises(ValueError, match=r"^data\.points is only used when data\.name is 'points'"):
            DataConfig(name, points=_points(10))
    assert DataConfig("points", _points(10)).is_fixed
    assert not DataConfig("moons").is_fixed


def test_point_set_rejects_bad_arrays():
    with pytest.raises(ValueError, match="shape"):
        PointSet.from_array(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="at least|from 2"):
        PointSet.from_array(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="finite"):
        PointSet.from_array(np.array([[0.0, 1.0], [np.nan, 2.0]]))


def test_point_set_compares_and_hashes_by_content_and_is_read_only():
    raw = np.random.default_rng(3).normal(size=(20, 2))
    a, b = PointSet.from_array(raw), PointSet.from_array(raw.copy())
    assert a is not b and a == b and hash(a) == hash(b)
    assert a != PointSet.from_array(raw + 1e-3)
    assert a.array.dtype == np.float32 and not a.array.flags.writeable
    with pytest.raises(ValueError):
        a.array[0, 0] = 5.0


def test_reference_preset_is_the_seed_script_job():
    config = reference()
    assert config.data.name == "gaussian"
    assert (config.schedule.kind, config.schedule.num_timesteps) == ("linear", 1000)
    assert (config.schedule.beta_start, config.schedule.beta_end) == (1e-4, 0.02)
    d = config.denoiser
    assert (d.hidden, d.depth, d.activation, d.time_embedding) == (64, 2, "relu", "scalar")
    t = config.train
    assert (t.lr, t.epochs, t.batch_size, t.lr_schedule, t.ema_decay) == (1e-3, 1000, 128, "constant", 0.0)
    s = config.sampler
    assert (s.kind, s.variance, s.num_samples) == ("ddpm", "beta", 1000)


def _changed_from_reference(config: ExperimentConfig) -> dict[str, object]:
    ref = reference()
    return {d.path: config.get(d.path) for d in experiment_settings() if config.get(d.path) != ref.get(d.path)}


def test_the_improved_preset_is_pinned():
    """The settings chosen by ``bench.tune_presets`` (README, "Good samples on every dataset"):
    the same problem (data, T, betas) and sampler as the reference, everything else as tuned."""
    assert _changed_from_reference(improved()) == {
        "denoiser.time_embedding": "sinusoidal", "denoiser.position_embedding": "fourier",  # 64 wide, as the reference
        "denoiser.position_dim": 32, "train.epochs": 4000, "train.batch_size": 256, "train.lr": 5e-3,
        "train.lr_schedule": "cosine", "train.ema_decay": 0.99, "train.time_power": 2.0,
    }


def test_the_flow_preset_is_pinned():
    assert _changed_from_reference(flow_matching()) == {
        "schedule.objective": "flow", "denoiser.hidden": 128, "denoiser.time_embedding": "sinusoidal",
        "denoiser.embedding_dim": 32, "denoiser.position_embedding": "fourier",
        "train.epochs": 2500, "train.batch_size": 256, "train.lr": 3e-3, "train.lr_schedule": "cosine",
        "train.ema_decay": 0.99, "sampler.kind": "heun", "sampler.sample_steps": 10,
    }


def test_every_preset_says_what_it_is_for():
    assert list(PRESET_PURPOSES) == list(PRESETS)
    assert all(len(purpose) > 40 for purpose in PRESET_PURPOSES.values())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_fresh_equal_configs(name):
    a, b = PRESETS[name](), PRESETS[name]()
    assert isinstance(a, ExperimentConfig) and a == b and hash(a) == hash(b)


def test_configs_are_frozen():
    config = reference()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.lr = 0.1


def test_replace_fields_and_sections_without_touching_the_original():
    base = reference()
    changed = base.replace(train={"lr": 0.01}, sampler=SamplerConfig(kind="ddim", sample_steps=20))
    assert changed.train.lr == 0.01 and changed.train.epochs == base.train.epochs
    assert changed.sampler.kind == "ddim" and changed.sampler.sample_steps == 20
    assert base.train.lr == 1e-3 and base.sampler.kind == "ddpm"


def test_replace_validates_and_rejects_unknown_names_listing_what_is_allowed():
    base = reference()
    with pytest.raises(ValueError, match=r"train\.lr"):
        base.replace(train={"lr": 2.0})
    with pytest.raises(ValueError, match=r"unknown config section 'optimizer'; allowed: data, schedule, denoiser, "
                                         r"train, sampler$"):
        base.replace(optimizer={"lr": 0.1})
    with pytest.raises(ValueError, match=r"unknown field\(s\) learning_rate in config section 'train'; allowed: .*\blr\b"):
        base.replace(train={"learning_rate": 0.1})


@pytest.mark.parametrize(
    "config",
    [
        reference(),
        improved(),
        reference().replace(
            data={"name": "ring"},
            schedule={"kind": "cosine", "num_timesteps": 250},
            denoiser={"hidden": 32, "depth": 4, "activation": "gelu", "time_embedding": "sinusoidal"},
            train={"lr_schedule": "cosine", "ema_decay": 0.995, "seed": 7},
            sampler={"kind": "ddim", "sample_steps": 25, "eta": 0.5, "num_frames": 10, "seed": 3},
        ),
    ],
    ids=["reference", "improved", "custom"],
)
def test_to_dict_from_dict_and_json_round_trip(config):
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    assert ExperimentConfig.from_dict(json.loads(config.to_json())) == config


def test_round_trip_with_points_needs_the_points_back():
    points = _points(100)
    config = reference().replace(data=DataConfig("points", points))
    raw = json.loads(config.to_json())
    assert raw["data"] == {"name": "points", "points_digest": points.digest, "num_points": 100,
                           "points_offset": [0.0, 0.0], "points_scale": 1.0}
    assert ExperimentConfig.from_dict(raw, points=points) == config
    with pytest.raises(ValueError, match=r"data\.points"):
        ExperimentConfig.from_dict(raw)


def test_from_dict_rejects_unknown_sections_and_fields_listing_what_is_allowed():
    raw = reference().to_dict()
    with pytest.raises(ValueError, match=r"unknown config section\(s\) \['optimizer'\]; allowed: data, schedule"):
        ExperimentConfig.from_dict({**raw, "optimizer": {}})
    raw["train"]["learning_rate"] = 0.1
    with pytest.raises(ValueError, match=r"unknown field\(s\) learning_rate in config section 'train'; allowed: .*\blr\b"):
        ExperimentConfig.from_dict(raw)
    with pytest.raises(ValueError):
        ExperimentConfig.from_dict([1, 2])


def test_from_dict_validates_values():
    raw = reference().to_dict()
    raw["schedule"]["beta_end"] = 2.0
    with pytest.raises(ValueError, match=r"schedule\.beta_end"):
        ExperimentConfig.from_dict(raw)


def test_missing_sections_take_defaults():
    assert ExperimentConfig.from_dict({"train": {"lr": 0.005}}) == reference().replace(train={"lr": 0.005})


def test_training_key_is_equal_and_hashes_by_value():
    a, b = reference(), reference()
    assert a.training == b.training and hash(a.training) == hash(b.training)
    cache = {a.training: "weights"}
    # A sampler change never means retraining.
    resampled = a.replace(sampler={"kind": "ddim", "sample_steps": 10, "seed": 9, "num_samples": 50})
    assert resampled != a
    assert resampled.training == a.training and cache[resampled.training] == "weights"


@pytest.mark.parametrize(
    "change",
    [
        {"data": {"name": "moons"}},
        {"schedule": {"beta_end": 0.01}},
        {"denoiser": {"hidden": 32}},
        {"train": {"seed": 1}},
        {"train": {"lr": 2e-3}},
    ],
    ids=lambda c: next(iter(c)),
)
def test_training_key_changes_with_anything_that_changes_the_weights(change):
    a = reference()
    assert a.replace(**change).training != a.training


def test_steps_per_epoch_is_one_for_fresh_data_and_one_pass_for_points():
    assert reference().training.steps_per_epoch == 1
    assert reference().training.total_steps == 1000
    for n, batch, expected in [(1000, 128, 8), (1024, 128, 8), (1025, 128, 9), (10, 128, 1), (300, 1, 300)]:
        config = reference().replace(data=DataConfig("points", _points(n)), train={"batch_size": batch, "epochs": 3})
        assert config.training.steps_per_epoch == expected == math.ceil(n / batch)
        assert config.training.total_steps == 3 * expected

