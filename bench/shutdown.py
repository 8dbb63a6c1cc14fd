"""SIGTERM while runs train: ``python -m bench.shutdown [--tries 10]``.

Each try starts the dashboard on a free 127.0.0.1 port, opens two lightweight users on long runs
(so both workers train), waits until both pages say 'Training', sends SIGTERM to the server and
records its exit status, the seconds to exit, and whether any of its worker processes is left.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.load.__main__ import Clients, start_server, stop_process
from bench.load.procstat import descendants

ROOT = Path(__file__).resolve().parents[1]
LINK = "preset=improved&epochs=20000&batch=512&dataset={dataset}&seed={seed}&pace=false"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def one_try(index: int, folder: Path) -> dict:
    server, port = start_server(ROOT, folder / f"server-{index}.log")
    queries = [LINK.format(dataset=d, seed=index * 10 + k) for k, d in enumerate(("moons", "ring"))]
    clients = Clients(port, queries, duration_s=120.0)
    try:
        def both_training() -> bool:
            labels = clients.last_labels()
            return len(labels) == 2 and all(label in ("Training", "Waiting") for label in labels.values())

        trained = clients.wait(both_training, 90)
        workers = descendants(server.pid)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
        seconds = time.monotonic() - started
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [pid for pid in workers if alive(pid)]
        log = (folder / f"server-{index}.log").read_text(errors="replace")
        return {"training": trained, "code": code, "seconds": seconds, "workers": len(workers), "left": left,
                "abort": "terminate called" in log}
    finally:
        clients.stop()
        stop_process(server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shutdown", description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=10)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-shutdown-") as folder:
        for index in range(args.tries):
            result = one_try(index, Path(folder))
            results.append(result)
            print(f"try {index + 1}: both training {result['training']}, exit {result['code']} in "
                  f"{result['seconds']:.2f} s, {result['workers']} child processes, left {result['left']}, "
                  f"abort {result['abort']}", flush=True)
    ok = sum(r["code"] == 0 and not r["left"] and not r["abort"] for r in results)
    times = [r["seconds"] for r in results]
    print(f"\nSIGTERM with runs training: exit 0 and no worker left in {ok} of {len(results)}; seconds to exit: "
          f"median {statistics.median(times):.2f}, max {max(times):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
