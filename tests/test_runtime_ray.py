"""The runtime on Ray: what only a cluster has. (Every test of ``test_runtime`` also runs on the Ray
backend; this module checks placement, the loss of a node and the backend setting.)

The cluster is two simulated nodes of 1 CPU each on this machine (``ray_cluster`` in conftest);
a test that removes a node adds its own third one first. Waits only guard against hanging.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion import reference
from runtime.messages import Progress
from runtime.pool import backend_from_env, make_pool
from runtime.ray_pool import Mailbox
from runtime.registry import RunRegistry
from runtime.worker import QuitAsked
from tests.test_runtime import assert_same_as_headless, small, wait_for

ROOT = Path(__file__).resolve().parents[1]


def started(registry, keys, owner="alice"):
    runs = [registry.new_job(f"{owner}{i}", key) for i, key in enumerate(keys)]
    for run in runs:
        registry.start(run)
    return runs


def test_jobs_land_on_both_nodes_and_end_as_if_trained_in_process(ray_cluster):
    registry = RunRegistry(2, backend="ray")
    try:
        wait_for(lambda: all(w.alive for w in registry.pool.workers), what="both actors placed")
        keys = [small(epochs=400, seed=s) for s in (21, 22)]
        runs = started(registry, keys)
        seen = {}  # run index -> (its worker's node, where its page says it trains), read while it trains

        def both_seen_training() -> bool:
            for i, run in enumerate(runs):
                worker, where = run.worker, registry.snapshot(run).where
                if i not in seen and run.status == "running" and run.step > 0 and worker is not None:
                    seen[i] = (worker.node_id, where)
            return len(seen) == len(runs)

        # each run is looked at on its own: a short run may finish before the other's first step arrives
        wait_for(both_seen_training, what="both training")
        nodes = {node for node, _ in seen.values()}
        assert nodes == {node.node_id for node in ray_cluster.list_all_nodes()}  # one run per node
        assert {where for _, where in seen.values()} == {f"Ray node {node[:8]}" for node in nodes}
        wait_for(lambda: all(registry.finished(k) for k in keys), what="both finished")
        for key in keys:
            assert_same_as_headless(registry.finished(key), key)  # bit for bit, like the local workers
    finally:
        registry.close()


def test_a_node_lost_mid_run_fails_its_run_with_a_message_and_keeps_what_finished(ray_cluster):
    extra = ray_cluster.add_node(num_cpus=1, object_store_memory=150 * 2**20)
    ray_cluster.wait_for_nodes()
    registry = RunRegistry(3, backend="ray")  # three actors on three 1-CPU nodes: one on the new node
    try:
        wait_for(lambda: all(w.alive for w in registry.pool.workers), what="three actors placed")
        done = small(epochs=60, seed=30)
        started(registry, [done], owner="early")
        wait_for(lambda: registry.finished(done) is not None, what="a finished run")
        runs = started(registry, [small(epochs=20_000, seed=s) for s in (31, 32, 33)])
        wait_for(lambda: all(r.status == "running" and r.step > 0 for r in runs), what="three training")
        (victim,) = [r for r in runs if r.worker.node_id == extra.node_id]
        others = [r for r in runs if r is not victim]
        ray_cluster.remove_node(extra)
        wait_for(lambda: victim.status == "failed", what="the lost node's run failed")
        assert victim.error.startswith("the training process stopped unexpectedly (its Ray worker was lost")
        assert "Press Reset" in victim.error and victim.step > 0  # its curve so far stays on the page
        steps = [r.step for r in others]
        wait_for(lambda: all(r.step > s for r, s in zip(others, steps, strict=True)), what="the others go on")
        assert all(r.status == "running" for r in others)
        assert_same_as_headless(registry.finished(done), done)  # nothing finished is lost
    finally:
        registry.close()
    wait_for(lambda: len(ray_cluster.list_all_nodes()) == 2, what="back to two nodes")


def test_closing_a_ray_registry_stops_its_actors_processes(ray_cluster):
    registry = RunRegistry(2, backend="ray")
    wait_for(lambda: len(registry.pool.pids()) == 2, what="both actors placed")
    pids = registry.pool.pids()
    run = registry.new_job("alice", small(epochs=20_000))
    registry.start(run)
    wait_for(lambda: run.step > 0, what="training")
    registry.close()

    def gone(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(lambda: all(gone(pid) for pid in pids), timeout=30, what="the actors' processes gone")


def test_the_backend_setting_names_what_is_wrong_and_what_is_allowed(monkeypatch):
    monkeypatch.setenv("DDPM_LAB_BACKEND", "Ray ")
    assert backend_from_env() == "ray"
    monkeypatch.delenv("DDPM_LAB_BACKEND")
    assert backend_from_env() == "local"
    monkeypatch.setenv("DDPM_LAB_BACKEND", "dask")
    with pytest.raises(ValueError, match=r"DDPM_LAB_BACKEND='dask' is not a backend: use one of local, ray"):
        backend_from_env()
    with pytest.raises(ValueError, match="backend 'spark' is not one of local, ray"):
        make_pool(1, None, None, backend="spark")
    monkeypatch.setenv("DDPM_LAB_WORKERS", "two")
    with pytest.raises(ValueError, match="DDPM_LAB_WORKERS='two' is not a number of workers: use a whole number from 1"):
        make_pool(None, None, None, backend="local")


def test_a_reference_run_on_ray_equals_the_same_run_on_local_workers(ray_cluster):
    key = small(epochs=200, base=reference, seed=40)
    results = {}
    for backend in ("local", "ray"):
        registry = RunRegistry(1, backend=backend)
        try:
            registry.start(registry.new_job("alice", key))
            wait_for(lambda r=registry: r.finished(key) is not None, what=f"finished on {backend}")
            results[backend] = registry.finished(key)
        finally:
            registry.close()
    local, ray_run = results["local"], results["ray"]
    assert (local.losses == ray_run.losses).all()
    for name, value in local.weights.items():
        assert (ray_run.weights[name] == value).all(), name


def test_a_stop_counts_for_the_stint_it_was_sent_in_whatever_order_the_actor_takes_them():
    box = Mailbox()
    box.stop(7, 2)  # the stop for the second stint arrives before that stint's run starts
    box.begin(2)
    assert box.stop_asked(7) and not box.stop_asked(8)
    box.begin(3)  # the same run resumed: the earlier stint's stop no longer applies
    assert not box.stop_asked(7)
    box.wait(0.01, 7)  # no stop: returns after its timeout
    box.emit(Progress(7, 1, None, 0.0, 0.0, None))
    assert [m.step for m in box.take(0.0)] == [1] and box.take(0.0) == []
    box.quit()
    with pytest.raises(QuitAsked):
        box.stop_asked(7)


LOCAL_CLUSTER_FROM_A_SHORT_THREAD = """
import threading, ray
from runtime.ray_pool import WorkerActor, connect
caller = threading.Thread(target=connect)  # as the page's first script thread, which then ends
caller.start(); caller.join()
actor = WorkerActor.remote()  # held: an actor whose handle is dropped is cancelled
print(ray.get(actor.placed.remote(), timeout=40)[0] > 0)
"""


def test_a_local_cluster_started_from_a_thread_that_ends_outlives_it():
    """The page starts Ray (no ``RAY_ADDRESS``) from a script thread that ends with its rerun; the
    cluster's processes must not die with that thread (they did: the page then waited forever)."""
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", LOCAL_CLUSTER_FROM_A_SHORT_THREAD], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr[-2000:]


JOIN_NOTHING = """
from runtime.ray_pool import connect
try:
    connect()
except ConnectionError as error:
    print(error)
"""


def test_a_cluster_address_with_nothing_there_says_what_to_check():
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1", "RAY_AUTH_MODE": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", JOIN_NOTHING], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    said = done.stdout.strip()
    assert said.startswith("could not join the Ray cluster at RAY_ADDRESS='127.0.0.1:1' ("), done.stderr[-2000:]
    assert "Is it started (`ray start --head`)?" in said
    assert "set RAY_AUTH_MODE=token here too" in said
    assert said.endswith("Unset RAY_ADDRESS to start a local Ray instead.")
