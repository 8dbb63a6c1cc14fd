"""The network: a small MLP on [x_t, time features] that predicts its path's target (the noise eps
for DDPM, the velocity eps - x_0 for flow matching). Its time input is a continuous time s in
[0, 1], at the T levels the path's ``grid_times`` (DDPM: t / T for the index t; flow matching:
tau itself)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import DenoiserConfig, Objective
from .objectives import path_class

_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}

# The same activations as plain functions: calling a module costs a few microseconds of Python per
# call, as much as the arithmetic at this size. In place where torch has it (sampling reuses h).
_FUNCTIONS = {"relu": torch.relu, "silu": F.silu, "gelu": F.gelu, "tanh": torch.tanh}
_IN_PLACE = {"relu": torch.relu_, "silu": lambda h: F.silu(h, inplace=True), "gelu": F.gelu, "tanh": torch.tanh_}

# dL/dz = dL/dy * f'(z) for y = f(z), by the kernels autograd itself runs for these activations.
# Arguments: (dL/dy, z, y); each uses whichever of z and y autograd saves for it.
_BACKWARD = {
    "relu": lambda grad, z, y: torch.ops.aten.threshold_backward(grad, y, 0),
    "silu": lambda grad, z, y: torch.ops.aten.silu_backward(grad, z),
    "gelu": lambda grad, z, y: torch.ops.aten.gelu_backward(grad, z),
    "tanh": lambda grad, z, y: torch.ops.aten.tanh_backward(grad, y),
}


def features_at(config: DenoiserConfig, s: torch.Tensor) -> torch.Tensor:
    """Time features of continuous times s in [0, 1], shape (len(s), F).

    scalar:      s (the reference's t / T), F = 1.
    sinusoidal:  [sin(1000 s w_k), cos(1000 s w_k)] with w_k = 1000^(-k / (F/2)), so the
                 frequencies cover the same range whatever T is (Vaswani et al. 2017)."""
    s = torch.as_tensor(s, dtype=torch.float64).reshape(-1)
    if config.time_embedding == "scalar":
        return s.float()[:, None]
    half = config.embedding_dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float64) / half)
    angles = (s[:, None] * 1000.0) * freqs[None, :]  # (N, F/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


POSITION_FREQUENCIES = (1.0, 64.0)  # radians per unit of the data: the lowest and the highest


def position_features(config: DenoiserConfig, x: torch.Tensor) -> torch.Tensor:
    """What the network sees of x (B, D): x itself, or with ``fourier`` x followed by
    [sin(w_k x_j), cos(w_k x_j)] for each coordinate j and frequencies w_k evenly spaced in log over
    ``POSITION_FREQUENCIES`` (F/2 of them), shape (B, D (1 + F))."""
    if config.position_embedding == "none":
        return x
    half = config.position_dim // 2
    low, high = POSITION_FREQUENCIES
    freqs = torch.exp(torch.linspace(math.log(low), math.log(high), half, dtype=torch.float64)).to(x.dtype)
    angles = (x[:, :, None] * freqs.to(x.device)).flatten(1)  # (B, D * F/2)
    return torch.cat([x, angles.sin(), angles.cos()], dim=1)


def time_features(config: DenoiserConfig, num_timesteps: int, objective: Objective = "ddpm") -> torch.Tensor:
    """Table of time features for the levels t = 0..T-1 of ``objective``'s path (its
    ``grid_times``), shape (T, F)."""
    return features_at(config, path_class(objective).grid_times(num_timesteps))


class Denoiser(nn.Module):
    """MLP: [x (2), features(t) (F)] -> hidden x depth -> eps or velocity (2).

    ``t`` is a level index (long, a look-up in the table of ``time_features``) or a continuous
    time in [0, 1] (floating point, features computed: flow matching's tau).

    Weights are initialised like ``nn.Linear`` (Kaiming-uniform, a = sqrt(5)) but from the given
    generator, so a seed fixes them without touching torch's global RNG.

    ``forward`` is the definition, for autograd and for any batch; two fast paths give the same
    numbers: ``losses_and_grads`` (a training step) and ``at_fixed_times`` (a sampler step)."""

    def __init__(self, config: DenoiserConfig, num_timesteps: int, generator: torch.Generator, data_dim: int = 2,
                 objective: Objective = "ddpm", num_classes: int = 0):
        super().__init__()
        self.config = config
        self.num_timesteps = num_timesteps
        self.objective = objective
        self.num_classes = num_classes  # 0: unconditional; else a one-hot over the classes and the null class
        self.register_buffer("time_table", time_features(config, num_timesteps, objective), persistent=False)
        position = data_dim if config.position_embedding == "none" else data_dim * (1 + config.position_dim)
        class_width = num_classes + 1 if num_classes else 0
        widths = [position + self.time_table.shape[1] + class_width] + [config.hidden] * config.depth + [data_dim]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            linear = nn.utils.skip_init(nn.Linear, fan_in, fan_out)
            nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(linear.bias, -bound, bound, generator=generator)
            layers.append(linear)
            if i < len(widths) - 2:
                layers.append(_ACTIVATIONS[config.activation]())
        self.net = nn.Sequential(*layers)
        self._linears = [m for m in self.net if isinstance(m, nn.Linear)]  # a view, not registered twice

    def features(self, t: torch.Tensor) -> torch.Tensor:
        """Time features (B, F) of t (B,): long levels from the table, floating times computed."""
        if t.is_floating_point():
            return features_at(self.config, t).to(self.time_table.device)
        return self.time_table[t]

    @property
    def null_class(self) -> int:
        """The label that stands for "no class" (the unconditional model): the last one."""
        return self.num_classes

    def inputs(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The first layer's input (B, P + F [+ K + 1]): the position's features, the time's and, for a
        conditional network, the one-hot class (``labels`` (B,) long; None: the null class)."""
        parts = [position_features(self.config, x), self.features(t)]
        if self.num_classes:
            if labels is None:
                labels = torch.full((len(x),), self.null_class, dtype=torch.long, device=x.device)
            parts.append(F.one_hot(labels, self.num_classes + 1).to(x.dtype))
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, 2), t (B,) long in [0, T) or floating in [0, 1] -> prediction (B, 2). A conditional
        network takes each point's class (``labels``); without them it is its unconditional self."""
        return self.net(self.inputs(x, t, labels))

    @torch.no_grad()
    def losses_and_grads(
        self, x: torch.Tensor, t: torch.Tensor, target: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """A training step's numbers: the loss L = mean((eps_theta(x, t) - target)^2) (as
        ``F.mse_loss``), the per-sample losses l_i = ||eps_theta(x_i, t_i) - target_i||^2 / D (the
        mean over the D = 2 coordinates, shape (B,), so their batch mean is L up to float32
        rounding), and dL/dp for each of ``parameters()``, in that order. x, target (B, 2); t (B,) long;
        ``labels`` (B,) long for a conditional network (None: the null class).

        Backpropagation written out, because at this size autograd's bookkeeping (recording the
        graph, then walking it) costs more than the arithmetic: forward plus backward of the
        reference MLP on a batch of 128 takes about 275 us through autograd on one core and about
        140 us here. For layer l, z_l = h_{l-1} W_l^T + b_l and h_l = f(z_l) (none on the last):
            dL/dW_l = (dL/dz_l)^T h_{l-1},   dL/db_l = sum over the batch of dL/dz_l,
            dL/dz_{l-1} = f'(z_{l-1}) * (dL/dz_l W_l).
        It reproduces autograd's gradients of ``forward``: the same kernels in the same order,
        bit for bit on CPU for all four activations."""
        activation = _FUNCTIONS[self.config.activation]
        h = self.inputs(x, t, labels)  # (B, P + F [+ K + 1])
        inputs, pre_activations = [], []  # h_{l-1} and z_l, what the backward pass needs
        for i, layer in enumerate(self._linears):
            inputs.append(h)
            h = torch.addmm(layer.bias, h, layer.weight.T)  # (B, width)
            if i < len(self._linears) - 1:
                pre_activations.append(h)
                h = activation(h)
        diff = h.sub_(target)  # (B, 2)
        squares = diff.square()  # (B, 2), before diff becomes the gradient in place
        loss = squares.mean()  # the same kernel on the same values as diff.square().mean()
        sample_losses = squares.mean(1)  # (B,)
        grad = diff.mul_(2.0 / diff.numel())  # dL/d eps_theta
        backward = _BACKWARD[self.config.activation]
        grads: list[torch.Tensor] = []
        for i in reversed(range(len(self._linears))):
            layer = self._linears[i]
            grads += [grad.sum(0), grad.T @ inputs[i]]  # dL/db_l, dL/dW_l
            if i > 0:
                grad = backward(grad @ layer.weight, pre_activations[i - 1], inputs[i])
        grads.reverse()  # parameters() order: W_0, b_0, W_1, b_1, ...
        return loss, sample_losses, grads

    @torch.no_grad()
    def at_fixed_times(self, labels: torch.Tensor | None = None) -> Callable[[torch.Tensor, int | float], torch.Tensor]:
        """The prediction at (x, t) for a batch that shares one t (what a sampler needs), inference
        only. t is a level index (int) or, for flow matching's solvers, a time in [0, 1] (float).
        A conditional network predicts for each point's class (``labels`` (N,) long; None: the null
        class, its unconditional prediction): W [x; f(t); e_y] + b adds W's column y to the bias.

        The time features are folded into the first layer's bias once for every t:
        W [x; f(t)] + b = W_x x + (W_f f(t) + b), so a step costs no concatenation. The weights
        are copied now (later training does not change the function), and a step is bare
        ``addmm`` calls with the activation applied in place: no module calls, one fresh tensor
        per layer."""
        first, *rest = self._linears
        class_width = self.num_classes + 1 if self.num_classes else 0
        data_dim = first.in_features - self.time_table.shape[1] - class_width  # the position's columns (with its features)
        time_end = data_dim + self.time_table.shape[1]
        config = self.config
        class_bias: torch.Tensor | None = None
        if self.num_classes:
            class_columns = first.weight[:, time_end:].T  # (K + 1, hidden)
            class_bias = class_columns[self.null_class] if labels is None else class_columns[labels.to(first.weight.device)]
        bias = torch.addmm(first.bias, self.time_table, first.weight[:, data_dim:time_end].T)  # (T, hidden)
        weight_x = first.weight[:, :data_dim].T.contiguous()  # (2, hidden)
        # W^T as a transposed view of an (out, in) copy, the way nn.Linear hands it to addmm: for
        # the 2-wide output layer that is about 3x faster here than a row-major (in, out) copy.
        layers = [(layer.weight.clone().T, layer.bias.clone()) for layer in rest]  # (in, out), (out,)
        *hidden, (weight_out, bias_out) = layers
        activation = _IN_PLACE[self.config.activation]
        weight_f, first_bias = first.weight[:, data_dim:time_end].T.clone(), first.bias.clone()
        at_time: dict[float, torch.Tensor] = {}  # first-layer bias at continuous times, as asked

        def eps(x: torch.Tensor, t: int | float) -> torch.Tensor:
            if isinstance(t, float):
                if t not in at_time:
                    at_time[t] = torch.addmm(first_bias, features_at(self.config, [t]).to(weight_f.device), weight_f)[0]
                b0 = at_time[t]
            else:
                b0 = bias[t]
            if class_bias is not None:
                b0 = b0 + class_bias  # (N, hidden) with a class per point
            h = activation(torch.addmm(b0, position_features(config, x), weight_x))  # (N, hidden)
            for weight, b in hidden:
                h = activation(torch.addmm(b, h, weight))
            return torch.addmm(bias_out, h, weight_out)  # (N, 2)

        return eps

    def guided(self, labels: torch.Tensor | None, scale: float) -> Callable[[torch.Tensor, int | float], torch.Tensor]:
        """The sampler's model with classifier-free guidance (Ho & Salimans 2022) for each point's
        class: u + w (c - u), u the unconditional prediction and c the conditional one. w = 0 is u
        alone and w = 1 is c alone (one call a step); any other w calls both. An unconditional
        network (or no labels) is its own prediction whatever w."""
        if not self.num_classes or labels is None or scale == 0:
            return self.at_fixed_times()
        conditional = self.at_fixed_times(labels)
        if scale == 1:
            return conditional
        unconditional = self.at_fixed_times()

        def model(x: torch.Tensor, t: int | float) -> torch.Tensor:
            u = unconditional(x, t)
            return u.add_(conditional(x, t).sub_(u), alpha=scale)

        return model
