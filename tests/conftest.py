"""Shared fixtures for the core test suite. Nothing here imports streamlit or the page: the core's
tests run without them. The page tests import their ``fresh_caches`` fixture from ``tests.pages``.

Randomness in tests flows through explicit ``torch.Generator``s, like in the package; only the
test that reproduces the reference script touches torch's global RNG, and it restores it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # make `import diffusion` work however pytest is started
    sys.path.insert(0, str(REPO_ROOT))

from diffusion.datasets import REFERENCE_GAUSSIAN  # noqa: E402
from diffusion.schedules import make_schedule  # noqa: E402

# The models here are tiny: per-op threading overhead dominates, and on a busy 2-core machine
# OpenMP's spin-waiting made 200 training steps take 2-25 s instead of 0.15 s. One thread keeps
# the suite fast and its timings stable; bit-exactness is compared within one process anyway.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def schedule():
    """The reference schedule: T = 1000, linear betas 1e-4..0.02."""
    return make_schedule("linear", 1000, 1e-4, 0.02)


@pytest.fixture
def gen():
    """A factory of seeded CPU generators: ``gen(seed)``."""
    return lambda seed=0: torch.Generator().manual_seed(seed)


@pytest.fixture(scope="session")
def exact_eps(schedule):
    """eps*(x_t, t) of the reference Gaussian N([2, 2], 0.5^2 I): the perfect denoiser."""

    def eps_fn(x: torch.Tensor, t: int) -> torch.Tensor:
        return REFERENCE_GAUSSIAN.optimal_eps(x, torch.full((len(x),), t), schedule)

    return eps_fn


@pytest.fixture(scope="session")
def ray_cluster():
    """A Ray cluster of two simulated nodes of 1 CPU each on this machine (``ray.cluster_utils``),
    joined by this process, for the runtime's tests on the Ray backend. Ray is a test requirement
    (requirements-dev.txt), so a missing Ray fails here instead of skipping."""
    import ray
    from ray.cluster_utils import Cluster

    from runtime.ray_pool import connect

    node_args = {"num_cpus": 1, "object_store_memory": 150 * 2**20, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=node_args)
    cluster.add_node(**node_args)
    cluster.wait_for_nodes()
    connect(cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
