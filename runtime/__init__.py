"""The runtime: every computation that touches a model, run as a job on worker processes.

    messages   what the server and a worker say to each other (frozen dataclasses)
    state      one run's state and its transitions; a task's state
    watch      the loss by noise level and the live previews of a training run
    tasks      the computations on a finished model: sampling, field, drift, budget
    worker     the worker's loop (its own process, or inline)
    pool       the worker processes, seen from the server; the backend setting (DDPM_LAB_BACKEND)
    ray_pool   the workers as Ray actors on a cluster (the optional backend: requirements-ray.txt)
    registry   runs, finished runs, tasks' results, the queues and the scheduler

It imports the core (``diffusion``) and nothing above it: the page (``ui``) and the command
(``cli``) are its clients.
"""
