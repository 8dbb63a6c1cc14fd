"""Background training jobs and the store of finished runs (ui/jobs.py): no Streamlit needed."""

import time

import numpy as np
import torch

from diffusion import reference
from diffusion.config import SamplerConfig
from diffusion.training import Trainer
from ui import jobs
from ui.jobs import RunRegistry


def small(epochs=120, **train):
    return reference().replace(train={"epochs": epochs, **train}, schedule={"num_timesteps": 100}).training


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def test_a_job_trains_in_the_background_and_its_run_is_stored_exactly_as_headless_training():
    registry = RunRegistry()
    key = small()
    job = registry.new_job("alice", key)
    job.start()
    wait_for(lambda: registry.finished(key) is not None)
    run = registry.finished(key)
    headless = Trainer(key).train()
    assert np.array_equal(run.losses, np.array(headless.losses))  # chunked in a thread == one go
    for mine, theirs in zip(run.model.parameters(), headless.sampling_model().parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert registry.job("alice", key) is None  # a finished job leaves the session's list
    assert run.snapshot().status == "finished"


def test_pause_keeps_progress_and_resume_continues_to_the_same_result():
    registry = RunRegistry()
    key = small(epochs=600)
    job = registry.new_job("alice", key)
    job.start()
    wait_for(lambda: job.trainer.step >= 50)
    job.pause()
    paused_at = job.snapshot()
    assert paused_at.status == "paused" and 0 < paused_at.step < 600
    time.sleep(0.05)
    assert job.trainer.step == paused_at.step  # really stopped
    job.step(7)
    assert job.trainer.step == paused_at.step + 7  # step advances exactly what it says
    job.start()
    wait_for(lambda: registry.finished(key) is not None)
    assert np.array_equal(registry.finished(key).losses, np.array(Trainer(key).train().losses))


def test_an_unfinished_run_is_private_to_its_session_but_a_finished_one_is_shared():
    registry = RunRegistry()
    key = small(epochs=300)
    job = registry.new_job("alice", key)
    job.start()
    job.pause()
    assert job.status == "paused" and job.trainer.step < 300
    assert registry.job("bob", key) is None
    assert registry.finished(key) is None
    job.step(300 - job.trainer.step)  # finish it
    assert registry.finished(key) is not None  # now anyone with the same config gets it


def test_finished_runs_are_bounded_least_recently_used_first():
    registry = RunRegistry(max_finished=2)
    keys = [small(epochs=20, seed=s) for s in range(3)]
    for key in keys[:2]:
        registry.new_job("alice", key).step(20)
    registry.finished(keys[0])  # touch: keys[1] is now the oldest
    registry.new_job("alice", keys[2]).step(20)
    assert registry.finished(keys[1]) is None
    assert registry.finished(keys[0]) is not None and registry.finished(keys[2]) is not None


def test_looking_at_another_config_pauses_the_running_one_and_keeps_it():
    registry = RunRegistry()
    first, second = small(epochs=5000), small(epochs=5000, lr=3e-3)
    job = registry.new_job("alice", first)
    job.start()
    registry.focus("alice", second)
    wait_for(lambda: job.status == "paused")
    assert job.note.startswith("paused when")
    assert registry.job("alice", first) is job and job.trainer.step > 0


def test_a_job_nobody_watches_pauses_itself(monkeypatch):
    registry = RunRegistry()
    job = registry.new_job("alice", small(epochs=5000))
    job.is_watched = lambda: False  # the browser tab was closed
    job.start()
    wait_for(lambda: job.status == "paused")
    assert "no page" in job.note
    assert not job.alive


def test_a_diverging_run_fails_keeps_its_curve_and_is_never_stored(monkeypatch):
    registry = RunRegistry()
    key = small(epochs=200)
    job = registry.new_job("alice", key)
    real_step = job.trainer._train_step
    calls = {"n": 0}

    def poisoned():
        calls["n"] += 1
        if calls["n"] == 40:  # a non-finite loss at step 40
            with torch.no_grad():
                job.trainer.model.net[0].weight.fill_(float("nan"))
        return real_step()

    monkeypatch.setattr(job.trainer, "_train_step", poisoned)
    job.start()
    wait_for(lambda: job.status == "failed")
    snapshot = job.snapshot()
    assert snapshot.step == 39 and len(snapshot.losses) == 39  # the curve up to the last good step
    assert "step 40" in snapshot.error and "lower learning rate" in snapshot.error
    assert registry.finished(key) is None


def test_running_jobs_never_exceed_the_slots(monkeypatch):
    monkeypatch.setattr(jobs, "CHUNK_STEPS", 5)
    registry = RunRegistry(max_running=1)
    busy = {"now": 0, "peak": 0}
    original = jobs.TrainingJob._advance

    def counted(self, steps):
        busy["now"] += 1
        busy["peak"] = max(busy["peak"], busy["now"])
        time.sleep(0.002)
        try:
            original(self, steps)
        finally:
            busy["now"] -= 1

    monkeypatch.setattr(jobs.TrainingJob, "_advance", counted)
    started = [registry.new_job(owner, small(epochs=60)) for owner in ("a", "b", "c")]
    for job in started:
        job.start()
    wait_for(lambda: all(job.status == "finished" for job in started))
    assert busy["peak"] == 1


def test_paused_jobs_beyond_the_cap_are_evicted_oldest_first():
    registry = RunRegistry(max_jobs=100, max_jobs_per_owner=2)
    keys = [small(epochs=50, seed=s) for s in range(3)]
    for key in keys:
        registry.new_job("alice", key)
    assert registry.job("alice", keys[0]) is None
    assert registry.job("alice", keys[1]) is not None and registry.job("alice", keys[2]) is not None


def test_samplings_of_a_finished_run_are_memoised_per_sampler():
    registry = RunRegistry()
    key = small(epochs=50)
    registry.new_job("alice", key).step(50)
    run = registry.finished(key)
    ddpm = SamplerConfig(num_samples=200, num_frames=10)
    first, scores = run.sampled(ddpm)
    again, _ = run.sampled(ddpm)
    assert first is again
    ddim, _ = run.sampled(SamplerConfig(kind="ddim", steps=20, num_samples=200, num_frames=10))
    assert ddim is not first and ddim.frames.shape == (10, 200, 2)
    assert np.isfinite(scores.energy_distance.value)


def test_pacing_stretches_a_short_run_in_time_but_not_in_result():
    registry = RunRegistry()
    key = small(epochs=50)
    job = registry.new_job("alice", key)
    job.pace_seconds = 2.0
    start = time.monotonic()
    job.start()
    wait_for(lambda: registry.finished(key) is not None)
    assert time.monotonic() - start >= 1.95  # waited for the pace
    assert job.trainer.elapsed < 1.0  # while 50 steps of training took far less
    assert np.array_equal(registry.finished(key).losses, np.array(Trainer(key).train().losses))
