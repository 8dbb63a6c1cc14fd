"""The denoiser MLP: architecture, time features, initialisation, and the fast fixed-t path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from diffusion.config import DenoiserConfig
from diffusion.denoiser import Denoiser, position_features, time_features


def _linears(model: Denoiser) -> list[nn.Linear]:
    return [m for m in model.net if isinstance(m, nn.Linear)]


def test_reference_architecture_is_3_64_64_2_relu(gen):
    model = Denoiser(DenoiserConfig(), 1000, gen(0))
    shapes = [(m.in_features, m.out_features) for m in _linears(model)]
    assert shapes == [(3, 64), (64, 64), (64, 2)]
    assert [type(m) for m in model.net if not isinstance(m, nn.Linear)] == [nn.ReLU, nn.ReLU]
    assert sum(p.numel() for p in model.parameters()) == (3 * 64 + 64) + (64 * 64 + 64) + (64 * 2 + 2)  # 4546


@pytest.mark.parametrize(
    "activation, cls", [("relu", nn.ReLU), ("silu", nn.SiLU), ("gelu", nn.GELU), ("tanh", nn.Tanh)]
)
@pytest.mark.parametrize("depth", [1, 3])
def test_width_depth_activation_and_embedding_are_honoured(gen, activation, cls, depth):
    config = DenoiserConfig(hidden=16, depth=depth, activation=activation, time_embedding="sinusoidal", embedding_dim=8)
    model = Denoiser(config, 100, gen(0))
    linears = _linears(model)
    assert len(linears) == depth + 1
    assert linears[0].in_features == 2 + 8 and linears[-1].out_features == 2
    assert all(m.out_features == 16 for m in linears[:-1])
    assert [type(m) for m in model.net if not isinstance(m, nn.Linear)] == [cls] * depth
    out = model(torch.randn(5, 2, generator=gen(1)), torch.tensor([0, 1, 50, 98, 99]))
    assert out.shape == (5, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize("T", [10, 1000])
def test_scalar_time_feature_is_t_over_T(T):
    table = time_features(DenoiserConfig(), T)
    assert table.shape == (T, 1)
    torch.testing.assert_close(table[:, 0], torch.arange(T) / T)


@pytest.mark.parametrize("T", [10, 1000, 4000])
def test_sinusoidal_time_features_follow_their_formula(T):
    F = 16
    table = time_features(DenoiserConfig(time_embedding="sinusoidal", embedding_dim=F), T).double()
    assert table.shape == (T, F)
    k = np.arange(F // 2)
    w = 1000.0 ** (-k / (F // 2)) * (1000.0 / T)  # the docstring's frequencies
    angles = np.arange(T)[:, None] * w[None, :]
    expected = np.concatenate([np.sin(angles), np.cos(angles)], 1)
    np.testing.assert_allclose(table.numpy(), expected, atol=1e-6)
    # every t gets its own features: the network can tell the times apart
    table = table[:: max(1, T // 1000)]  # (a 1000-row subsample keeps the pairwise check cheap)
    distances = torch.cdist(table, table) + torch.eye(len(table), dtype=torch.float64) * 10
    assert distances.min() > 1e-4


def test_initialisation_is_seeded_by_the_generator_only(gen):
    before = torch.get_rng_state()
    a = Denoiser(DenoiserConfig(), 1000, gen(3))
    b = Denoiser(DenoiserConfig(), 1000, gen(3))
    c = Denoiser(DenoiserConfig(), 1000, gen(4))
    assert torch.equal(torch.get_rng_state(), before)  # global RNG untouched
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_initialisation_matches_nn_linear_defaults(gen):
    """Kaiming-uniform(a = sqrt 5) weights and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) biases, drawn in
    nn.Linear's order: with the same seed the layers equal torch's own nn.Linear layers."""
    model = Denoiser(DenoiserConfig(), 1000, gen(42))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(42)
        expected = [nn.Linear(3, 64), nn.Linear(64, 64), nn.Linear(64, 2)]
    for mine, theirs in zip(_linears(model), expected, strict=True):
        assert torch.equal(mine.weight, theirs.weight) and torch.equal(mine.bias, theirs.bias)
        bound = 1 / math.sqrt(mine.in_features)
        assert mine.weight.abs().max() <= bound and mine.bias.abs().max() <= bound


@pytest.mark.parametrize("position", ["none", "fourier"])
@pytest.mark.parametrize("embedding", ["scalar", "sinusoidal"])
def test_fixed_time_path_equals_the_forward_pass(gen, embedding, position):
    config = DenoiserConfig(hidden=32, depth=3, activation="silu", time_embedding=embedding, position_embedding=position)
    model = Denoiser(config, 200, gen(0))
    with torch.no_grad():  # move away from the initial weights so biases matter
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen(9)) * 0.3)
    x = torch.randn(64, 2, generator=gen(1))
    eps = model.at_fixed_times()
    for t in [0, 1, 57, 199]:
        expected = model(x, torch.full((64,), t))
        torch.testing.assert_close(eps(x, t), expected, rtol=1e-5, atol=1e-6)


def test_fourier_position_features_follow_their_formula_and_widen_the_first_layer(gen):
    config = DenoiserConfig(position_embedding="fourier", position_dim=8)
    x = torch.randn(5, 2, generator=gen(2), dtype=torch.float64)
    features = position_features(config, x).numpy()
    w = np.exp(np.linspace(np.log(1.0), np.log(64.0), 4))  # the docstring's frequencies, 1 to 64 per unit
    angles = (x.numpy()[:, :, None] * w).reshape(5, 8)  # x_1's four angles, then x_2's
    np.testing.assert_allclose(features, np.concatenate([x.numpy(), np.sin(angles), np.cos(angles)], 1), atol=1e-12)
    model = Denoiser(config, 100, gen(0))
    assert _linears(model)[0].in_features == 2 + 16 + 1 == config.input_width
    assert sum(p.numel() for p in model.parameters()) == config.parameter_count
    assert torch.equal(position_features(DenoiserConfig(), x), x)  # "none": x itself


def test_time_conditioning_changes_the_output(gen):
    model = Denoiser(DenoiserConfig(time_embedding="sinusoidal"), 1000, gen(0))
    x = torch.randn(8, 2, generator=gen(1))
    assert not torch.allclose(model(x, torch.zeros(8, dtype=torch.long)), model(x, torch.full((8,), 999)))


@pytest.mark.parametrize("activation", ["relu", "silu", "gelu", "tanh"])
@pytest.mark.parametrize("time_embedding", ["scalar", "sinusoidal"])
@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("position", ["none", "fourier"])
def test_the_hand_written_backward_pass_equals_autograd(activation, time_embedding, depth, position):
    import torch.nn.functional as F

    config = DenoiserConfig(hidden=16, depth=depth, activation=activation, time_embedding=time_embedding,
                            position_embedding=position, position_dim=8)
    g = torch.Generator().manual_seed(3)
    model = Denoiser(config, 50, g)
    x, target = torch.randn(33, 2, generator=g), torch.randn(33, 2, generator=g)
    t = torch.randint(0, 50, (33,), generator=g)
    loss, sample_losses, grads = model.losses_and_grads(x, t, target)
    prediction = model(x, t)
    expected = F.mse_loss(prediction, target)
    expected_grads = torch.autograd.grad(expected, list(model.parameters()))
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(sample_losses, (prediction - target).detach().square().mean(1), rtol=1e-6, atol=1e-7)
    for mine, theirs in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)


def test_the_trainers_adam_equals_torchs_fused_adam():
    from diffusion.training import Adam

    g = torch.Generator().manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(4, 3, generator=g)), torch.nn.Parameter(torch.randn(3, generator=g))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    mine, reference = Adam(ours, lr=0.01), torch.optim.Adam(theirs, lr=0.01, fused=True)
    for _ in range(20):
        grads = [torch.randn(p.shape, generator=g) for p in ours]
        mine.step(grads)
        for p, grad in zip(theirs, grads, strict=True):
            p.grad = grad.clone()
        reference.step()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
