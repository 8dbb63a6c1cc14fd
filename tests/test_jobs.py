"""Training jobs in worker processes (ui/jobs.py, ui/workers.py): no Streamlit needed.

The workers are real processes (``python -m ui.workers``); one small pool serves the module.
Nothing here asserts a duration: waits only guard against hanging, and time-dependent rules
(abandonment) run on an injected clock.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch

from diffusion import improved, reference
from diffusion.config import DataConfig, PointSet, SamplerConfig
from diffusion.monitoring import LossByT
from diffusion.training import Trainer
from ui import jobs, workers
from ui.jobs import RunRegistry, open_run
from ui.workers import WorkerPool, previewer_for


@pytest.fixture(scope="module")
def pool():
    pool = WorkerPool(2)
    yield pool
    pool.close()


@pytest.fixture
def make_registry(pool):
    made = []

    def make(**options) -> RunRegistry:
        registry = RunRegistry(pool, **options)
        made.append(registry)
        return registry

    yield make
    for registry in made:
        registry.close()
    wait_for(lambda: not any(w.job_id for w in pool.workers), what="workers handed back")


def small(epochs=120, base=reference, **train):
    return base().replace(train={"epochs": epochs, **train}, schedule={"num_timesteps": 100}).training


def points_key():
    points = PointSet.from_array(np.random.default_rng(3).normal(size=(300, 2)))
    return reference().replace(data=DataConfig("points", points), schedule={"num_timesteps": 100},
                               train={"epochs": 6, "batch_size": 64}).training


def wait_for(predicate, timeout=120.0, what="condition"):
    """Poll; the timeout only keeps a broken run from hanging the suite."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def assert_same_as_headless(run, key):
    """Weights and losses equal headless training bit for bit (so the workers' previews changed
    nothing), and so does the loss by noise level the workers kept, across any pauses."""
    headless = Trainer(key)
    by_t = LossByT.for_run(key.schedule.num_timesteps, key.total_steps)
    for record in headless.run():
        by_t.update(record.step, record.t, record.sample_losses)
    assert np.array_equal(run.losses, np.array(headless.losses))
    for mine, theirs in zip(run.model.parameters(), headless.sampling_model().parameters(), strict=True):
        assert torch.equal(mine, theirs)
    watched, expected = run.snapshot().loss_by_t, by_t.snapshot()
    assert watched.step == key.total_steps
    assert np.array_equal(watched.tail_loss, expected.tail_loss, equal_nan=True)
    assert np.array_equal(watched.recent_loss, expected.recent_loss, equal_nan=True)
    previews = run.snapshot().previews
    assert previews[-1, 0] == key.total_steps  # the last preview shows the final weights
    assert np.all(np.diff(previews[:, 0]) > 0)
    final = previewer_for(key).preview(headless.ema_model or headless.model)
    assert np.array_equal(run.snapshot().preview.points, final.points)  # the same x_T, the same weights


@pytest.mark.parametrize("key", [small(), small(base=improved), points_key()], ids=["reference", "improved", "points"])
def test_a_run_trained_by_a_worker_equals_one_trained_in_process_bit_for_bit(make_registry, key):
    registry = make_registry()
    job = registry.new_job("alice", key)
    job.start()
    wait_for(lambda: registry.finished(key) is not None, what="finished")
    assert_same_as_headless(registry.finished(key), key)
    assert registry.job("alice", key) is None  # a finished job leaves the session's list
    assert registry.finished(key).snapshot().status == "finished"


def test_pause_frees_the_worker_and_resume_continues_exactly(make_registry, pool):
    registry = make_registry()
    key = small(epochs=4000, base=improved)
    job = registry.new_job("alice", key)
    job.start()
    wait_for(lambda: job.snapshot().step >= 50, what="50 steps")
    job.pause()
    paused = job.snapshot()
    assert paused.status == "paused" and 0 < paused.step < 4000
    assert job.worker is None and len(pool.idle()) == pool.size  # the worker is free
    assert job.state is not None and job.state.step == paused.step  # the whole state is kept here
    time.sleep(0.1)
    assert job.snapshot().step == paused.step  # really stopped
    job.advance(7)
    wait_for(lambda: job.snapshot().status == "paused" and job.snapshot().step > paused.step, what="7 steps")
    assert job.snapshot().step == paused.step + 7  # Step advances exactly what it says
    job.start()
    wait_for(lambda: registry.finished(key) is not None, what="finished")
    assert_same_as_headless(registry.finished(key), key)


def test_runs_share_one_worker_fairly_and_each_ends_as_if_trained_alone(make_registry, pool):
    registry = make_registry(slice_seconds=0.05)
    keys = [small(epochs=1500, seed=s) for s in range(3)]
    started = [registry.new_job(owner, key) for owner, key in zip("abc", keys, strict=True)]
    # occupy all but one worker, so the three runs queue for the last one
    blockers = [registry.new_job(f"blocker{i}", small(epochs=20_000, seed=100 + i)) for i in range(pool.size - 1)]
    for job in blockers:
        job.start()
    wait_for(lambda: all(job.status == "running" for job in blockers), what="blockers running")
    for job in started:
        job.start()
    snapshots = [job.snapshot() for job in started]
    assert sorted(s.queue_position or 0 for s in snapshots) in ([0, 1, 2], [1, 2, 3])  # a place in line each
    # no starvation: every run makes progress before any of them finishes
    wait_for(lambda: all(job.snapshot().step > 0 for job in started) or any(registry.finished(k) for k in keys),
             what="all three progress")
    assert not any(registry.finished(k) for k in keys)
    wait_for(lambda: all(registry.finished(k) for k in keys), what="all three finish")
    for key in keys:
        assert_same_as_headless(registry.finished(key), key)
    for job in blockers:
        job.pause()


def test_a_killed_worker_fails_its_job_with_a_message_and_the_pool_keeps_serving(make_registry, pool):
    registry = make_registry()
    key = small(epochs=20_000, seed=5)
    job = registry.new_job("alice", key)
    job.start()
    wait_for(lambda: job.snapshot().step > 0, what="training")
    victim = job.worker
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: job.snapshot().status == "failed", what="failed")
    error = job.snapshot().error
    assert error.startswith("the training process stopped unexpectedly (exit code -9)")
    assert "Press Reset" in error
    wait_for(lambda: victim.pid not in pool.pids() and len(pool.pids()) == pool.size, what="a replacement")
    other = small(epochs=60, seed=6)
    registry.new_job("bob", other).start()
    wait_for(lambda: registry.finished(other) is not None, what="another run")
    assert_same_as_headless(registry.finished(other), other)


def test_an_unfinished_run_is_private_to_its_session_but_a_finished_one_is_shared(make_registry):
    registry = make_registry()
    key = small(epochs=300)
    job = registry.new_job("alice", key)
    assert registry.job("bob", key) is None and registry.finished(key) is None
    choice = open_run(registry, "bob", key)  # bob opens the same configuration: his own job
    assert choice.job is not None and choice.job is not job
    wait_for(lambda: registry.finished(key) is not None, what="bob's run")
    assert open_run(registry, "carol", key).finished is registry.finished(key)  # now anyone gets it


def test_opening_another_configuration_pauses_the_running_one_and_coming_back_resumes_it(make_registry):
    registry = make_registry()
    first, second = small(epochs=8000), small(epochs=8000, lr=3e-3)
    job = open_run(registry, "alice", first).job
    wait_for(lambda: job.snapshot().step > 0, what="training")
    open_run(registry, "alice", second)
    wait_for(lambda: job.snapshot().status == "paused", what="paused")
    assert job.note.startswith("paused when") and job.resume_on_return
    assert open_run(registry, "alice", first).job is job
    wait_for(lambda: job.snapshot().active, what="resumed")
    for other in registry.jobs_of("alice"):
        other.pause()


def test_a_job_nobody_watches_pauses_itself_and_one_without_a_heartbeat_too(make_registry):
    now = {"t": 0.0}
    registry = make_registry(clock=lambda: now["t"])
    closed = registry.new_job("alice", small(epochs=20_000, seed=1))
    closed.is_watched = lambda: False  # the browser tab was closed
    closed.start()
    registry.tick()
    wait_for(lambda: closed.snapshot().status == "paused", what="paused")
    assert "no page" in closed.note
    silent = registry.new_job("bob", small(epochs=20_000, seed=2))
    silent.start()
    registry.tick()
    assert silent.snapshot().active  # its heartbeat is fresh
    now["t"] += jobs.ABANDON_AFTER_S + 1  # no heartbeat since
    registry.tick()
    wait_for(lambda: silent.snapshot().status == "paused", what="paused")
    assert "no page" in silent.note


def test_a_diverging_run_fails_keeps_its_curve_and_is_never_stored(make_registry):
    from tests.test_robustness_runs import diverging

    registry = make_registry()
    key = diverging().training
    job = registry.new_job("alice", key)
    job.start()
    wait_for(lambda: job.snapshot().status == "failed", what="failed")
    snapshot = job.snapshot()
    trainer = Trainer(key)
    with pytest.raises(Exception) as error:
        trainer.train()
    assert snapshot.step == trainer.step and np.array_equal(snapshot.losses, trainer.losses)  # up to the last good step
    assert snapshot.error == str(error.value)
    assert registry.finished(key) is None


def test_finished_runs_are_bounded_least_recently_used_first(make_registry):
    registry = make_registry(max_finished=2)
    keys = [small(epochs=20, seed=s) for s in range(3)]
    for key in keys[:2]:
        registry.new_job("alice", key).start()
        wait_for(lambda key=key: registry.finished(key) is not None)
    registry.finished(keys[0])  # touch: keys[1] is now the oldest
    registry.new_job("alice", keys[2]).start()
    wait_for(lambda: registry.finished(keys[2]) is not None)
    assert registry.finished(keys[1]) is None
    assert registry.finished(keys[0]) is not None


def test_paused_jobs_beyond_the_cap_are_evicted_oldest_first(make_registry):
    registry = make_registry(max_jobs=100, max_jobs_per_owner=2)
    keys = [small(epochs=50, seed=s) for s in range(3)]
    for key in keys:
        registry.new_job("alice", key)
    assert registry.job("alice", keys[0]) is None
    assert registry.job("alice", keys[1]) is not None and registry.job("alice", keys[2]) is not None


def test_samplings_of_a_finished_run_are_memoised_per_sampler(make_registry):
    registry = make_registry()
    key = small(epochs=50)
    registry.new_job("alice", key).start()
    wait_for(lambda: registry.finished(key) is not None)
    run = registry.finished(key)
    ddpm = SamplerConfig(num_samples=200, num_frames=10)
    first, scores = run.sampled(ddpm)
    again, _ = run.sampled(ddpm)
    assert first is again
    ddim, _ = run.sampled(SamplerConfig(kind="ddim", sample_steps=20, num_samples=200, num_frames=10))
    assert ddim is not first and ddim.frames.shape == (10, 200, 2)
    assert np.isfinite(scores.energy_distance.value)


def test_pacing_starts_each_chunk_at_its_share_of_the_paced_time_and_the_first_at_once():
    assert workers.pace_wait(5.0, 0, 1000, wall=0.0) == 0.0  # the first chunk runs at once
    assert workers.pace_wait(5.0, 500, 1000, wall=1.0) == pytest.approx(1.5)  # half the run: 2.5 s in
    assert workers.pace_wait(5.0, 500, 1000, wall=3.0) == 0.0  # behind the pace: no wait
    assert workers.pace_wait(0.0, 500, 1000, wall=0.0) == 0.0  # pacing off


def test_a_paced_run_gives_the_same_result(make_registry):
    registry = make_registry()
    key = small(epochs=200)
    job = registry.new_job("alice", key)
    job.pace_seconds = 1.0
    job.start()
    wait_for(lambda: registry.finished(key) is not None)
    assert_same_as_headless(registry.finished(key), key)


def test_closing_a_pool_leaves_no_worker_process():
    pool = WorkerPool(2)
    pids = pool.pids()
    registry = RunRegistry(pool)
    registry.new_job("alice", small(epochs=20_000)).start()
    wait_for(lambda: any(w.job_id for w in pool.workers), what="training")
    registry.close()
    pool.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # reaped: not even a zombie is left
            os.kill(pid, 0)


def test_pages_redraw_less_often_only_while_more_runs_want_a_worker_than_there_are():
    assert jobs.poll_interval(1, 2) == jobs.POLL_SECONDS
    assert jobs.poll_interval(2, 2) == jobs.POLL_SECONDS
    assert jobs.poll_interval(4, 2) == pytest.approx(2 * jobs.POLL_SECONDS)  # each run gets half a worker
    assert jobs.poll_interval(100, 2) == jobs.MAX_POLL_SECONDS  # but at least once a second


def test_a_page_can_wait_for_a_new_runs_first_points_and_not_for_a_paused_one(make_registry):
    registry = make_registry()
    key = small(epochs=4000, base=improved)
    job = registry.new_job("alice", key)
    assert job.status == "paused"
    assert job.wait_for_first_steps(30.0) is False  # not training: no wait, no steps
    job.start()
    assert job.wait_for_first_steps(30.0) is True  # woken by the worker's first progress message
    assert job.snapshot().step > 0 and len(job.snapshot().losses) == job.snapshot().step
    job.pause()
