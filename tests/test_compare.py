"""Comparing runs on the page (AppTest): the history of the session's runs, a pinned baseline
drawn beside the current run (and what happens when it has been dropped from the store), the
sampling budget, the same noise for every run, and clipping shown failing."""

from __future__ import annotations

import numpy as np
import pytest

from charts.animation import decode_points
from diffusion.config import PRESETS, DataConfig, PointSet, flow_matching, improved, reference
from tests.pages import (  # noqa: F401
    animation,
    computing,
    echarts,
    fresh_caches,
    open_page,
    open_tab,
    poll_until,
    series,
    status,
    wait_finished,
)
from tests.test_live_views import _decode, chart, trace
from ui import compare, history, panels

pytestmark = pytest.mark.usefixtures("fresh_caches")


def history_rows(at) -> dict:
    table = next(df for df in at.dataframe if "run" in df.value.columns)
    return table.value.to_dict(orient="list")


def two_runs():
    """The reference job, then the improved preset, both short, in one session."""
    at = wait_finished(open_page(view="compare"))  # the tab with the runs
    at.selectbox(key="preset").set_value("improved").run()
    # The FAST settings the preset reset. Pacing first: it is fixed when a job starts, and with it
    # on (the preset's default) this 0.3 s run would be stretched to 5 s. The sampler's settings
    # before the run's: a short run can finish between two clicks and join the history.
    at.toggle(key="pace").set_value(False).run()
    at.select_slider(key="samples").set_value(200).run()
    at.slider(key="frames").set_value(5).run()
    for key, value in {"T": 100, "epochs": 150}.items():
        at.number_input(key=key).set_value(value).run()
    return wait_finished(at)


def test_the_history_lists_the_runs_by_their_preset_and_brings_one_back():
    at = two_runs()
    rows = history_rows(at)
    assert rows["run"] == ["#1", "#2"]
    assert list(rows)[:3] == ["run", "final loss", "energy distance / floor"]  # the numbers before the settings
    assert rows["preset"] == ["reference", "improved"]
    # the settings that differ between them are each its preset's own: nothing more to name
    assert rows["settings"] == ["", ""]
    assert all(float(r) > 0 for r in rows["energy distance / floor"])
    at.selectbox(key="history_pick").set_value(1).run()
    at.button(key="history_show").click().run()
    assert at.session_state["hidden"] == 64 and at.session_state["lr"] == 0.001
    assert "**Finished**" in status(at)  # from the store, not retrained


def picker_labels(at) -> list[str]:
    return at.selectbox(key="history_pick").options


def test_a_run_keeps_its_number_and_label_when_shown_again_or_pinned():
    """Showing #1 again makes it the most recent run, and pinning it marks it: its number, its row
    and its label in the picker stay the same, so #1 always means the same run."""
    at = two_runs()
    labels = ["#1 · reference", "#2 · improved"]
    assert picker_labels(at) == labels
    at.selectbox(key="history_pick").set_value(1).run()
    at.button(key="history_show").click().run()
    wait_finished(at)
    assert at.session_state["_history"][-1].number == 1  # the most recently shown...
    assert picker_labels(at) == labels and history_rows(at)["run"] == ["#1", "#2"]  # ...still #1, first
    assert at.selectbox(key="history_pick").value == 1
    at.button(key="history_pin").click().run()
    assert at.session_state["_baseline"].number == 1
    assert picker_labels(at) == labels and history_rows(at)["run"] == ["#1 (baseline)", "#2"]
    at.selectbox(key="history_pick").set_value(2).run()
    at.button(key="history_show").click().run()
    wait_finished(at)
    assert picker_labels(at) == labels and history_rows(at)["run"] == ["#1 (baseline)", "#2"]
    assert any(c.value.startswith(f"{compare.PIN} Baseline pinned (#1)") for c in at.caption)


def test_a_shown_run_s_link_names_its_own_preset_and_its_changes_from_it():
    at = two_runs()
    fast = {"T": "100", "epochs": "150", "samples": "200", "frames": "5", "pace": "false", "view": "compare"}  # display kept
    at.selectbox(key="history_pick").set_value(1).run()
    at.button(key="history_show").click().run()
    assert at.session_state["preset"] == "reference" and at.query_params == fast
    at.selectbox(key="history_pick").set_value(2).run()
    at.button(key="history_show").click().run()
    assert at.session_state["preset"] == "improved"
    assert at.query_params == {"preset": "improved", **fast}
    assert "**Finished**" in status(at)  # the link's settings are the run's: still from the store


def test_the_baseline_note_names_the_differences_of_the_run_on_screen():
    """The note is drawn before the page records the run it shows: it must compare the baseline
    with that run, not with the history's last entry (the run before)."""
    at = two_runs()
    at.selectbox(key="history_pick").set_value(2).run()
    at.button(key="history_pin").click().run()
    note = lambda at: next(c.value for c in at.caption if "Baseline pinned" in c.value)  # noqa: E731
    assert note(at).endswith("; the same settings.")  # #2 pinned, #2 on screen
    at.selectbox(key="history_pick").set_value(1).run()
    at.button(key="history_show").click().run()  # #1 on screen at once, from the store
    assert note(at).endswith("; it differs in time_embedding, position_embedding, position_dim, batch, lr, lr_schedule, ema, time_power.")


def test_a_pinned_baseline_is_drawn_beside_the_current_run_and_named_once_dropped_from_the_store():
    """One session of two runs (building it is most of the cost): pin the first, see it drawn;
    then drop it from the store, and the page says so instead of failing."""
    at = two_runs()
    at.selectbox(key="history_pick").set_value(1).run()
    at.button(key="history_pin").click().run()
    assert history_rows(at)["run"] == ["#1 (baseline)", "#2"]
    pin = at.button(key="history_pin")  # Streamlit's own icon font: an emoji is an empty box without an emoji font
    assert (pin.label, pin.proto.icon) == ("Pin as baseline", ":material/push_pin:") and compare.PIN == pin.proto.icon
    assert len(series(echarts(at)["loss_chart"], "baseline (smoothed)")) == 150
    poll_until(at, lambda at: not computing(at))
    assert decode_points(animation(at)["baseline"]).shape == (5, 200, 2)  # moving beside the run's frames
    poll_until(open_tab(at, "samples"), lambda at: not computing(at))
    results = chart(at, "baseline samples")
    assert len(_decode(trace(results, "baseline samples")["x"])) == 200
    metrics = next(df for df in at.dataframe if "metric" in df.value.columns).value
    assert "baseline × floor" in metrics.columns
    assert any(c.value.startswith(f"{compare.PIN} Baseline pinned") for c in at.caption)

    baseline_key = at.session_state["_baseline"].config.training
    panels.registry()._finished.pop(baseline_key)  # evicted: 16 newer runs since
    at.run()
    assert not at.exception
    assert any("The pinned baseline is no longer kept" in i.value for i in at.info)
    with pytest.raises(AssertionError):
        chart(at, "baseline samples")


def test_the_budget_is_computed_on_request_and_matches_the_run_at_its_own_setting():
    at = wait_finished(open_page(view="samples"))
    poll_until(at, lambda at: not computing(at))
    metrics = next(df for df in at.dataframe if "metric" in df.value.columns).value
    open_tab(at, "compare")
    assert [b for b in at.button if b.key == "budget_compute"]  # nothing computed before the click
    poll_until(at.button(key="budget_compute").click().run(), lambda at: not computing(at))  # a worker computes it
    budget = chart(at, "DDPM")
    assert [t.get("name") for t in budget["data"]][:3] == ["DDPM", "DDIM η=0", "DDIM η=1"]
    assert list(_decode(trace(budget, "DDPM")["x"])) == [5, 10, 20, 50, 100]  # T = 100: steps above T dropped
    table = next(df for df in at.dataframe if "model calls" in df.value.columns).value
    ddpm_at_T = table[(table["sampler"] == "DDPM") & (table["steps"] == 100)]["energy distance / floor"].iloc[0]
    assert ddpm_at_T == metrics[metrics["metric"] == "Energy distance"]["× floor"].iloc[0]  # the same samples
    at.run()  # kept for this run: no button, the chart again
    assert chart(at, "DDPM") and not [b for b in at.button if b.key == "budget_compute"]


def test_the_same_noise_line_follows_the_toggle():
    at = wait_finished(open_page(view="samples"))
    assert any(c.value.startswith("Same noise for every run: any run sampled with sampling seed 0") for c in at.caption)
    at.toggle(key="common_noise").set_value(False).run()
    assert any(c.value.startswith("Each run draws its own sampling noise") for c in at.caption)


def test_clipping_on_the_gaussian_at_2_2_collapses_the_samples_and_says_why():
    at = wait_finished(open_page(view="samples"))
    at.toggle(key="clip_x0").set_value(True).run()
    poll_until(at, lambda at: not computing(at))
    (warning,) = [w.value for w in at.warning if w.value.startswith("Clipping x̂₀ to [-1, 1]")]
    assert "samples collapse" in warning
    samples = _decode(trace(chart(at, "Generated samples"), "Generated samples")["x"])
    assert samples.max() <= 1.0 + 1e-5  # every sample inside the square, though the data sits at (2, 2)


def test_history_record_keeps_the_last_of_each_run_and_caps_the_length():
    from diffusion import reference

    entries = ()
    for seed in range(history.MAX_ENTRIES + 5):
        entries = history.record(entries, history.HistoryEntry(reference().replace(train={"seed": seed}),
                                                               "trained", 0.2, 5.0, 1.0))
    assert len(entries) == history.MAX_ENTRIES and entries[-1].config.train.seed == history.MAX_ENTRIES + 4
    again = history.record(entries, history.HistoryEntry(entries[0].config, "trained", 0.1, 2.0, 1.0))
    assert len(again) == history.MAX_ENTRIES and again[-1].final_loss == 0.1
    assert again[-1].number == 6  # the run kept its number: #1 .. #5 were dropped, it was #6
    assert [e.number for e in history.by_number(again)] == list(range(6, history.MAX_ENTRIES + 6))
    assert history.differing(e.config for e in again[-2:]) == ["seed"]
    newest = history.record(again, history.HistoryEntry(reference().replace(train={"seed": 99}), "trained",
                                                        0.1, 2.0, 1.0))
    assert newest[-1].number == history.MAX_ENTRIES + 6  # never a number given before


@pytest.mark.parametrize("name", list(PRESETS))
def test_the_closest_preset_of_a_preset_is_itself_and_of_a_changed_one_the_fewest_changes_away(name):
    config = PRESETS[name]()
    assert history.closest_preset(config) == name
    assert history.closest_preset(config.replace(train={"seed": 7}, sampler={"num_samples": 200})) == name


def test_the_closest_preset_of_a_mixed_config_is_the_one_needing_fewest_changes():
    # improved with the reference's width: 1 change from improved, 4 from the reference
    assert history.closest_preset(improved().replace(denoiser={"hidden": 64})) == "improved"
    # the reference on flow matching with Euler: 2 changes from the reference (objective, sampler), 8 from
    # flow (time features and their number, lr, its schedule, EMA, coupling, sampler, sampling steps)
    mixed = reference().replace(schedule={"objective": "flow"}, sampler={"kind": "euler"})
    assert history.closest_preset(mixed) == "reference"
    assert history.closest_preset(flow_matching().replace(sampler={"kind": "euler"})) == "flow"


def _entry(config, points_name=None, source="trained"):
    return history.HistoryEntry(config, source, 0.2, 1.5, 1.0, points_name)


def test_labels_and_rows_name_the_preset_and_what_tells_each_run_apart():
    points = DataConfig("points", PointSet.from_array(np.random.default_rng(0).normal(size=(50, 2))))
    entries = ()
    for entry in [_entry(reference()), _entry(improved().replace(schedule={"num_timesteps": 50}, data=DataConfig("moons"))),
                  _entry(improved().replace(data=points), "drawn"),
                  _entry(improved().replace(data=points), "circle.csv", source="file:ab12")]:
        entries = history.record(entries, entry)
    labels = [history.label(e, entries) for e in entries]
    assert labels == ["#1 · reference", "#2 · improved · moons · T=50", "#3 · improved · drawn",
                      "#4 · improved · circle.csv · model file"]
    rows = history.table(entries, baseline=entries[1])
    assert rows["run"] == ["#1", "#2 (baseline)", "#3", "#4"]
    assert rows["settings"] == ["", "moons, T=50", "drawn", "circle.csv, model file"]
    assert len(set(zip(rows["preset"], rows["settings"], strict=True))) == 4  # no two rows alike
