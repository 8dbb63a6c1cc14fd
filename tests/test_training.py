"""Training: determinism, resumability, the reference script reproduced, divergence, epochs."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion.config import DataConfig, PointSet, reference
from diffusion.samplers import sample_model
from diffusion.schedules import NoiseSchedule
from diffusion.training import Trainer, TrainingDiverged

REFERENCE_SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed_ddpm.py"


def _short(epochs: int, **train):
    return reference().replace(train={"epochs": epochs, **train})


def _params(trainer: Trainer, ema: bool = False) -> list[torch.Tensor]:
    model = trainer.ema_model if ema else trainer.model
    return [p.detach().clone() for p in model.parameters()]


def _assert_same_run(a: Trainer, b: Trainer):
    assert a.step == b.step
    assert a.losses == b.losses  # bit-identical floats
    for pa, pb in zip(_params(a), _params(b), strict=True):
        assert torch.equal(pa, pb)
    if a.ema_model is not None:
        for pa, pb in zip(_params(a, ema=True), _params(b, ema=True), strict=True):
            assert torch.equal(pa, pb)


def test_same_seed_gives_the_same_bits_and_another_seed_does_not():
    a = Trainer(_short(200)).train()
    b = Trainer(_short(200)).train()
    c = Trainer(_short(200, seed=43)).train()
    _assert_same_run(a, b)
    assert a.losses != c.losses


def test_training_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    Trainer(_short(20)).train()
    assert torch.equal(torch.get_rng_state(), before)


def test_training_in_chunks_equals_training_in_one_go():
    one_go = Trainer(reference()).train()
    chunked = Trainer(reference())
    records = list(chunked.run(300))
    assert chunked.step == 300 and not chunked.done
    records += list(chunked.run(700))
    assert chunked.done and len(records) == 1000
    _assert_same_run(one_go, chunked)


@pytest.mark.parametrize(
    "config",
    [
        # everything with state across steps: lr decay, EMA, the sinusoidal table, a 3-layer SiLU net
        _short(60, lr_schedule="cosine", ema_decay=0.9).replace(
            denoiser={"hidden": 32, "depth": 3, "activation": "silu", "time_embedding": "sinusoidal"}
        ),
        # a fixed point set: the shuffled pass must survive a chunk boundary inside an epoch
        reference().replace(
            data=DataConfig("points", PointSet.from_array(np.random.default_rng(0).normal(size=(50, 2)))),
            train={"epochs": 8, "batch_size": 16},
        ),
    ],
    ids=["decay-ema-sinusoidal", "points"],
)
def test_chunks_equal_one_go_with_stateful_options(config):
    one_go = Trainer(config).train()
    chunked = Trainer(config)
    for size in [7, 1, 13, 100]:
        for _ in chunked.run(size):
            pass
    _assert_same_run(one_go, chunked)


def test_breaking_out_of_run_leaves_a_resumable_trainer():
    one_go = Trainer(_short(40)).train()
    interrupted = Trainer(_short(40))
    for record in interrupted.run():
        if record.step == 17:
            break  # a page that stops streaming mid-way
    assert interrupted.step == 17 and len(interrupted.losses) == 17
    interrupted.train()
    _assert_same_run(one_go, interrupted)


def test_progress_records():
    trainer = Trainer(_short(30))
    records = list(trainer.run())
    assert [r.step for r in records] == list(range(1, 31))
    assert all(r.total_steps == 30 and r.lr == 1e-3 for r in records)
    assert [r.loss for r in records] == trainer.losses
    assert [r.epoch for r in records] == list(range(1, 31))  # fresh data: an epoch is a step
    elapsed = [r.elapsed for r in records]
    assert all(b >= a for a, b in itertools.pairwise(elapsed)) and elapsed[-1] == trainer.elapsed
    assert list(trainer.run()) == []  # done: nothing more to do
    with pytest.raises(dataclasses.FrozenInstanceError):
        records[0].loss = 0.0  # records are frozen


def test_cosine_learning_rate_decay():
    trainer = Trainer(_short(50, lr=2e-3, lr_schedule="cosine"))
    for record in trainer.run():
        # the lr used for 1-based step k: lr * (1 + cos(pi (k - 1) / total)) / 2
        expected = 2e-3 * 0.5 * (1 + math.cos(math.pi * (record.step - 1) / 50))
        assert record.lr == pytest.approx(expected, rel=1e-12)
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
    assert records_first_lr(trainer) == pytest.approx(2e-3)


def records_first_lr(trainer: Trainer) -> float:
    return trainer.learning_rate(0)


def test_ema_follows_its_documented_update_and_is_what_gets_sampled():
    """ema <- d ema + (1 - d) w after each step, d = min(decay, (1 + n) / (10 + n)) at 0-based step n."""
    decay = 0.9
    trainer = Trainer(_short(25, ema_decay=decay))
    ema = _params(trainer)
    for n, _ in enumerate(trainer.run()):
        d = min(decay, (1 + n) / (10 + n))
        ema = [d * e + (1 - d) * w for e, w in zip(ema, _params(trainer), strict=True)]
    for mine, theirs, raw in zip(ema, _params(trainer, ema=True), _params(trainer), strict=True):
        torch.testing.assert_close(theirs, mine, rtol=1e-5, atol=1e-6)
        assert not torch.equal(theirs, raw)
    assert trainer.sampling_model() is trainer.ema_model
    plain = Trainer(_short(5))
    assert plain.ema_model is None and plain.sampling_model() is plain.model  # without EMA: the model itself


def test_ema_weights_stay_plain_leaf_tensors():
    trainer = Trainer(_short(10, ema_decay=0.9)).train()
    for p in trainer.ema_model.parameters():
        assert p.is_leaf and p.grad_fn is None and not p.requires_grad


def test_trainer_accepts_a_training_key():
    a = Trainer(_short(20)).train()
    b = Trainer(_short(20).training).train()
    _assert_same_run(a, b)


# ---------------------------------------------------------------------------------------------
# The reference script, imported side by side


@pytest.fixture
def seed_script(monkeypatch):
    if not REFERENCE_SCRIPT.exists():
        pytest.skip(f"the reference script is not at {REFERENCE_SCRIPT}")
    # matplotlib is not a dependency; the script imports pyplot at the top but only uses it to draw.
    pyplot = types.ModuleType("matplotlib.pyplot")
    matplotlib = types.ModuleType("matplotlib")
    matplotlib.pyplot = pyplot
    monkeypatch.setitem(sys.modules, "matplotlib", matplotlib)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", pyplot)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CPU random stream, as here
    with torch.random.fork_rng(devices=[]):  # it calls torch.manual_seed(42) on import
        spec = importlib.util.spec_from_file_location("seed_ddpm_under_test", REFERENCE_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def _train_reference_script(module, epochs: int) -> torch.nn.Module:
    module.epochs = epochs
    with torch.random.fork_rng(devices=[]):  # restores the global RNG afterwards
        torch.manual_seed(42)
        return module.train()


def test_initial_weights_equal_the_reference_scripts_bit_for_bit(seed_script):
    theirs = _train_reference_script(seed_script, 0)
    mine = Trainer(reference())
    for a, b in zip(theirs.parameters(), mine.model.parameters(), strict=True):
        assert torch.equal(a.detach(), b.detach())


def test_reference_preset_reproduces_the_reference_script(seed_script):
    """Same seed, same draws in the same order (batch, t, noise), same init: the weights after 200
    steps agree to float32 rounding. They can't be bit-identical: the script's schedule is a float32
    cumprod, ours is float64 rounded once, so sqrt(abar_t) differs in the last bits."""
    before = torch.get_rng_state()
    theirs = _train_reference_script(seed_script, 200)
    assert torch.equal(torch.get_rng_state(), before)
    mine = Trainer(_short(200)).train()
    for (name, a), b in zip(theirs.named_parameters(), mine.model.parameters(), strict=True):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-4, atol=1e-5, msg=name)


def test_short_real_training_recovers_the_reference_gaussian():
    """The reference job (1000 steps, DDPM with sigma^2 = beta, 1000 samples): mean and std within
    0.1 of [2, 2] and 0.5. (The reference is known to come out under-dispersed, 0.40-0.45.)"""
    config = reference()
    trainer = Trainer(config).train()
    assert 0.1 < np.mean(trainer.losses[-100:]) < 0.3  # near the 0.173 floor, not diverged
    samples = sample_model(trainer.sampling_model(), trainer.schedule, config.sampler).samples
    assert samples.shape == (1000, 2) and np.isfinite(samples).all()
    assert np.all(np.abs(samples.mean(0) - 2.0) < 0.1), samples.mean(0)
    assert np.all(np.abs(samples.std(0) - 0.5) < 0.1), samples.std(0)


# ---------------------------------------------------------------------------------------------
# Divergence and fixed point sets


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_stops_training_naming_the_step(bad):
    trainer = Trainer(_short(20))
    list(trainer.run(5))
    with torch.no_grad():
        trainer.model.net[0].weight[0, 0] = bad  # what a too-large learning rate eventually does
    before = _params(trainer)
    with pytest.raises(TrainingDiverged) as info:
        list(trainer.run())
    error = info.value
    assert error.step == 6 and not math.isfinite(error.loss)
    message = str(error)
    assert "step 6" in message and "lower learning rate" in message and "0.0001" in message
    # the bad step was not applied, and the trainer did not count it
    assert trainer.step == 5 and len(trainer.losses) == 5
    for a, b in zip(_params(trainer), before, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_an_epoch_over_a_point_set_is_one_shuffled_pass(monkeypatch):
    points = np.random.default_rng(1).normal(size=(50, 2)).astype(np.float32)
    config = reference().replace(
        data=DataConfig("points", PointSet.from_array(points)), train={"epochs": 3, "batch_size": 16}
    )
    trainer = Trainer(config)
    assert trainer.steps_per_epoch == 4 == math.ceil(50 / 16) and trainer.total_steps == 12
    batches = []
    real_x_t = NoiseSchedule.x_t

    def spy(schedule, x0, t, noise):
        batches.append(x0.clone())
        return real_x_t(schedule, x0, t, noise)

    monkeypatch.setattr(NoiseSchedule, "x_t", spy)
    records = list(trainer.run())
    assert [len(b) for b in batches] == [16, 16, 16, 2] * 3
    assert [r.epoch for r in records] == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    order = []
    for epoch in range(3):
        seen = torch.cat(batches[4 * epoch : 4 * epoch + 4]).numpy()
        # every point exactly once per epoch
        assert sorted(map(tuple, seen)) == sorted(map(tuple, points))
        order.append(seen)
    assert not np.array_equal(order[0], order[1])  # reshuffled each epoch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_sees_the_same_batches_as_the_cpu():
    """The random stream lives on the CPU, so a CUDA run differs from a CPU run only by float
    rounding in the kernels: after a few steps the losses agree closely."""
    cpu = Trainer(_short(20)).train()
    cuda = Trainer(_short(20), device="cuda").train()
    np.testing.assert_allclose(cuda.losses, cpu.losses, rtol=1e-3, atol=1e-5)
    samples = sample_model(
        cuda.sampling_model(), cuda.schedule, reference().sampler.__class__(num_samples=64), device="cuda"
    )
    assert samples.finite and samples.samples.shape == (64, 2)


@pytest.mark.parametrize("name", ["improved", "flow"])
def test_each_preset_trains_and_samples_the_same_bits_twice(name):
    """The presets as tuned (their own network, batch, lr decay, EMA and sampler; 300 of their
    steps, in chunks the second time), from the same seed: the same weights and the same samples;
    another seed gives others."""
    from diffusion import PRESETS, path_of

    config = PRESETS[name]().replace(train={"epochs": 300}, sampler={"num_samples": 200, "num_frames": 2})
    first, second = Trainer(config).train(), Trainer(config)
    for _ in range(9):  # 8 chunks of 37 steps, then the last 4
        for _ in second.run(37):
            pass
    _assert_same_run(first, second)
    path = path_of(config.schedule)
    a, b = (sample_model(t.sampling_model(), path, config.sampler).samples for t in (first, second))
    np.testing.assert_array_equal(a, b)
    other = Trainer(config.replace(train={"seed": 7})).train()
    assert not np.array_equal(sample_model(other.sampling_model(), path, config.sampler).samples, a)
