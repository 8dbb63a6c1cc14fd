"""DDPM Lab: watch a denoising diffusion model learn 2-D points.

    streamlit run dashboard.py

The page, top to bottom: the sidebar's settings; the noise schedule and the data being noised
(filled in after the training panel, so the live loss is the first chart the browser gets; a fresh
page comes in three runs, each asked for once the browser has painted the last: the loss as an
SVG, then the training charts and the schedule, then everything);
training with its live loss, samples and loss by noise level; then, once trained, the reverse
process animated, the results against the data, the sampling budget, the learned field against
the ideal one, forward against reverse, downloads; and the session's runs to compare.
"""

import streamlit as st
import torch

from ui import compare, controls, panels

st.set_page_config(page_title="DDPM Lab", page_icon="🌀", layout="wide")
torch.set_num_threads(1)  # the MLP is tiny: extra threads only contend with the server

panels.freeze_imports()
controls.init_state_from_url()
config, display = controls.sidebar()
controls.write_url()

panels.header()
if config is None:
    st.info("Fix the setting marked in the sidebar to continue; your finished runs are kept.")
    compare.history_panel()
    st.stop()

schedule_column, data_column = st.columns(2)  # filled after training's first draw: the loss reaches the browser first
stage = panels.paint_stage()  # a fresh page: first the loss, then its charts, then the animations and results

pinned = compare.baseline()
run = panels.training_panel(config, display, pinned.run.losses if pinned and pinned.run else None, stage == 0)
compare.baseline_note(pinned, config)
if stage < panels.FULL_PAGE:
    with schedule_column:
        if stage > 0:
            panels.schedule_panel(config)
        panels.draw_the_rest_when_painted(stage)
    st.stop()
with schedule_column:
    panels.schedule_panel(config)
with data_column:
    panels.forward_panel(config, display)
sampled = panels.sampling(run, config) if run is not None else None
if sampled is not None:
    trajectory, scores = sampled
    compare.remember(run, config, scores)
    base = pinned.sampled() if pinned is not None else None
    if base is not None:  # drawn in the baseline's own units
        base = (panels.in_user_units(pinned.entry.config.data, base.trajectory), base.scores)
    animation_column, comparison_column = st.columns(2)
    with animation_column:
        panels.reverse_panel(run, trajectory, config, display, base and (base[0], pinned.entry.key))
        compare.noise_note(config)
    with comparison_column:
        panels.results_panel(run, trajectory, scores, config, base and (base[0], base[1], pinned.entry.key))
        compare.clipping_note(config, scores)
    compare.budget_panel(run, config, pinned)
    panels.field_panel(run, display)
    panels.drift_panel(run, config, display)
    panels.downloads_panel(run, trajectory, config, display)
compare.history_panel()
