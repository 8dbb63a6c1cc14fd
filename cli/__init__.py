"""The headless command, a front end beside the page: ``python -m cli`` (or ``python -m diffusion``,
which hands over to it). It trains, samples and scores one experiment through the core, watches the
run with the runtime's ``Watch``, and draws its HTML figure with the chart builders (``charts``)."""
