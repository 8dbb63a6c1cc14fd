"""DDPM Lab: watch a denoising diffusion model learn 2-D points.

    streamlit run dashboard.py

The page is the loop its users came for: change a setting in the sidebar, watch the model train
and then denoise. The first view holds the training (its controls and live loss) beside the samples
(live while it trains, then the reverse process animated). Below, tabs hold the views that explain
why; only the open tab is computed and sent, and it is named in the link.
"""

import streamlit as st
import torch

from ui import compare, controls, density, guidance, panels

st.set_page_config(page_title="DDPM Lab", page_icon="🌀", layout="wide")
torch.set_num_threads(1)  # the MLP is tiny: extra threads only contend with the server

panels.freeze_imports()
controls.init_state_from_url()
config, display = controls.sidebar()
controls.write_url()

panels.header()
if config is None:
    panels.no_experiment_note()
    compare.history_panel()
    st.stop()

pinned = compare.baseline()
training_column, samples_column = st.columns(2, gap="medium")
with training_column:
    panels.training_heading(config)  # sent before the run is looked up: a changed T shows its ᾱ_T at once
run = panels.training(config, display)
with training_column:
    panels.training_panel(run, pinned.run.losses if pinned and pinned.run else None)
    compare.baseline_note(pinned, config)
with samples_column:
    sampled = panels.samples_panel(run, config, display, pinned)
if sampled is not None:
    compare.remember(run.finished, config, sampled[1])

view, tab = controls.view_tabs()
with tab:
    if view == "quality":
        panels.quality_panel(run)
    elif view == "noise":
        schedule_column, data_column = st.columns(2)
        with schedule_column:
            panels.schedule_panel(config)
        with data_column:
            panels.forward_panel(config, display)
    elif run.finished is None:
        panels.after_training_note()
    elif view == "samples":
        if sampled is None:
            panels.after_sampling_note()
        else:
            panels.results_panel(run.finished, *sampled, config, panels.pinned_samples(pinned))
            compare.clipping_note(config, sampled[1])
            compare.noise_note(config)
            panels.downloads_panel(run.finished, sampled[0], config, display)
    elif view == "field":
        panels.field_panel(run.finished, display)
        panels.drift_panel(run.finished, config, display)
    elif view == "density":
        learned = density.density_panel(run.finished, config)
        if learned is not None:
            density.probe_panel(run.finished, config, learned)
    elif view == "guidance":
        guidance.guidance_panel(run.finished, config, display.frame_ms)
    elif view == "compare":
        compare.history_panel()
        compare.budget_panel(run.finished, config, pinned)
