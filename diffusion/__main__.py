"""``python -m diffusion``: kept as the headless command's old name.

The command is a front end above the core (``cli``, run as ``python -m cli`` with the same flags),
and the core imports nothing above it; so this entry point starts the front end as a new program
(an ``exec`` of ``python -m cli`` with the same arguments) instead of importing it.
"""

if __name__ == "__main__":
    import os
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    os.execv(sys.executable, [sys.executable, "-m", "cli", *sys.argv[1:]])
