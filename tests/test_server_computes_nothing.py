"""The page's server makes no model call: training, sampling with its frames, the field, the drift
and the budget all run on the workers (``runtime``), and the page only draws their results.

AppTest runs the page's script in this process, so any model call of the server would go through
the ``Denoiser`` methods patched here; the workers are other processes and are not patched."""

from __future__ import annotations

import json

import pytest

from diffusion.denoiser import Denoiser
from tests.pages import animation, computing, fresh_caches, open_page, open_tab, poll_until, status, wait_finished  # noqa: F401

pytestmark = pytest.mark.usefixtures("fresh_caches")

MODEL_CALLS = ("forward", "at_fixed_times", "losses_and_grads")  # every way into the network's arithmetic


@pytest.fixture
def model_calls(monkeypatch) -> list[str]:
    """Records every call of the network's arithmetic made in this process."""
    calls: list[str] = []
    for name in MODEL_CALLS:
        original = getattr(Denoiser, name)

        def recorded(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Denoiser, name, recorded)
    return calls


def titles(at) -> list[str]:
    return [json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "") for c in at.get("plotly_chart")]


def test_the_patch_sees_a_model_call_made_in_this_process(model_calls):
    """The check below can fail: a model call in this process is recorded."""
    import torch

    from diffusion import reference

    config = reference()
    model = Denoiser(config.denoiser, 100, torch.Generator().manual_seed(0))
    model(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    model.at_fixed_times()
    assert model_calls == ["forward", "at_fixed_times"]


def test_no_model_call_in_the_server_while_a_run_trains_is_resampled_and_every_view_is_drawn(model_calls):
    at = wait_finished(open_page())
    for tab, views in {"samples": ("Reverse process: from noise to data", "Results"),
                       "field": ("The learned field against the ideal one", "Forward against reverse: where sampling drifts"),
                       "noise": ("Noise schedule", "Data and forward process")}.items():
        poll_until(open_tab(at, tab), lambda at: not computing(at))
        subheaders = [s.value for s in at.subheader]
        assert all(view in subheaders for view in views), (tab, subheaders)
    open_tab(at, "compare")
    poll_until(at.button(key="budget_compute").click().run(), lambda at: not computing(at))
    assert any("model calls" in df.value.columns for df in at.dataframe)  # the budget's table
    at.selectbox(key="sampler").set_value("ddim").run()  # resampled with another sampler: no retraining
    poll_until(at, lambda at: not computing(at))
    assert "**Finished**" in status(at)
    assert any(c.value.startswith("200 points, 50 DDIM steps") for c in at.caption)
    assert animation(at)["num_points"] == 200  # the new samples, animated
    assert not at.exception
    assert model_calls == []
