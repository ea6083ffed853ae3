"""Benchmarks of the robot against raw-driver floors (issue 9): scripts that print tables.

Every figure is reported next to a floor measured in the same run on the same machine, so
ratios stay meaningful across machines. Run ``python -m benchmarks all [--quick]``.

The benchmarks must never touch a database they did not create: server runs use a scratch
database (``bench_<random>``) that is created and dropped here, and SQLite runs use a
temporary directory. They never print a plaintext code.
"""
