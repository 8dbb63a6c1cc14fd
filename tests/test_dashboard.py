"""The page, driven headless with Streamlit's AppTest: what it shows after each action."""

import json

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from streamlit.testing.v1 import AppTest

from charts.animation import decode_points
from diffusion.config import DataConfig
from runtime.worker import CHUNK_STEPS
from tests import pages
from tests.pages import computing, fresh_caches, open_tab, poll_until, status, wait_finished  # noqa: F401  (fresh_caches: the fixture)
from ui import panels
from ui.controls import SETTINGS, VIEW_LABELS, experiment_from_values, preset_values, read_link

FAST = {"epochs": "150", "samples": "200", "frames": "12", "pace": "false"}  # T stays at 1000 here
pytestmark = pytest.mark.usefixtures("fresh_caches")


def open_page(**params) -> AppTest:
    return pages.open_page(FAST, **params)


def charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures on the page by their title text (or first trace name)."""
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        title = spec["layout"].get("title", {}).get("text") or spec["data"][0].get("name", "")
        out[title] = spec
    return out


def reverse_payload(at: AppTest) -> dict:
    payload = pages.animation(at)
    assert payload is not None, "no reverse animation on the page"
    return payload


def final_samples(at: AppTest) -> np.ndarray:
    """The reverse animation's last frame: the samples, as drawn."""
    return decode_points(reverse_payload(at)["frames"])[-1]


def owner(at: AppTest) -> str:
    return at.session_state["_owner"]


def test_the_default_page_trains_the_reference_job_and_shows_every_panel():
    at = AppTest.from_file(pages.APP, default_timeout=60)
    # Display only ("results are identical"): without it this 1 s run is paced to last 5 s.
    at.query_params["pace"] = "false"
    at.run()
    assert not at.exception
    reference = preset_values("reference")
    assert reference["pace"] and not at.session_state["pace"]
    for key, value in reference.items():  # every other setting is the reference job's
        if key != "pace":
            assert at.session_state[key] == value, key
    assert at.session_state["epochs"] == 1000 and at.session_state["T"] == 1000
    wait_finished(at)
    assert not at.exception
    first_view = ["Training", "Reverse process: from noise to data"]
    assert at.session_state["view"] == "quality" and "view" not in at.query_params  # the default tab
    assert [s.value for s in at.subheader] == first_view  # the quality tab's charts have no heading
    assert reverse_payload(at)["num_frames"] == 60
    assert "epoch 1,000 / 1,000" in status(at)
    assert set(pages.echarts(at)) == {"loss_chart", "quality_chart", "loss_by_t_chart"}  # the quality tab's are live
    assert not at.get("plotly_chart")  # no Plotly in the first view and the default tab: its 4.7 MB bundle waits
    only_in_tab = {"noise": ["Noise schedule", "Data and forward process"], "samples": ["Results", "Downloads"],
                   "field": ["The learned field against the ideal one", "Forward against reverse: where sampling drifts"],
                   "density": ["The density the model learned", "Trajectory probe"],
                   "compare": ["Your runs", "Sampling budget"]}
    for view, titles in only_in_tab.items():  # each tab draws its own views and no other tab's
        open_tab(at, view)
        poll_until(at, lambda at: not computing(at))
        assert [s.value for s in at.subheader] == first_view + titles, view
        assert at.query_params["view"] == view  # the open tab is in the link
    open_tab(at, "samples")
    labels = [button.proto.label for button in at.get("download_button")]
    assert labels == ["Samples (CSV)", "Model (safetensors + config)", "Animation (HTML)"]
    metric_table = at.dataframe[0].value
    assert list(metric_table["metric"])[0] == "Energy distance"


def test_a_link_opens_the_tab_it_names_and_only_that_tab_is_built():
    at = wait_finished(open_page(view="field"))
    poll_until(at, lambda at: not computing(at))
    assert at.session_state["view"] == "field"
    tabs = at.tabs
    assert [t.label for t in tabs] == list(VIEW_LABELS.values())
    drawn = [t.label for t in tabs if len(t.children)]
    assert drawn == ["Field and drift"]
    bad = open_page(view="everything")
    assert "view='everything'" in " ".join(w.value for w in bad.warning) and bad.session_state["view"] == "quality"


def test_the_animation_has_the_configured_number_of_frames():
    at = wait_finished(open_page(frames="17"))
    payload = reverse_payload(at)
    assert payload["num_frames"] == 17 and decode_points(payload["frames"]).shape == (17, 200, 2)
    assert len(payload["labels"]) == 17 and payload["labels"][0] == "t = 1000" and payload["labels"][-1] == "t = 0"


def test_the_url_carries_the_configuration_both_ways():
    at = open_page(lr="0.003", T="500", sampler="ddim", ddim_steps="25")
    assert at.session_state["lr"] == 0.003 and at.session_state["T"] == 500
    # ddim_steps is the link key of links made before it was renamed sample_steps: it still works
    assert at.selectbox(key="sampler").value == "ddim" and at.slider(key="sample_steps").value == 25
    assert at.query_params["sample_steps"] == "25" and "ddim_steps" not in at.query_params
    at.number_input(key="seed").set_value(7).run()
    assert at.query_params["seed"] == "7"
    assert at.query_params["lr"] == "0.003"
    at.number_input(key="seed").set_value(42).run()  # back to the default: gone from the link
    assert "seed" not in at.query_params


def test_a_bad_value_in_the_url_is_reported_and_ignored():
    at = open_page(lr="banana", hidden="1000", nonsense="1")
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    assert "lr='banana'" in warnings and "hidden='1000' (allowed: a whole number from 1 to 512)" in warnings and "nonsense" in warnings
    assert at.session_state["lr"] == 0.001 and at.session_state["hidden"] == 64


def test_a_revisited_configuration_is_shown_at_once_without_retraining():
    at = wait_finished(open_page())
    runs = panels.registry()
    first_key_run = runs.finished(next(iter(runs._finished)))
    at.select_slider(key="lr").set_value(0.003).run()
    assert "**Finished**" not in status(at)  # a new configuration trains
    wait_finished(at)
    assert runs.stats()["finished"] == 2
    at.select_slider(key="lr").set_value(0.001).run()
    assert "**Finished**" in status(at)  # on the very first rerun
    assert runs.jobs_of(owner(at)) == []  # and no job was started for it
    assert runs.finished(first_key_run.key) is first_key_run


def test_changing_the_sampler_resamples_without_retraining():
    at = wait_finished(open_page())
    runs = panels.registry()
    before = final_samples(at)
    assert any(c.value.startswith("200 points, 1,000 DDPM steps (1,000 model calls), ") for c in at.caption)
    at.selectbox(key="sampler").set_value("ddim").run()
    assert "**Finished**" in status(at)
    assert runs.jobs_of(owner(at)) == [] and runs.stats()["finished"] == 1
    after = final_samples(at)
    assert not np.array_equal(after, before)  # new samples
    assert any(c.value.startswith("200 points, 50 DDIM steps (50 model calls), ") for c in at.caption)  # 50: the default
    assert not any("DDPM steps" in c.value for c in at.caption)


def test_display_settings_recompute_nothing():
    at = wait_finished(open_page())
    results = dict(panels.registry()._results)
    assert results  # the samples, field and drift, from the workers
    at.toggle(key="log_y").set_value(True).run()
    at.select_slider(key="animated").set_value(100).run()
    assert dict(panels.registry()._results) == results  # the same results, nothing asked of a worker again
    assert panels.registry().jobs_of(owner(at)) == []
    assert pages.echarts(at)["loss_chart"]["yAxis"]["type"] == "log"
    assert reverse_payload(at)["num_points"] == 100 and reverse_payload(at)["total_points"] == 200


def test_the_animation_takes_its_display_choices_from_the_link():
    at = wait_finished(open_page(trails="3", show_x0="true", frame_ms="16"))
    assert reverse_payload(at)["display"] == {"trails": 3, "show_x0": True, "frame_ms": 16, "frame": 11}  # opens on the samples (12 frames)
    assert not any(w.proto.id.endswith("-trails") for w in at.get("slider"))  # drawn by the animation itself


EXPERIMENT_KEYS = [k for k, d in SETTINGS.items() if d.section not in ("display", "data")]
NEEDS = {"sample_steps": {"sampler": "ddim"}, "eta": {"sampler": "ddim"},  # where a setting applies
         "embedding_dim": {"time_embedding": "sinusoidal"}, "coupling": {"objective": "flow", "sampler": "euler"},
         **{key: {"dataset": "moons", "conditional": "true"} for key in ("label_dropout", "guidance", "class")},
         "conditional": {"dataset": "moons"}}


def _link_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.parametrize("key", EXPERIMENT_KEYS)
def test_each_setting_retrains_or_resamples_as_its_declaration_and_help_say(key):
    """On the objects the page uses (no page run): the link's values (``read_link``) become the
    experiment (``experiment_from_values``), whose ``TrainingKey`` keys the page's jobs and store.
    A new value changes that key exactly when the setting is declared to retrain, which is exactly
    the schedule, denoiser and train sections, and its help says which. The page run below proves
    the page follows these objects."""
    d = SETTINGS[key]
    link = {name: [value] for name, value in {**FAST, **NEEDS.get(key, {})}.items()}
    _, values, problems = read_link(link)
    assert not problems, problems
    new = _another_value(key, values[key])
    _, changed, _ = read_link({**link, key: [_link_text(new)]})
    assert changed[key] == new  # the link's text reads back as the value
    data = DataConfig(values["dataset"])
    before, after = experiment_from_values(values, data), experiment_from_values(changed, data)
    assert after.get(d.path) == new and after != before
    retrains = d.section in ("schedule", "denoiser", "train")
    assert (d.setting.effect == "retrain") == retrains  # the declaration says so
    assert (after.training != before.training) == retrains  # a new training configuration, or the same one
    assert ("retrains" in d.help) == retrains and ("resamples" in d.help) == (not retrains)


def test_the_page_shows_each_settings_help_and_retrains_or_resamples_as_declared():
    """One page: every experiment setting's widget is in the sidebar with its declared help; a
    retrain setting (depth) starts a new training configuration, a resample one (sampling seed)
    does not, and the link follows both."""
    at = open_page()
    for key in EXPERIMENT_KEYS:
        widget = next(w for w in at.sidebar.get(_widget_kind(at, key)) if w.key == key)
        assert widget.help == SETTINGS[key].help, key
    runs = panels.registry()

    def keys():  # training configurations this session has, running or finished
        return {job.key for job in runs.jobs_of(owner(at))} | set(runs._finished)

    for key, retrains in (("depth", True), ("sample_seed", False)):
        assert (SETTINGS[key].setting.effect == "retrain") == retrains
        before = keys()
        widget = next(w for w in at.sidebar.get(_widget_kind(at, key)) if w.key == key)
        new = _another_value(key, widget.value)
        widget.set_value(new).run()
        assert not at.exception
        assert at.query_params[key] == _link_text(new)  # the link follows
        assert (keys() != before) == retrains, key


def _widget_kind(at, key):
    return {"number": "number_input", "select": "selectbox", "select_slider": "select_slider", "slider": "slider",
            "radio": "radio", "toggle": "toggle"}[SETTINGS[key].setting.widget]


def _another_value(key, value):
    declared = SETTINGS[key]
    if declared.kind is bool:
        return not value
    listed = declared.choices or declared.setting.stops
    if listed:
        return next(choice for choice in listed if choice != value)
    special = {"T": 200, "beta_start": 0.0002, "beta_end": 0.03, "depth": 3, "epochs": 160, "seed": 3,
               "sample_steps": 20, "eta": 0.5, "frames": 10, "sample_seed": 5, "ode_steps": 16, "label_dropout": 0.3,
               "guidance": 2.0, "class": 1}
    return special[key]


def test_a_short_schedule_warns_that_x_T_is_far_from_noise():
    at = open_page(T="50")
    warning = " ".join(w.value for w in at.warning)
    assert "x_T is far from N(0, I)" in warning and "0.603" in warning
    at.number_input(key="T").set_value(1000).run()
    assert not any("far from" in w.value for w in at.warning)


def test_a_bad_csv_gets_a_clear_message_and_a_good_one_trains():
    at = open_page()
    at.selectbox(key="dataset").set_value("points").run()
    assert any("Upload a CSV" in i.value for i in at.info)
    at.file_uploader(key="points_file").upload("bad.csv", b"a,b\n1,2\n", "text/csv").run()
    assert not at.exception
    assert any("bad.csv: the header must name columns x and y" in e.value for e in at.sidebar.error)
    rows = "\n".join(f"{i % 7},{(i * 3) % 11}" for i in range(60))
    at.file_uploader(key="points_file").upload("mine.csv", f"x,y\n{rows}\n".encode(), "text/csv").run()
    assert not at.exception
    assert any("60 points from mine.csv" in c.value for c in at.sidebar.caption)
    assert at.query_params["dataset"] == "points"
    wait_finished(at)
    assert "Reverse process: from noise to data" in [s.value for s in at.subheader]


def test_reset_starts_the_configuration_again_paused_and_start_runs_it():
    at = wait_finished(open_page())
    at.button(key="train_reset").click().run()
    assert "**Paused**" in status(at) and "step 0" in status(at)
    at.button(key="train_start").click().run()
    wait_finished(at)


def test_pause_and_step_while_training():
    at = open_page(epochs="20000")
    job = panels.registry().jobs_of(owner(at))[0]
    at.button(key="train_pause").click().run()
    assert job.status != "running" and "**Training**" not in status(at)  # asked in the click's callback, first
    poll_until(at, lambda at: "**Paused**" in status(at))
    before = job.step
    assert before % CHUNK_STEPS == 0  # handed back between two chunks of steps
    at.button(key="train_step").click().run()
    poll_until(at, lambda at: "**Paused**" in status(at) and job.step > before)
    assert job.step == before + 10 and f"step {before + 10:,}" in status(at)
    panels.registry().discard(owner(at), job.key)


def test_preset_improved_sets_every_field_of_the_preset():
    at = open_page()
    at.selectbox(key="preset").set_value("improved").run()
    for key, value in preset_values("improved").items():
        if key not in FAST:
            assert at.session_state[key] == value, key
    assert at.query_params["preset"] == "improved"


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_model_file_is_loaded_and_shown_without_training_and_a_pickle_is_refused_unopened(tmp_path):
    import pickle

    from diffusion import checkpoints, reference
    from diffusion.training import Trainer

    at = open_page()
    marker = tmp_path / "ran"
    evil = pickle.dumps(_RunsCodeWhenUnpickled(str(marker)))
    at.file_uploader(key="model_file").upload("evil.safetensors", evil, "application/octet-stream").run()
    assert any("pickle" in e.value and "run arbitrary code" in e.value for e in at.sidebar.error)
    assert not marker.exists() and not at.exception
    at.file_uploader(key="model_file").upload("cut.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{", "x").run()
    assert any("truncated or corrupt" in e.value for e in at.sidebar.error)

    config = reference().replace(train={"epochs": 40, "lr": 3e-3}, schedule={"num_timesteps": 300})
    model = Trainer(config).train().sampling_model()
    at.file_uploader(key="model_file").upload("mine.safetensors", checkpoints.to_bytes(model, config), "x").run()
    assert not at.exception and not at.sidebar.error
    assert at.session_state["T"] == 300 and at.session_state["lr"] == 0.003 and at.session_state["epochs"] == 40
    assert "loaded from a model file" in status(at)
    assert panels.registry().job(owner(at), config.training) is None  # the loaded model doesn't train
    assert "Reverse process: from noise to data" in [s.value for s in at.subheader]


def test_an_uploaded_model_stays_private_to_its_session():
    from diffusion import checkpoints, reference
    from diffusion.training import Trainer

    config = reference().replace(train={"epochs": 30}, schedule={"num_timesteps": 100})
    model = Trainer(config.replace(train={"seed": 1})).train().sampling_model()
    files = {}
    for seed in (1, 2):  # same settings, different weights
        with torch.no_grad():
            model.net[-1].bias.fill_(float(seed))  # distinguishable outputs
        files[seed] = checkpoints.to_bytes(model, config)
    shown = {}
    for seed, owner_id in ((1, "alice"), (2, "bob")):
        at = pages.open_page(FAST, owner=owner_id)
        at.file_uploader(key="model_file").upload("m.safetensors", files[seed], "x").run()
        assert "loaded from a model file" in status(at)
        poll_until(at, lambda at: not computing(at))  # sampled by a worker (longer than a page's wait under load)
        shown[owner_id] = final_samples(at)
    assert not np.array_equal(shown["alice"], shown["bob"])


def test_downloads_are_named_by_their_run_and_the_animation_page_has_a_title():
    config = experiment_from_values(preset_values("reference"), DataConfig("gaussian"))
    stem = panels.file_stem(config)
    assert stem.startswith("ddpm-lab_gaussian_ddpm-T1000_")
    assert stem != panels.file_stem(config.replace(train={"seed": 7}))  # a setting not in the words: the digest
    assert panels.file_stem(config.replace(schedule={"num_timesteps": 50})).startswith("ddpm-lab_gaussian_ddpm-T50_")
    page = panels.titled(go.Figure().to_html(include_plotlyjs=False, full_html=True), f"DDPM Lab: {stem} <&>")
    assert f"<title>DDPM Lab: {stem} &lt;&amp;&gt;</title>" in page and page.count("<title>") == 1
