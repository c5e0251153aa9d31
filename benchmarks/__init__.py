"""Performance benchmarks of the control plane, each against a baseline measured in the same run.

Run with ``python -m benchmarks.run`` (see ``benchmarks/README.md``).
"""
