"""Running an objective's sampler: every step, or to the end keeping evenly spaced frames.

The steps are the path's (``paths.ObjectivePath``): DDPM's ancestral and DDIM steps in
``schedules``, flow matching's Euler and Heun in ``flow``. The loop comes as a pair:
``iter_sample`` yields every step, ``sample`` runs it to the end and keeps evenly spaced frames.
All randomness comes from one explicit generator, drawn first and on the CPU (the path's
``sampler_draws``: x_T, then any per-step noise), so the same draws on any device; two samplers
given the same seed and number of samples start from the same x_T, and two models sampled with
the same config get the same x_T and noise (common random numbers). ``sample_model`` seeds that
generator with the sampler's seed, or, with ``common_noise`` off, with the seed mixed with a
digest of the run (``sampling_seed``). A conditional model is sampled for ``class_labels`` with
classifier-free guidance at the sampler's scale (``Denoiser.guided``), whatever the sampler.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterator

import numpy as np
import torch

from .config import SamplerConfig
from .forward import frame_indices
from .paths import ModelFn, ObjectivePath
from .trajectory import SamplerStep, Trajectory


def iter_sample(
    model: ModelFn,
    schedule: ObjectivePath,
    config: SamplerConfig,
    generator: torch.Generator,
    *,
    num_samples: int | None = None,
    device: torch.device | str = "cpu",
    sample_steps: int | None = None,
) -> Iterator[tuple[SamplerStep, torch.Tensor]]:
    """Yield (the state before each step, x after it) of ``config``'s sampler, one of the path's.
    ``sample_steps`` overrides the config's number of steps (for DDPM: respaced)."""
    if config.kind not in schedule.sampler_kinds:
        raise ValueError(f"sampler must be one of {', '.join(schedule.sampler_kinds)} (the samplers of the "
                         f"{schedule.objective} objective); got {config.kind!r}")
    n = config.num_samples if num_samples is None else num_samples
    x, noise = schedule.sampler_draws(config, generator, n, sample_steps)
    noise = None if noise is None else noise.to(device)
    yield from schedule.iter_steps(model, x.to(device), noise, config, sample_steps)


def sample(
    model: ModelFn,
    schedule: ObjectivePath,
    config: SamplerConfig,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
    sample_steps: int | None = None,
) -> Trajectory:
    """Run the reverse process to the end, keeping ``config.num_frames`` evenly spaced frames with
    the model's predicted x_0 at each (``step_frame``: with ``clip_x0`` on DDPM's, the clipped
    ones the sampler stepped with)."""
    start = time.perf_counter()
    keep = set(frame_indices(schedule.num_sample_steps(config, sample_steps) + 1, config.num_frames).tolist())
    frames, frame_times, x0_preds = [], [], []
    x_end = None
    steps = iter_sample(model, schedule, config, generator, device=device, sample_steps=sample_steps)
    for step, x_end in steps:  # noqa: B007
        if step.index in keep:
            frame_time, x0 = schedule.step_frame(step, config)
            frames.append(step.x.cpu())
            frame_times.append(frame_time)
            x0_preds.append(x0.cpu())
    frames.append(x_end.cpu())  # x_0, the samples
    frame_times.append(0)
    x0_preds.append(x_end.cpu())
    return Trajectory(
        frames=torch.stack(frames).numpy(),
        frame_times=np.array(frame_times, dtype=schedule.frame_dtype),
        predicted_x0=torch.stack(x0_preds).numpy(),
        seconds=time.perf_counter() - start,
    )


def training_salt(key: object) -> int:
    """A digest of a run for ``sample_model``'s ``run_salt``: the first 8 bytes of SHA-256 of
    ``repr(key)`` (e.g. a ``TrainingKey``, whose repr shows every setting and a point set's digest).
    The same in every process, unlike ``hash()``."""
    return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "big")


def weights_salt(model: torch.nn.Module) -> int:
    """A digest of a model's weights (SHA-256 of its state dict's bytes, first 8 bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(digest.digest()[:8], "big")


def sampling_seed(config: SamplerConfig, run_salt: int) -> int:
    """The seed of the sampling generator: ``config.seed`` with common noise (every run gets the
    same x_T and noise), else a 63-bit digest of the seed and ``run_salt``."""
    if config.common_noise:
        return config.seed
    mixed = hashlib.sha256(f"{config.seed}:{int(run_salt)}".encode()).digest()
    return int.from_bytes(mixed[:8], "big") >> 1


def sample_model(
    model, schedule: ObjectivePath, config: SamplerConfig, *, device="cpu", run_salt: int | None = None
) -> Trajectory:
    """Sample a trained ``Denoiser`` with the sampler's own seed. With ``config.common_noise`` off,
    the seed is mixed with ``run_salt`` (say ``training_salt(key)``), or, if none is given, with a
    digest of the model's weights (``weights_salt``): either way the same run gets the same noise."""
    salt = 0 if config.common_noise else (weights_salt(model) if run_salt is None else run_salt)
    generator = torch.Generator().manual_seed(sampling_seed(config, salt))
    labels = class_labels(config, model.num_classes, config.num_samples)
    with torch.inference_mode():
        model_fn = model.guided(labels, config.guidance)
    trajectory = sample(model_fn, schedule, config, generator, device=device)
    return trajectory if labels is None else dataclasses.replace(trajectory, labels=labels.numpy())


def class_labels(config: SamplerConfig, num_classes: int, n: int) -> torch.Tensor | None:
    """The class each of ``n`` points is sampled for (``config.class_label``), (n,) int64; None for
    an unconditional model. Every class (-1): point i gets class i mod K, equal shares, the
    proportions of every built-in dataset. No random draw: x_T and the noise stay those of the
    same sampler on an unconditional model."""
    if not num_classes:
        return None
    if config.class_label < 0:
        return torch.arange(n) % num_classes
    if config.class_label >= num_classes:
        raise ValueError(f"sampler.class_label must be -1 or a class from 0 to {num_classes - 1}; got {config.class_label}")
    return torch.full((n,), config.class_label, dtype=torch.long)
