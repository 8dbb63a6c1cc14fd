"""Flow matching: the straight path from data to noise, and the ODE solvers that walk it back.

The path (rectified flow; Lipman et al. 2023, Liu et al. 2023), t in [0, 1]:
    x_t = (1 - t) x_0 + t eps,            eps ~ N(0, I)
    d x_t / dt = eps - x_0 =: v           (the target the network learns, whatever t)
so the loss is L = E || v - v_theta(x_t, t) ||^2 with t ~ U[0, 1], averaged over the batch and the
two coordinates, as DDPM's. The field the network regresses towards is
    v*(x, t) = E[eps - x_0 | x_t = x],
the velocity of the marginal flow: solving dx/dt = v*(x, t) from x_1 ~ N(0, I) back to t = 0 gives
x_0 ~ the data (the continuity equation). With a + s = 1 (a = 1 - t, s = t):
    x_0 hat = x - t v,   eps hat = x + (1 - t) v.

Coupling. Independent pairs draw eps apart from x_0. Minibatch optimal transport (Tong et al.
2024; Pooladian et al. 2023) reorders a batch's eps so that sum_i |x_0,i - eps_pi(i)|^2 is least,
an exact assignment (``scipy.optimize.linear_sum_assignment``); paths then cross less, v* is closer
to straight and a few Euler steps go further.

Solvers, on N steps evenly spaced from t = 1 to 0 (t_i = 1 - i / N), one model call per
evaluation of v:
    Euler:  x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i)                         N calls
    Heun:   x~ = Euler step; x_{i+1} = x_i + h (v(x_i, t_i) + v(x~, t_{i+1})) / 2
            except on the last step (to t = 0), which stays an Euler step         2N - 1 calls
(as Karras et al. 2022, Algorithm 1). Both are exact wherever the solution curves are straight
lines walked at constant speed, so that v is the same at both ends of a step: any constant field,
and v(x, t) = (x - mu) / t, the ideal field of data that is a single point mu (x(t) = mu + t (x_1 - mu)).

Randomness: x_1 ~ N(0, I) is the first draw of the sampler's generator, as DDPM's x_T is, so with
the same seed and number of samples a flow run and a DDPM run start from the same points.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .config import SamplerConfig
from .forward import frame_indices
from .trajectory import SamplerStep, Trajectory

VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]  # (x (N, 2), t in [0, 1]) -> v (N, 2)


def path_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x_0 + t eps; x0, noise (B, D), t (B,) in [0, 1]."""
    t = t.to(x0.dtype)[:, None]
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v = d x_t / dt = eps - x_0, the same at every t of the path."""
    return noise - x0


def ot_pairing(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The order of ``noise`` that pairs it with ``x0`` at least total squared distance: returns
    noise[perm] where perm minimises sum_i |x0_i - noise_perm(i)|^2 (exact, Hungarian-type)."""
    from scipy.optimize import linear_sum_assignment  # imported when used: only this coupling needs scipy

    cost = torch.cdist(x0.double(), noise.double()).square().cpu().numpy()  # (B, B)
    rows, columns = linear_sum_assignment(cost)
    order = np.empty(len(rows), dtype=np.int64)
    order[rows] = columns
    return noise[torch.from_numpy(order).to(noise.device)]


def paired_in_batches(x0: torch.Tensor, noise: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``noise`` reordered by ``ot_pairing`` within consecutive batches of ``batch_size`` rows, as
    training pairs them: x_t = (1 - t) x0 + t noise then follows the path the model was trained on."""
    return torch.cat([ot_pairing(x0[i : i + batch_size], noise[i : i + batch_size])
                      for i in range(0, len(x0), batch_size)])


def ode_times(steps: int) -> np.ndarray:
    """t_0 = 1 > t_1 > ... > t_N = 0, evenly spaced, float64 (N + 1,)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a whole number, at least 1; got {steps!r}")
    return np.linspace(1.0, 0.0, int(steps) + 1)


def euler_step(v: torch.Tensor, t: float, t_next: float, x: torch.Tensor) -> torch.Tensor:
    """x + (t_next - t) v."""
    return torch.add(x, v, alpha=t_next - t)


def iter_flow_sample(
    velocity: VelocityFn,
    config: SamplerConfig,
    generator: torch.Generator,
    *,
    num_samples: int | None = None,
    device: torch.device | str = "cpu",
    sample_steps: int | None = None,
    num_timesteps: int = 1000,
) -> Iterator[tuple[SamplerStep, torch.Tensor]]:
    """Yield (the state before each step, x after it) for Euler or Heun (``config.kind``). The
    step's ``t`` is its time in units of the T levels, t T (a float), like DDPM's model index + 1
    as a frame time; its ``eps`` is the model's velocity there. x_1 ~ N(0, I) from ``generator``."""
    if config.kind not in ("euler", "heun"):
        raise ValueError(f"a flow sampler is euler or heun; got {config.kind!r}")
    n = config.num_samples if num_samples is None else num_samples
    times = ode_times(config.sample_steps if sample_steps is None else sample_steps)
    x = torch.randn(n, 2, generator=generator).to(device)
    for i in range(len(times) - 1):
        t, t_next = float(times[i]), float(times[i + 1])
        with torch.inference_mode():
            v = velocity(x, t)
            x_next = euler_step(v, t, t_next, x)
            if config.kind == "heun" and t_next > 0:
                v_next = velocity(x_next, t_next)
                x_next = torch.add(x, v.add(v_next), alpha=(t_next - t) / 2)
        yield SamplerStep(i, t * num_timesteps, x, v), x_next
        x = x_next


def sample_flow(
    velocity: VelocityFn,
    config: SamplerConfig,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
    sample_steps: int | None = None,
    num_timesteps: int = 1000,
) -> Trajectory:
    """Solve from t = 1 to 0 keeping ``config.num_frames`` evenly spaced states; frame times are
    t T (floats, T = ``num_timesteps``: the units of DDPM's frame times), x_1 first, x_0 last.
    The predicted x_0 of a frame is x - t v."""
    start = time.perf_counter()
    steps = config.sample_steps if sample_steps is None else sample_steps
    keep = set(frame_indices(steps + 1, config.num_frames).tolist())
    frames, frame_times, x0_preds = [], [], []
    x_end = None
    for step, x_end in iter_flow_sample(velocity, config, generator, device=device, sample_steps=steps,  # noqa: B007
                                        num_timesteps=num_timesteps):
        if step.index in keep:
            t = step.t / num_timesteps
            frames.append(step.x.cpu())
            frame_times.append(step.t)
            x0_preds.append(torch.add(step.x, step.eps, alpha=-t).cpu())
    frames.append(x_end.cpu())
    frame_times.append(0.0)
    x0_preds.append(x_end.cpu())
    return Trajectory(
        frames=torch.stack(frames).numpy(),
        frame_times=np.array(frame_times, dtype=np.float64),
        predicted_x0=torch.stack(x0_preds).numpy(),
        seconds=time.perf_counter() - start,
    )


def straight_path_frames(x0: torch.Tensor, noise: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, np.ndarray]:
    """The forward path x_t = (1 - t) x_0 + t eps at evenly spaced t from 0 to 1, each point on
    its own straight line to its own eps. Returns frames (K, N, D) and their times t in [0, 1]."""
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2; got {num_frames}")
    times = np.linspace(0.0, 1.0, num_frames)
    frames = torch.stack([(1 - float(t)) * x0 + float(t) * noise for t in times])
    return frames, times
