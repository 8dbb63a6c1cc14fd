"""``python -m diffusion``: the headless command.

Its front end (flags, output files, the HTML figure drawn with plotly) lives outside the core, in
``ui/command.py``; this entry point only hands over to it when run as a program, so importing the
core never imports the front end.
"""

if __name__ == "__main__":
    import sys

    from ui.command import main

    sys.exit(main())
