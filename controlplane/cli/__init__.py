"""The ``controlplane`` command line (Typer)."""
