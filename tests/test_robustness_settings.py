"""Bad settings and resource caps (issue 6): the config, the headless command and the page.

Invalid values raise a ValueError naming the field and what is allowed; valid ones build, train a
step and sample. The command exits 2 with one line naming the flag. The page reports a bad link
value by its control and ignores it, and can't reach an invalid combination. Every cap is stated
in the help text and in the validation message.
"""

from __future__ import annotations

import json
import math
import runpy
import subprocess
import sys
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as hs
from streamlit.testing.v1 import AppTest

from cli import command as cli
from diffusion.config import (
    MAX_BATCH_SIZE,
    MAX_DEPTH,
    MAX_EPOCHS,
    MAX_FRAMES,
    MAX_HIDDEN,
    MAX_ODE_STEPS,
    MAX_POINTS,
    MAX_SAMPLE_FRAME_POINTS,
    MAX_SAMPLES,
    MAX_TIMESTEPS,
    MAX_TRAIN_STEPS,
    MAX_TRAIN_WORK,
    MIN_ALPHA_BAR,
    SAMPLERS_OF,
    SECTIONS,
    Activation,
    Coupling,
    DataConfig,
    DatasetName,
    DenoiserConfig,
    ExperimentConfig,
    LRSchedule,
    Objective,
    PointSet,
    SamplerConfig,
    ScheduleConfig,
    ScheduleKind,
    TimeEmbedding,
    TrainConfig,
    TrainingKey,
    Variance,
    experiment_settings,
    reference,
)
from diffusion.monitoring import preview_steps
from diffusion.samplers import sample_model
from diffusion.training import Trainer
from tests.pages import FAST, fresh_caches, open_page, poll_until, status  # noqa: F401
from ui import panels
from ui.controls import SETTINGS as LINK_SETTINGS
from ui.controls import preset_values, read_link

# The tables below are derived from the settings' declarations (diffusion/config.py): the tests
# check that the config, the command and the link enforce exactly what is declared.
SETTINGS = experiment_settings()
# (section, field) -> inclusive bounds of a whole-number field
INT_FIELDS = {(d.section, d.name): (d.setting.low, d.setting.high) for d in SETTINGS if d.kind is int}
# (section, field) -> (low, high, open_low, open_high) of a real-number field
FLOAT_FIELDS = {(d.section, d.name): (d.setting.low, d.setting.high, d.setting.open_low, d.setting.open_high)
                for d in SETTINGS if d.kind is float}
CHOICE_FIELDS = {(d.section, d.name): d.choices for d in SETTINGS if d.choices is not None}

QUICK = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

pytestmark = pytest.mark.usefixtures("fresh_caches")


def interval(low, high, open_low, open_high) -> str:
    return f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"


def assert_names_field(error: pytest.ExceptionInfo, section: str, field: str, *allowed: str) -> None:
    message = str(error.value)
    assert message.startswith(f"{section}.{field} "), message
    for text in allowed:
        assert text in message, (text, message)


def build(section: str, field: str, value):
    """The section with ``field`` set to ``value`` and every other field at its default."""
    SECTIONS[section](**{field: value})


# --- the config: invalid values name the field and the allowed range ---------------------------

NOT_A_NUMBER = hs.one_of(hs.text(max_size=5), hs.none(), hs.booleans(), hs.lists(hs.integers(), max_size=2))


@pytest.mark.parametrize("section,field", list(INT_FIELDS))
@QUICK
@given(data=hs.data())
def test_an_out_of_range_or_non_integer_value_names_the_field_and_its_range(section, field, data):
    low, high = INT_FIELDS[(section, field)]
    value = data.draw(hs.one_of(hs.integers(max_value=low - 1), hs.integers(min_value=high + 1),
                                hs.floats(allow_nan=True), NOT_A_NUMBER), label="value")
    with pytest.raises(ValueError) as error:
        build(section, field, value)
    assert_names_field(error, section, field, f"{low} to {high}")
    with pytest.raises(ValueError) as error:  # the same through a whole experiment
        ExperimentConfig().replace(**{section: {field: value}})
    assert_names_field(error, section, field, f"{low} to {high}")


@pytest.mark.parametrize("section,field", list(FLOAT_FIELDS))
@QUICK
@given(data=hs.data())
def test_an_out_of_range_or_non_numeric_real_names_the_field_and_its_interval(section, field, data):
    low, high, open_low, open_high = FLOAT_FIELDS[(section, field)]
    outside = hs.one_of(
        hs.floats(max_value=low, exclude_max=not open_low),
        hs.floats(min_value=high, exclude_min=not open_high),
        hs.sampled_from([math.nan, math.inf, -math.inf]),
        hs.integers(min_value=math.floor(high) + 1, max_value=10**300),
        hs.integers(min_value=-(10**300), max_value=math.ceil(low) - 1),
    )
    value = data.draw(hs.one_of(outside, NOT_A_NUMBER), label="value")
    with pytest.raises(ValueError) as error:
        build(section, field, value)
    assert_names_field(error, section, field, interval(low, high, open_low, open_high))
    if section == "schedule":  # an out-of-range beta_start must not be blamed on beta_end, or back
        assert str(error.value).startswith(f"schedule.{field} ")


def test_an_integer_too_large_for_a_float_is_a_value_error_naming_the_field():
    with pytest.raises(ValueError) as error:
        TrainConfig(lr=10**400)
    assert_names_field(error, "train", "lr", "(0, 1]")


@pytest.mark.parametrize("section,field", list(CHOICE_FIELDS))
@QUICK
@given(value=hs.one_of(hs.text(max_size=12), hs.integers(), hs.none()))
def test_a_value_outside_the_choices_names_the_field_and_every_choice(section, field, value):
    allowed = CHOICE_FIELDS[(section, field)]
    if value in allowed:
        return
    with pytest.raises(ValueError) as error:
        build(section, field, value)
    assert_names_field(error, section, field, *allowed)


@QUICK
@given(dim=hs.integers(min_value=1, max_value=127).map(lambda k: 2 * k + 1))
def test_an_odd_embedding_dimension_is_refused_by_name(dim):
    with pytest.raises(ValueError) as error:
        DenoiserConfig(time_embedding="sinusoidal", embedding_dim=dim)
    assert_names_field(error, "denoiser", "embedding_dim", "even")


@QUICK
@given(start=hs.floats(1e-6, 0.9), shrink=hs.floats(0.01, 0.99))
def test_beta_end_below_beta_start_is_refused_by_name(start, shrink):
    with pytest.raises(ValueError) as error:
        ScheduleConfig(beta_start=start, beta_end=start * shrink)
    assert_names_field(error, "schedule", "beta_end", "at least beta_start")


@QUICK
@given(samples=hs.integers(1, MAX_SAMPLES), frames=hs.integers(2, MAX_FRAMES))
@example(samples=MAX_SAMPLES, frames=MAX_SAMPLE_FRAME_POINTS // MAX_SAMPLES)  # exactly the cap
@example(samples=MAX_SAMPLES, frames=MAX_SAMPLE_FRAME_POINTS // MAX_SAMPLES + 1)
def test_samples_times_frames_is_capped_with_the_cap_in_the_message(samples, frames):
    if samples * frames <= MAX_SAMPLE_FRAME_POINTS:
        SamplerConfig(num_samples=samples, num_frames=frames)
        return
    with pytest.raises(ValueError) as error:
        SamplerConfig(num_samples=samples, num_frames=frames)
    assert str(error.value) == (f"sampler.num_samples x num_frames must be at most {MAX_SAMPLE_FRAME_POINTS:,}; "
                                f"got {samples} x {frames}")


@QUICK
@given(T=hs.integers(1, MAX_TIMESTEPS - 1), extra=hs.integers(1, 500))
@example(T=10, extra=1)
def test_ddim_steps_beyond_T_are_refused_by_name_and_T_itself_is_accepted(T, extra):
    steps = min(T + extra, MAX_TIMESTEPS)
    schedule = ScheduleConfig(num_timesteps=T)
    with pytest.raises(ValueError) as error:
        ExperimentConfig(schedule=schedule, sampler=SamplerConfig(kind="ddim", sample_steps=steps))
    assert str(error.value) == (f"sampler.sample_steps must be a whole number from 1 to {T} "
                                f"(at most schedule.num_timesteps for DDIM); got {steps}")
    at_T = ExperimentConfig(schedule=schedule, sampler=SamplerConfig(kind="ddim", sample_steps=T))
    assert at_T.sampler.sample_steps == T
    ExperimentConfig(schedule=schedule, sampler=SamplerConfig(kind="ddpm", sample_steps=steps))  # DDPM runs all T


POINT_SETS = {n: PointSet.from_array(np.random.default_rng(n).normal(size=(n, 2))) for n in (2, 37, MAX_POINTS)}


@QUICK
@given(n=hs.sampled_from(sorted(POINT_SETS)), batch=hs.integers(1, MAX_BATCH_SIZE), epochs=hs.integers(1, MAX_EPOCHS))
@example(n=MAX_POINTS, batch=1, epochs=MAX_TRAIN_STEPS // MAX_POINTS)  # exactly the cap: 4 passes of 50,000
@example(n=MAX_POINTS, batch=1, epochs=MAX_TRAIN_STEPS // MAX_POINTS + 1)
def test_optimizer_steps_of_a_point_set_are_capped_with_a_hint(n, batch, epochs):
    data = DataConfig("points", POINT_SETS[n])
    train = TrainConfig(epochs=epochs, batch_size=batch)
    steps = epochs * math.ceil(n / batch)
    work = 3 * steps * batch * DenoiserConfig().parameter_count
    if steps <= MAX_TRAIN_STEPS and work <= MAX_TRAIN_WORK:
        assert ExperimentConfig(data=data, train=train).training.total_steps == steps
        return
    with pytest.raises(ValueError) as error:
        ExperimentConfig(data=data, train=train)
    if work > MAX_TRAIN_WORK:  # the work cap is checked first
        assert_names_field(error, "train", "epochs", "too much work", "fewer epochs")
    else:
        assert_names_field(error, "train", "epochs", f"at most {MAX_TRAIN_STEPS:,} optimizer steps; got {steps:,}",
                           "larger batch size")
    with pytest.raises(ValueError) as alone:  # the TrainingKey on its own enforces the same caps
        TrainingKey(data, ScheduleConfig(), DenoiserConfig(), train)
    assert str(alone.value) == str(error.value)


# --- the config: every valid one builds, trains a step and samples -------------------------------


TINY_BETA = 1e-8  # config.MIN_BETA
MAX_BETA = 0.9999  # config.MAX_BETA


@hs.composite
def valid_configs(draw) -> ExperimentConfig:
    """Anywhere in the valid domain, with the expensive sizes kept small (T, width, samples, frames)."""
    name = draw(hs.sampled_from(get_args(DatasetName)))
    points = None
    if name == "points":
        n = draw(hs.integers(2, 64))
        points = PointSet.from_array(np.random.default_rng(n).normal(size=(n, 2)))
    start = draw(hs.floats(TINY_BETA, MAX_BETA))
    try:
        schedule = ScheduleConfig(
            objective=draw(hs.sampled_from(get_args(Objective))),
            kind=draw(hs.sampled_from(get_args(ScheduleKind))),
            num_timesteps=draw(hs.integers(1, 200)),
            beta_start=start,
            beta_end=draw(hs.floats(start, MAX_BETA)),
        )
    except ValueError as error:  # alpha-bar_T below the floor: refused by name, tested below
        assert "leave no signal" in str(error)
        assume(False)
    denoiser = DenoiserConfig(
        hidden=draw(hs.integers(1, 64)), depth=draw(hs.integers(1, MAX_DEPTH)),
        activation=draw(hs.sampled_from(get_args(Activation))),
        time_embedding=draw(hs.sampled_from(get_args(TimeEmbedding))),
        embedding_dim=2 * draw(hs.integers(1, 128)),
    )
    coupling = draw(hs.sampled_from(get_args(Coupling)))
    # The exact optimal-transport assignment of a batch grows steeply with its size: one step took
    # 0.005 s at a batch of 128, 0.15 s at 512, 1.3 s at 1024, 13 s at 2048 and 100 s at 4096 here.
    # Keep it small where it applies.
    ot = coupling == "ot" and schedule.objective == "flow"
    batch = draw(hs.integers(1, 256 if ot else MAX_BATCH_SIZE))
    steps_per_epoch = math.ceil(len(points) / batch) if points is not None else 1
    train = TrainConfig(
        epochs=draw(hs.integers(1, min(MAX_EPOCHS, MAX_TRAIN_STEPS // steps_per_epoch))), batch_size=batch,
        lr=draw(hs.floats(0.0, 1.0, exclude_min=True)), lr_schedule=draw(hs.sampled_from(get_args(LRSchedule))),
        ema_decay=draw(hs.floats(0.0, 1.0, exclude_max=True)), seed=draw(hs.integers(0, 2**31 - 1)),
        coupling=coupling,
    )
    kind = draw(hs.sampled_from(SAMPLERS_OF[schedule.objective]))
    most = {"ddim": schedule.num_timesteps, "dpm_solver": schedule.num_timesteps, "euler": MAX_ODE_STEPS,
            "heun": MAX_ODE_STEPS}.get(kind, MAX_TIMESTEPS)
    sampler = SamplerConfig(
        kind=kind, variance=draw(hs.sampled_from(get_args(Variance))),
        sample_steps=draw(hs.integers(1, most)),
        eta=draw(hs.floats(0.0, 1.0)), num_samples=draw(hs.integers(1, 50)), num_frames=draw(hs.integers(2, 5)),
        seed=draw(hs.integers(0, 2**31 - 1)),
    )
    return ExperimentConfig(DataConfig(name, points), schedule, denoiser, train, sampler)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=valid_configs())
def test_every_valid_config_trains_a_step_samples_and_survives_json(config):
    trainer = Trainer(config)
    (record,) = list(trainer.run(1))
    assert record.step == 1 and math.isfinite(record.loss)  # one step from fresh weights is finite
    trajectory = sample_model(trainer.sampling_model(), trainer.schedule, config.sampler)
    n = config.sampler.num_samples
    assert trajectory.samples.shape == (n, 2)
    assert trajectory.frames.shape[1:] == (n, 2) and 2 <= len(trajectory.frames) <= config.sampler.num_frames
    assert ExperimentConfig.from_dict(config.to_dict(), points=config.data.points) == config


DEGENERATE = {  # schedules whose float64 tables would degenerate: refused by name at creation
    "abar_T underflows (reachable on the page)": dict(num_timesteps=1000, beta_start=0.5, beta_end=0.999),
    "beta_1 < 1e-16": dict(num_timesteps=10, beta_start=1e-17),
    "beta rounds to 1": dict(kind="quadratic", num_timesteps=1, beta_start=0.9999999999999999,
                             beta_end=0.9999999999999999),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
def test_a_schedule_the_samplers_cannot_handle_is_refused_by_name(case):
    with pytest.raises(ValueError, match=r"^schedule\.(beta_start|beta_end)"):
        ScheduleConfig(**DEGENERATE[case])


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "ddim-1"])
def test_an_extreme_accepted_schedule_keeps_its_tiny_alpha_bar_and_samples_finite_points(kind):
    """Betas of 0.5 to 0.7 over 60 steps leave alpha-bar_T = prod(1 - beta_t) ~ 7e-25: above the
    floor, so accepted, and held exactly (float64, and float32 has the range for it). The samplers
    divide by sqrt(alpha-bar_T) ~ 8e-13, and still give finite points."""
    schedule = ScheduleConfig(num_timesteps=60, beta_start=0.5, beta_end=0.7)
    closed_form = float(np.prod(1.0 - np.linspace(0.5, 0.7, 60)))
    assert MIN_ALPHA_BAR < closed_form < 1e-24
    sampler = SamplerConfig(kind=kind[:4], sample_steps=5, eta=float(kind.endswith("-1")), num_samples=10, num_frames=2)
    trainer = Trainer(ExperimentConfig(schedule=schedule, sampler=sampler))
    assert trainer.schedule.float64["alphas_cumprod"][-1] == pytest.approx(closed_form, rel=1e-12)
    assert float(trainer.schedule.alphas_cumprod[-1]) == pytest.approx(closed_form, rel=1e-6)  # float32
    list(trainer.run(1))
    trajectory = sample_model(trainer.sampling_model(), trainer.schedule, sampler)
    assert trajectory.samples.shape == (10, 2)
    assert trajectory.finite and np.isfinite(trajectory.samples).all() and np.isfinite(trajectory.frames).all()


# --- the headless command: exit 2, one line naming the flag, no traceback -------------------------

FLAG_OF = {d.path: d.flag.removeprefix("--") for d in SETTINGS}
INT_FLAGS = {FLAG_OF[f"{section}.{name}"]: bounds for (section, name), bounds in INT_FIELDS.items()
             if f"{section}.{name}" in FLAG_OF}
INT_FLAGS["steps"] = INT_FLAGS["timesteps"]  # the old name of --timesteps still works
FLOAT_FLAGS = {FLAG_OF[f"{section}.{name}"]: bounds for (section, name), bounds in FLOAT_FIELDS.items()}
FLOAT_FLAGS["beta-end"] = (1e-4, *FLOAT_FLAGS["beta-end"][1:])  # at least --beta-start, 1e-4 by default
CHOICE_FLAGS = [FLAG_OF[f"{section}.{name}"] for section, name in CHOICE_FIELDS] + ["preset", "device"]


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def assert_one_line_naming(code: int, err: str, flag: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert flag in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", list(INT_FLAGS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=hs.data())
def test_the_command_refuses_a_bad_whole_number_flag_in_one_line(capsys, flag, data):
    low, high = INT_FLAGS[flag]
    value = data.draw(hs.one_of(hs.integers(max_value=low - 1).map(str), hs.integers(min_value=high + 1).map(str),
                                hs.sampled_from(["abc", "1.5", "", "nan", "0x10", "1e3"])), label="value")
    assert_one_line_naming(*run_cli(capsys, f"--{flag}={value}"), f"--{flag}")


@pytest.mark.parametrize("flag", list(FLOAT_FLAGS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=hs.data())
def test_the_command_refuses_a_bad_real_flag_in_one_line(capsys, flag, data):
    low, high, open_low, open_high = FLOAT_FLAGS[flag]
    value = data.draw(hs.one_of(
        hs.floats(max_value=low, exclude_max=not open_low, allow_infinity=True).map(repr),
        hs.floats(min_value=high, exclude_min=not open_high, allow_infinity=True).map(repr),
        hs.sampled_from(["nan", "inf", "-inf", "abc", "", "1,5"])), label="value")
    assert_one_line_naming(*run_cli(capsys, f"--{flag}={value}"), f"--{flag}")


@pytest.mark.parametrize("flag", CHOICE_FLAGS)
def test_the_command_refuses_an_unknown_choice_in_one_line(capsys, flag):
    assert_one_line_naming(*run_cli(capsys, f"--{flag}=nonsense"), f"--{flag}")


@pytest.mark.parametrize("argv,flag", [
    (["--samples", "5000", "--frames", "200"], "--samples"),  # samples x frames over the cap
    (["--steps", "20", "--sampler", "ddim", "--sample-steps", "50"], "--sample-steps"),  # DDIM steps > T
    (["--beta-start", "0.1", "--beta-end", "0.05"], "--beta-end"),
    (["--dataset", "points"], "--points"),
    (["--points", "/nonexistent/points.csv"], "--points"),
    (["--load-checkpoint", "/nonexistent/model.safetensors"], "--load-checkpoint"),
    (["--no-such-flag"], "--no-such-flag"),
    (["--steps"], "--steps"),
])
def test_the_command_refuses_bad_combinations_and_paths_in_one_line(capsys, argv, flag):
    assert_one_line_naming(*run_cli(capsys, *argv), flag)


def test_the_command_refuses_a_point_set_too_big_for_the_step_cap_by_its_flag(capsys, tmp_path):
    rows = "\n".join(f"{i},{i % 7}" for i in range(2000))
    (tmp_path / "p.csv").write_text(f"x,y\n{rows}\n")
    code, err = run_cli(capsys, "--points", str(tmp_path / "p.csv"), "--batch-size", "8", "--epochs", "1000")
    assert_one_line_naming(code, err, "--epochs")
    assert f"{MAX_TRAIN_STEPS:,}" in err


def test_the_entry_point_python_m_cli_exits_2_with_one_line_and_no_traceback(capsys, monkeypatch):
    """Smoke test of the entry point itself (``cli/__main__.py``), run as ``python -m cli`` runs it,
    in this process: its exit status is ``main``'s. The tests above cover the messages."""
    monkeypatch.setattr(sys, "argv", ["cli", "--steps", "0"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("cli", run_name="__main__", alter_sys=True)
    out = capsys.readouterr()
    assert_one_line_naming(done.value.code, out.err, "--steps")
    assert f"1 to {MAX_TIMESTEPS}" in out.err and out.out == ""


def test_python_m_diffusion_starts_the_command_with_its_arguments():
    """``python -m diffusion`` (the old name, an exec of ``python -m cli``) as a real process, from
    another folder: the same one line naming the flag, and status 2."""
    root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    bad = subprocess.run([sys.executable, "-m", "diffusion", "--steps", "0"], capture_output=True, text=True,
                         timeout=120, cwd="/", env=env)
    assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1
    assert bad.stderr.startswith("error: --steps") and f"1 to {MAX_TIMESTEPS}" in bad.stderr


def test_a_valid_small_command_runs_to_the_end_with_the_flags_config_and_the_trainers_loss(capsys):
    code = cli.main(["--steps", "100", "--epochs", "5", "--samples", "20", "--frames", "2", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    config = reference().replace(schedule={"num_timesteps": 100}, train={"epochs": 5},
                                 sampler={"num_samples": 20, "num_frames": 2})
    assert report["config"] == config.to_dict()  # --steps, the old name of --timesteps, still sets T
    total = config.training.total_steps
    assert total == 5 * 1  # epochs x steps per epoch (one fresh batch an epoch)
    assert [row["step"] for row in report["previews"]] == preview_steps(total) == [1, 2, 3, 4, 5]  # to the end
    assert report["final_loss"] == Trainer(config).train().losses[-1]  # the same bits as in this process
    assert len(report["loss_by_t"]) == 20 and all(math.isfinite(row["loss"]) for row in report["loss_by_t"])


@pytest.mark.parametrize("flag", ["--save-checkpoint", "--out"])
def test_an_output_path_that_is_a_file_is_refused_in_one_line(capsys, tmp_path, flag):
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    try:
        code, err = run_cli(capsys, "--steps", "100", "--epochs", "2", "--samples", "10", "--frames", "2",
                            flag, str(taken))
    except OSError as error:
        pytest.fail(f"crashed: {error!r}")
    assert_one_line_naming(code, err, flag)


# --- the page: bad link values are reported and ignored; invalid combinations unreachable --------



def ignored(at: AppTest) -> str:
    return " ".join(w.value for w in at.sidebar.warning if w.value.startswith("Ignored from the link"))


def test_link_values_of_the_wrong_kind_are_reported_by_name_and_ignored():
    bad = {"T": "abc", "depth": "1.5", "lr": "2", "hidden": "1000", "batch": "-8", "activation": "sigmoid",
           "sampler": "euler", "log_y": "maybe", "dataset": "mnist", "preset": "best", "ema": "nan", "unknown": "1"}
    at = open_page(**bad)
    assert not at.exception
    report = ignored(at)
    defaults = preset_values("reference")
    for key, raw in bad.items():
        if key == "unknown":
            assert "unknown (not a setting)" in report
            continue
        assert f"{key}={raw!r}" in report, key
        if key != "preset":
            assert at.session_state[key] == defaults[key], key
    assert not at.error  # what remains is a valid configuration


OUT_OF_RANGE = [("T", "99999"), ("epochs", "-5"), ("depth", "99"), ("beta_start", "1.5"), ("beta_start", "nan"),
                ("eta", "5"), ("frames", "1000"), ("seed", "-1"), ("sample_steps", "100000"), ("frame_ms", "0")]


def _link(params: dict[str, str]) -> dict[str, list[str]]:
    return {name: [value] for name, value in params.items()}


@pytest.mark.parametrize("key,raw", OUT_OF_RANGE)
def test_an_out_of_range_link_value_is_reported_by_name_and_ignored(key, raw):
    """What the page's first run does with its link (``init_state_from_url`` is ``read_link``);
    the page itself is checked once below."""
    preset, values, problems = read_link(_link({**FAST, key: raw}))
    assert preset == "reference"
    (problem,) = problems
    assert problem.startswith(f"{key}={raw!r} (") and f"allowed: {LINK_SETTINGS[key].allowed()}" in problem, problem
    assert values[key] == preset_values("reference")[key]  # the link's value replaced FAST's
    without = {name: value for name, value in FAST.items() if name != key}
    assert values == read_link(_link(without))[1]  # ignored: as if the link had no such key


def test_the_page_reports_an_out_of_range_link_value_and_uses_the_presets():
    at = open_page(T="99999")
    assert not at.exception, at.exception[0].value
    assert "T='99999' (allowed: a whole number from 1 to 4000)" in ignored(at)
    assert at.session_state["T"] == preset_values("reference")["T"] == 1000  # not FAST's 100 either


def test_settings_that_leave_no_signal_are_refused_by_the_page_not_crashed_on():
    at = open_page(T="1000", epochs="20", beta_start="0.5", beta_end="0.999", sampler="ddim")
    assert not at.exception
    assert any("schedule.beta_end / num_timesteps leave no signal" in e.value for e in at.sidebar.error)
    assert not at.get("progress")  # nothing trains


def test_beta_end_can_never_fall_below_beta_start_on_the_page():
    at = open_page()
    at.number_input(key="beta_start").set_value(0.05).run()
    assert not at.exception and not at.error
    assert at.number_input(key="beta_end").value >= 0.05
    assert at.number_input(key="beta_end").min == pytest.approx(0.05)


def test_ddim_steps_follow_T_down_so_they_never_exceed_it():
    at = open_page(sampler="ddim", sample_steps="80")
    at.number_input(key="T").set_value(20).run()
    assert not at.exception and not at.error
    assert at.slider(key="sample_steps").value == 20 and at.slider(key="sample_steps").max == 20


def test_frames_shrink_with_more_samples_so_the_product_stays_capped():
    # Still training when the samples change (20,000 epochs): a finished run would be sampled and
    # scored at 5,000 points, 40 s here, which this test of the widgets doesn't need.
    at = open_page(frames="200", samples="100", epochs="20000")
    at.select_slider(key="samples").set_value(MAX_SAMPLES).run()
    assert not at.exception and not at.error
    frames = at.slider(key="frames")
    assert frames.max * MAX_SAMPLES <= MAX_SAMPLE_FRAME_POINTS
    assert frames.value * MAX_SAMPLES <= MAX_SAMPLE_FRAME_POINTS


def test_too_many_optimizer_steps_for_the_points_are_reported_and_nothing_trains():
    at = open_page(dataset="points", epochs="1000", batch="8")
    rows = "\n".join(f"{i},{(i * 7) % 13}" for i in range(2000))  # 250 steps an epoch x 1000 epochs
    at.file_uploader(key="points_file").upload("p.csv", f"x,y\n{rows}\n".encode(), "text/csv").run()
    assert not at.exception
    errors = " ".join(e.value for e in at.sidebar.error)
    assert f"at most {MAX_TRAIN_STEPS:,} optimizer steps" in errors and "larger batch size" in errors
    assert panels.registry().stats()["jobs"] == 0


# --- resource caps: in the widgets, their help and the validation messages -----------------------


def test_every_cap_is_in_the_widget_limits_and_its_help_text():
    at = open_page(dataset="points")
    T, epochs = at.number_input(key="T"), at.number_input(key="epochs")
    assert T.max == MAX_TIMESTEPS and f"{MAX_TIMESTEPS}" in T.help
    assert epochs.max == MAX_EPOCHS and f"{MAX_EPOCHS:,}" in epochs.help
    samples, frames = at.select_slider(key="samples"), at.slider(key="frames")
    assert max(map(int, samples.options)) == MAX_SAMPLES and f"{MAX_SAMPLES:,}" in samples.help
    assert frames.max <= MAX_FRAMES and f"{MAX_FRAMES}" in frames.help and f"{MAX_SAMPLE_FRAME_POINTS:,}" in frames.help
    assert max(map(int, at.select_slider(key="hidden").options)) <= MAX_HIDDEN
    assert at.slider(key="depth").max <= MAX_DEPTH
    assert max(map(int, at.select_slider(key="batch").options)) <= MAX_BATCH_SIZE
    uploader = at.get("file_uploader")[0]
    assert f"{MAX_POINTS:,} points" in uploader.proto.help


@pytest.mark.parametrize("make,cap", [
    (lambda: ScheduleConfig(num_timesteps=MAX_TIMESTEPS + 1), f"{MAX_TIMESTEPS}"),
    (lambda: TrainConfig(epochs=MAX_EPOCHS + 1), f"{MAX_EPOCHS}"),
    (lambda: SamplerConfig(num_samples=MAX_SAMPLES + 1), f"{MAX_SAMPLES}"),
    (lambda: SamplerConfig(num_frames=MAX_FRAMES + 1, num_samples=1), f"{MAX_FRAMES}"),
    (lambda: SamplerConfig(num_samples=MAX_SAMPLES, num_frames=MAX_FRAMES), f"{MAX_SAMPLE_FRAME_POINTS:,}"),
    (lambda: DenoiserConfig(hidden=MAX_HIDDEN + 1), f"{MAX_HIDDEN}"),
    (lambda: DenoiserConfig(depth=MAX_DEPTH + 1), f"{MAX_DEPTH}"),
    (lambda: TrainConfig(batch_size=MAX_BATCH_SIZE + 1), f"{MAX_BATCH_SIZE}"),
    (lambda: PointSet.from_array(np.zeros((MAX_POINTS + 1, 2))), f"{MAX_POINTS}"),
])
def test_every_cap_is_in_its_validation_message(make, cap):
    with pytest.raises(ValueError, match=cap):
        make()


def test_the_largest_allowed_run_fits_the_step_cap_and_the_command_states_the_cap(capsys):
    key = ExperimentConfig(train=TrainConfig(epochs=MAX_EPOCHS)).training
    assert key.total_steps <= MAX_TRAIN_STEPS
    code, err = run_cli(capsys, "--epochs", str(MAX_EPOCHS + 1))
    assert_one_line_naming(code, err, "--epochs")
    assert f"{MAX_EPOCHS}" in err


def test_a_wrong_backend_setting_stops_the_page_with_what_is_allowed_and_no_traceback(monkeypatch):
    from runtime import registry as registry_module
    from tests.pages import open_page

    monkeypatch.setattr(registry_module, "_SHARED", None)  # as a server started with the setting
    monkeypatch.setenv("DDPM_LAB_BACKEND", "dask")
    at = open_page()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "The workers could not start: DDPM_LAB_BACKEND='dask' is not a backend: use one of local, ray"]
    assert registry_module._SHARED is None  # nothing half-started is kept
