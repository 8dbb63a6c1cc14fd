"""The runtime (``runtime/``): runs and tasks on worker processes, with no Streamlit.

The workers are real processes (``python -m runtime.worker``), then Ray actors (the same tests on
the Ray backend); one registry of two serves the module per backend, reset between tests. Nothing here asserts a duration: waits only guard against hanging;
Pause, Step and Reset are checked in optimizer steps; time-dependent rules (slices, abandoned
pages) run on an injected clock.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import numpy as np
import pytest
import torch

from diffusion import flow_matching, improved, reference
from diffusion.budget import budget_rows
from diffusion.config import DataConfig, PointSet, SamplerConfig
from diffusion.datasets import make_dataset
from diffusion.monitoring import LossByT
from diffusion.schedules import NoiseSchedule
from diffusion.training import Trainer
from runtime import registry as registry_module
from runtime import tasks
from runtime.messages import Compute, Failed, Finished, HandedBack, Progress, TaskDone, TaskProgress, Train
from runtime.registry import RunRegistry, open_run, poll_interval
from runtime.state import ALLOWED, IllegalTransition, RunState
from runtime.watch import previewer_for
from runtime.worker import CHUNK_STEPS, pace_wait, run_job


@pytest.fixture(scope="module", params=["local", "ray"])
def shared(request):
    """One registry of two workers for the module, on each backend in turn: local worker processes,
    then actors on a Ray cluster of two simulated nodes (``ray_cluster``)."""
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    registry = RunRegistry(2, backend=request.param)
    yield registry
    registry.close()


def lost_worker(runs) -> str:
    """What a run's error says about a worker killed with SIGKILL, on ``runs``' backend."""
    return "exit code -9" if runs.backend == "local" else "its Ray worker was lost: ActorDiedError"


@pytest.fixture
def runs(shared):
    """The module's registry, emptied, with its options restored after the test."""
    options = {name: getattr(shared, name) for name in ("clock", "slice_seconds", "max_finished", "max_jobs",
                                                       "max_jobs_per_owner")}
    shared.reset()
    wait_for(lambda: not shared._busy(), what="workers handed back")
    yield shared
    shared.reset()
    for name, value in options.items():
        setattr(shared, name, value)
    wait_for(lambda: not shared._busy(), what="workers handed back")


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
        time.sleep(0.005)


def headless(key, steps=None) -> Trainer:
    trainer = Trainer(key)
    for _ in trainer.run(steps):
        pass
    return trainer


def assert_same_as_headless(run, key):
    """Weights and losses equal headless training bit for bit (so the workers' previews changed
    nothing), and so does the loss by noise level the workers kept, across any pauses."""
    trainer = Trainer(key)
    by_t = LossByT.for_run(key.schedule.num_timesteps, key.total_steps)
    for record in trainer.run():
        by_t.update(record.step, record.t, record.sample_losses)
    assert np.array_equal(run.losses, np.array(trainer.losses))
    for name, value in trainer.sampling_model().state_dict().items():
        assert torch.equal(run.weights[name], value), name
    watched, expected = run.snapshot().loss_by_t, by_t.snapshot()
    assert watched.step == key.total_steps
    assert np.array_equal(watched.tail_loss, expected.tail_loss, equal_nan=True)
    assert np.array_equal(watched.recent_loss, expected.recent_loss, equal_nan=True)
    previews = run.snapshot().previews
    assert previews[-1, 0] == key.total_steps  # the last preview shows the final weights
    assert np.all(np.diff(previews[:, 0]) > 0)
    final = previewer_for(key).preview(trainer.ema_model or trainer.model)
    assert np.array_equal(run.snapshot().preview.points, final.points)  # the same x_T, the same weights


def train_to_end(runs, owner, key):
    run = runs.new_job(owner, key)
    runs.start(run)
    wait_for(lambda: runs.finished(key) is not None, what="finished")
    return runs.finished(key)


# --- one run's state ----------------------------------------------------------------------------


def test_every_transition_outside_the_table_is_refused_by_name():
    key = small()
    for source, targets in ALLOWED.items():
        for target in ALLOWED:
            run = RunState("alice", key)
            run.status = source
            if target in targets:
                run._to(target)
                assert run.status == target
            else:
                with pytest.raises(IllegalTransition, match=f"{source} -> {target}"):
                    run._to(target)


def test_a_stronger_stop_reason_wins_and_a_second_ask_sends_nothing():
    run = RunState("alice", small())
    run.queue(run.key.total_steps, now=0.0)
    run.assign(object(), now=0.0)
    assert run.ask_stop("preempt") is True  # a Stop goes out once
    assert run.ask_stop("pause", "paused by you") is False and run.stop_reason == "pause"
    assert run.ask_stop("preempt") is False and run.stop_reason == "pause"  # weaker: ignored
    assert run.ask_stop("discard") is False and run.stop_reason == "discard"


# --- the worker's loop, in this process -----------------------------------------------------------


class Recorder:
    """A worker channel in this process: keeps what the job sends, and asks it to stop once a
    progress message reports ``stop_after`` steps or more."""

    def __init__(self, stop_after: int | None = None):
        self.messages, self.stop_after, self.stop_seen_at = [], stop_after, None

    def emit(self, message):
        self.messages.append(message)
        if isinstance(message, Progress) and self.stop_after is not None and message.step >= self.stop_after \
                and self.stop_seen_at is None:
            self.stop_seen_at = message.step

    def stop_asked(self, job_id):
        return self.stop_seen_at is not None

    def wait(self, seconds, job_id):
        pass


def test_a_stop_takes_effect_within_one_chunk_of_steps():
    key = small(epochs=5000, base=improved)
    channel = Recorder(stop_after=300)
    run_job(Train(1, key, None, None, key.total_steps, 0.0, 0.0), channel)
    back = channel.messages[-1]
    assert isinstance(back, HandedBack)
    # the stop was seen at a progress message; the run handed back before another chunk began
    assert channel.stop_seen_at <= back.state.step <= channel.stop_seen_at + CHUNK_STEPS


def test_a_train_message_run_inline_equals_headless_training_and_reports_every_loss_once():
    key = small(epochs=130, base=improved)
    channel = Recorder()
    run_job(Train(7, key, None, None, key.total_steps, 0.0, 0.0), channel)
    progress = [m for m in channel.messages if isinstance(m, Progress)]
    finished = channel.messages[-1]
    assert isinstance(finished, Finished) and finished.job_id == 7
    losses = np.concatenate([m.new_losses for m in progress])
    assert np.array_equal(losses, headless(key).losses)  # each step's loss exactly once, in order
    assert [m.step for m in progress] == sorted({m.step for m in progress})


def test_step_hands_back_exactly_at_its_step_and_a_resumed_run_continues_bit_for_bit():
    key = small(epochs=200, base=improved)
    first = Recorder()
    run_job(Train(1, key, None, None, 77, 0.0, 0.0), first)
    back = first.messages[-1]
    assert isinstance(back, HandedBack) and back.state.step == 77
    second = Recorder()
    run_job(Train(1, key, back.state, back.watch_state, key.total_steps, 0.0, back.wall), second)
    done = second.messages[-1]
    expected = headless(key).state()
    for name, value in expected.model.items():
        assert torch.equal(done.state.model[name], value), name
    assert [m for m in second.messages if isinstance(m, Progress)][0].step > 77


def test_a_failing_task_is_reported_as_the_jobs_failure_with_its_error():
    key = small()
    channel = Recorder()
    run_job(Compute(3, tasks.Sample(SamplerConfig()), key, {"not": torch.zeros(1)}), channel)
    (failed,) = channel.messages
    assert isinstance(failed, Failed) and failed.job_id == 3 and failed.wall is None
    assert failed.message.startswith("this computation stopped: RuntimeError(")


# --- training on the workers ----------------------------------------------------------------------


@pytest.mark.parametrize("key", [small(), small(base=improved), points_key(), small(base=flow_matching, epochs=60)],
                         ids=["reference", "improved", "points", "flow"])
def test_a_run_trained_by_a_worker_equals_one_trained_in_process_bit_for_bit(runs, key):
    run = train_to_end(runs, "alice", key)
    assert_same_as_headless(run, key)
    assert runs.job("alice", key) is None  # a finished run leaves the session's list
    assert run.snapshot().status == "finished"


def test_pause_frees_the_worker_at_once_and_resume_continues_exactly(runs):
    key = small(epochs=4000, base=improved)
    run = runs.new_job("alice", key)
    runs.start(run)
    wait_for(lambda: run.step >= 50, what="50 steps")
    runs.pause(run)
    assert run.status == "stopping"  # asked at once, without waiting for the worker
    wait_for(lambda: run.status == "paused", what="handed back")
    assert run.worker is None and not runs._busy()  # the worker is free
    assert 0 < run.step < 4000 and run.trainer_state.step == run.step  # the whole state is kept here
    np.testing.assert_array_equal(runs.snapshot(run).losses, headless(key, run.step).losses)
    runs.advance(run, 7)
    before = run.step
    wait_for(lambda: run.status == "paused" and run.step > before, what="7 steps")
    assert run.step == before + 7  # Step advances exactly what it says
    runs.start(run)
    wait_for(lambda: runs.finished(key) is not None, what="finished")
    assert_same_as_headless(runs.finished(key), key)


def test_reset_throws_the_run_away_and_starts_fresh_at_step_zero(runs):
    key = small(epochs=20_000, base=improved)
    old = runs.new_job("alice", key)
    runs.start(old)
    wait_for(lambda: old.step > 0, what="training")
    new = runs.new_job("alice", key)  # what Reset does
    assert new is not old and new.status == "paused" and new.step == 0
    assert runs.job("alice", key) is new
    wait_for(lambda: old.status == "discarded" and not runs._busy(), what="the old run handed back")
    assert old.id not in runs._runs and runs.finished(key) is None


def test_runs_waiting_for_one_worker_take_turns_and_each_ends_as_if_trained_alone(runs):
    now = {"t": 0.0}
    runs.clock, runs.slice_seconds = (lambda: now["t"]), 1.0
    blocker = runs.new_job("blocker", small(epochs=20_000, seed=100))
    runs.start(blocker)  # holds one of the two workers throughout
    wait_for(lambda: blocker.status == "running", what="blocker running")
    keys = [small(epochs=1000, seed=s) for s in range(3)]
    started = [runs.new_job(owner, key) for owner, key in zip("abc", keys, strict=True)]
    for run in started:
        runs.start(run)
    first, waiting = started[0], started[1:]
    assert first.status == "running" and [runs.snapshot(r).queue_position for r in waiting] == [1, 2]
    runs._watching[blocker.id] = lambda: False  # the blocker's page is gone: it pauses at the next tick
    while not all(runs.finished(k) for k in keys):
        steps = [r.step for r in started]

        def progressed(steps=steps):
            return any(r.step > s for r, s in zip(started, steps, strict=True)) or all(runs.finished(k) for k in keys)

        wait_for(progressed, what="progress")
        now["t"] += 1.5  # every slice ends: the running run hands its worker to the next in line
        for run in started:
            runs.heartbeat(run)  # their pages are open
        runs.tick()
    assert min(r.step for r in started) == 1000
    for key in keys:
        assert_same_as_headless(runs.finished(key), key)


def test_a_killed_worker_fails_its_run_with_a_message_and_the_pool_keeps_serving(runs):
    key = small(epochs=20_000, seed=5)
    run = runs.new_job("alice", key)
    runs.start(run)
    wait_for(lambda: run.step > 0, what="training")
    victim = run.worker
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: run.status == "failed", what="failed")
    assert run.error.startswith(f"the training process stopped unexpectedly ({lost_worker(runs)})")
    assert "Press Reset" in run.error and run.wall > 0  # the last known time stands
    wait_for(lambda: victim.pid not in runs.pool.pids() and len(runs.pool.pids()) == runs.pool.size,
             what="a replacement")
    other = small(epochs=60, seed=6)
    assert_same_as_headless(train_to_end(runs, "bob", other), other)


def test_an_unfinished_run_is_private_to_its_session_but_a_finished_one_is_shared(runs):
    key = small(epochs=300)
    run = runs.new_job("alice", key)
    assert runs.job("bob", key) is None and runs.finished(key) is None
    choice = open_run(runs, "bob", key)  # bob opens the same configuration: his own run
    assert choice.job is not None and choice.job is not run
    wait_for(lambda: runs.finished(key) is not None, what="bob's run")
    assert open_run(runs, "carol", key).finished is runs.finished(key)  # now anyone gets it


def test_opening_another_configuration_pauses_the_running_one_and_coming_back_resumes_it(runs):
    first, second = small(epochs=8000), small(epochs=8000, lr=3e-3)
    run = open_run(runs, "alice", first).job
    wait_for(lambda: run.step > 0, what="training")
    open_run(runs, "alice", second)
    wait_for(lambda: run.status == "paused", what="paused")
    assert run.note.startswith("paused when") and run.resume_on_return
    assert open_run(runs, "alice", first).job is run
    assert run.active  # resumed


def test_a_run_nobody_watches_pauses_itself_and_one_without_a_heartbeat_too(runs):
    now = {"t": 0.0}
    runs.clock = lambda: now["t"]
    closed = runs.new_job("alice", small(epochs=20_000, seed=1))
    runs.watch(closed, lambda: False)  # the browser tab was closed
    runs.start(closed)
    runs.tick()
    wait_for(lambda: closed.status == "paused", what="paused")
    assert "no page" in closed.note
    silent = runs.new_job("bob", small(epochs=20_000, seed=2))
    runs.start(silent)
    runs.tick()
    assert silent.active  # its heartbeat is fresh
    now["t"] += registry_module.ABANDON_AFTER_S + 1  # no heartbeat since
    runs.tick()
    wait_for(lambda: silent.status == "paused", what="paused")
    assert "no page" in silent.note


def test_a_diverging_run_fails_keeps_its_curve_and_is_never_stored(runs):
    from tests.test_robustness_runs import diverging

    key = diverging().training
    run = runs.new_job("alice", key)
    runs.start(run)
    wait_for(lambda: run.status == "failed", what="failed")
    snapshot = runs.snapshot(run)
    trainer = Trainer(key)
    with pytest.raises(Exception) as error:
        trainer.train()
    assert snapshot.step == trainer.step and np.array_equal(snapshot.losses, trainer.losses)  # up to the last good step
    assert snapshot.error == str(error.value)
    assert runs.finished(key) is None


def test_finished_runs_are_bounded_least_recently_used_first(runs):
    runs.max_finished = 2
    keys = [small(epochs=20, seed=s) for s in range(3)]
    for key in keys[:2]:
        train_to_end(runs, "alice", key)
    runs.finished(keys[0])  # touch: keys[1] is now the oldest
    train_to_end(runs, "alice", keys[2])
    assert runs.finished(keys[1]) is None
    assert runs.finished(keys[0]) is not None


def test_paused_runs_beyond_the_cap_are_evicted_oldest_first(runs):
    runs.max_jobs_per_owner = 2
    keys = [small(epochs=50, seed=s) for s in range(3)]
    for key in keys:
        runs.new_job("alice", key)
    assert runs.job("alice", keys[0]) is None
    assert runs.job("alice", keys[1]) is not None and runs.job("alice", keys[2]) is not None


def test_pacing_starts_each_chunk_at_its_share_of_the_paced_time_and_the_first_at_once():
    assert pace_wait(5.0, 0, 1000, wall=0.0) == 0.0  # the first chunk runs at once
    assert pace_wait(5.0, 500, 1000, wall=1.0) == pytest.approx(1.5)  # half the run: 2.5 s in
    assert pace_wait(5.0, 500, 1000, wall=3.0) == 0.0  # behind the pace: no wait
    assert pace_wait(0.0, 500, 1000, wall=0.0) == 0.0  # pacing off


def test_a_paced_run_gives_the_same_result(runs):
    key = small(epochs=200)
    run = runs.new_job("alice", key)
    runs.watch(run, lambda: True, pace_seconds=0.5)
    runs.start(run)
    wait_for(lambda: runs.finished(key) is not None)
    assert_same_as_headless(runs.finished(key), key)


def test_closing_a_registry_leaves_no_worker_process():
    registry = RunRegistry(2)
    pids = registry.pool.pids()
    run = registry.new_job("alice", small(epochs=20_000))
    registry.start(run)
    wait_for(lambda: run.step > 0, what="training")
    registry.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # reaped: not even a zombie is left
            os.kill(pid, 0)


def test_two_registries_each_get_their_own_workers_messages():
    a, b = RunRegistry(1), RunRegistry(1)
    try:
        keys = [small(epochs=40, seed=s) for s in (1, 2)]
        for registry, key in zip((a, b), keys, strict=True):
            registry.start(registry.new_job("alice", key))
        wait_for(lambda: a.finished(keys[0]) is not None and b.finished(keys[1]) is not None, what="both")
        assert a.finished(keys[1]) is None and b.finished(keys[0]) is None
        assert set(a.pool.pids()).isdisjoint(b.pool.pids())
    finally:
        a.close()
        b.close()


def test_pages_redraw_less_often_only_while_more_runs_want_a_worker_than_there_are():
    assert poll_interval(1, 2) == registry_module.POLL_SECONDS
    assert poll_interval(2, 2) == registry_module.POLL_SECONDS
    assert poll_interval(4, 2) == pytest.approx(2 * registry_module.POLL_SECONDS)  # each run gets half a worker
    assert poll_interval(100, 2) == registry_module.MAX_POLL_SECONDS  # but at least once a second


def test_a_page_can_wait_for_a_new_runs_first_points_and_not_for_a_paused_one(runs):
    key = small(epochs=4000, base=improved)
    run = runs.new_job("alice", key)
    assert runs.wait_for_first_steps(run, 30.0) is False  # not training: no wait, no steps
    runs.start(run)
    assert runs.wait_for_first_steps(run, 30.0) is True  # woken by the worker's first progress message
    snapshot = runs.snapshot(run)
    assert snapshot.step > 0 and len(snapshot.losses) == snapshot.step


# --- tasks on finished runs -------------------------------------------------------------------------


def in_process(run, task):
    """What the task computes in this process, on the same weights."""
    model = tasks.model_from(run.key, run.weights)
    return tasks.compute(task, run.key, model, lambda *args: None, lambda: False)


def assert_equal_results(a, b):
    """Equal field by field, arrays bit for bit (timings aside)."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        for f in dataclasses.fields(a):
            if f.name != "seconds":
                assert_equal_results(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, tuple | list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_equal_results(x, y)
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b, equal_nan=True)
    else:
        assert a == b or (a != a and b != b)  # NaN equals NaN here


@pytest.mark.parametrize("base", [improved, flow_matching], ids=["ddpm", "flow"])
def test_every_task_computed_by_a_worker_equals_the_same_computation_in_process(runs, base):
    key = small(epochs=150, base=base)
    run = train_to_end(runs, "alice", key)
    sampler = dataclasses.replace(base().sampler, num_samples=200, num_frames=8)
    for task in (tasks.Sample(sampler), tasks.Field("eps"), tasks.Field("score"), tasks.Drift(sampler),
                 tasks.Budget(200, 0, sampler.variance, False), tasks.Floors(key.data, key.schedule, "independent"),
                 tasks.Density(8), tasks.Probe((0.5, -0.25), True, steps=20), tasks.Probe((2.0, 2.0), False, steps=20)):
        state = runs.compute(run, task)
        assert runs.wait_for(state, 120), task
        assert state.status == "done", state.error
        assert_equal_results(state.result, in_process(run, task))
        assert runs.compute(run, task) is state  # asked again: the same result, not computed again


def test_the_guidance_sweep_computed_by_a_worker_equals_the_same_computation_in_process(runs):
    key = reference().replace(data={"name": "ring"}, schedule={"num_timesteps": 100},
                              train={"epochs": 60, "conditional": True, "label_dropout": 0.2}).training
    run = train_to_end(runs, "alice", key)
    task = tasks.Guidance.of(SamplerConfig(num_samples=160, guidance=4.0, class_label=3))
    assert task.sampler.guidance == 1.0 and task.sampler.class_label == -1  # the sweep's own, whatever the page's
    state = runs.compute(run, task)
    assert runs.wait_for(state, 120) and state.status == "done", state.error
    assert_equal_results(state.result, in_process(run, task))
    view = state.result
    assert view.samples.shape == (8, 160, 2) and view.labels.tolist() == [i % 8 for i in range(160)]
    assert [(r["guidance"], r["class"]) for r in view.rows] == [(w, k) for w in view.scales for k in range(8)]
    assert view.learned_c.shape[:2] == (8, len(view.times)) and view.ideal_description.startswith("exact")
    assert state.done == state.total  # its progress reached the end


def test_the_budget_computed_by_a_worker_equals_the_cores_budget(runs):
    key = small(epochs=100)
    run = train_to_end(runs, "alice", key)
    state = runs.compute(run, tasks.Budget(200, 3, "beta", False))
    assert runs.wait_for(state, 120) and state.status == "done"
    expected = budget_rows(tasks.model_from(key, run.weights), NoiseSchedule.from_config(key.schedule),
                           make_dataset(key.data), num_samples=200, seed=3)
    assert [(r.sampler, r.eta, r.steps, r.model_calls, r.energy_distance) for r in state.result] == \
           [(r.sampler, r.eta, r.steps, r.model_calls, r.energy_distance) for r in expected]
    assert state.done == state.total == len(expected)  # its progress reached the end


def test_a_task_goes_before_training_taking_the_worker_of_the_longest_running_run(runs):
    key = small(epochs=60)
    run = train_to_end(runs, "alice", key)
    blockers = [runs.new_job(f"b{i}", small(epochs=20_000, seed=10 + i)) for i in range(2)]
    for blocker in blockers:
        runs.start(blocker)
    wait_for(lambda: all(b.status == "running" and b.step > 0 for b in blockers), what="both workers training")
    state = runs.compute(run, tasks.Sample(SamplerConfig(num_samples=100, num_frames=4)))
    assert runs.wait_for(state, 120) and state.status == "done"
    assert not any(runs.finished(b.key) for b in blockers)  # computed while both runs still had far to go
    wait_for(lambda: all(b.status == "running" for b in blockers), what="the preempted run back on a worker")


def test_a_task_that_needs_no_model_runs_without_weights_and_is_shared(runs):
    ring = reference().replace(data={"name": "ring"}, schedule={"num_timesteps": 100}).training
    task = tasks.Floors(ring.data, ring.schedule, "independent")
    state = runs.compute(None, task)
    assert runs.wait_for(state, 120) and state.status == "done", state.error
    expected = tasks.compute(task, None, None, lambda *args: None, lambda: False)
    assert_equal_results(state.result, expected)
    assert state.result.mean is not None and len(state.result.binned.values) == 20  # a mixture: numerical
    assert runs.compute(None, task) is state and runs.result(None, task) is state


def test_a_task_whose_worker_dies_fails_with_a_message(runs):
    run = train_to_end(runs, "alice", small(epochs=40))
    state = runs.compute(run, tasks.Budget(5000, 0, "beta", False))
    wait_for(lambda: state.worker is not None, what="computing")
    os.kill(state.worker.pid, signal.SIGKILL)
    wait_for(lambda: state.ready, what="failed")
    assert state.status == "failed" and f"stopped unexpectedly ({lost_worker(runs)})" in state.error


def test_progress_messages_carry_the_budgets_rows_so_far():
    key = small(epochs=30)
    weights = headless(key).sampling_model().state_dict()
    channel = Recorder()
    run_job(Compute(1, tasks.Budget(100, 0, "beta", False), key, weights), channel)
    progress = [m for m in channel.messages if isinstance(m, TaskProgress)]
    done = channel.messages[-1]
    assert isinstance(done, TaskDone) and progress[-1].done == progress[-1].total == len(done.result)
    assert progress[-1].partial == done.result
