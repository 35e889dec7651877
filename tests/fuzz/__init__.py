"""Fuzzing every format probe reads (issue 18): hypothesis draws corrupted variants of small,
honest files (mutators.py), a worker process loads each under a memory cap and a time bound
(worker.py) through the library and, for some, the CLI (formats.py), and every variant must end
in a correct load or a ProbeError (CLI: exit 2 and one line).

    tests/test_fuzz.py      a short seeded slice of every format, in the normal test run
    benchmarks/fuzz.py      the full run: ≥ 1,000 variants a format, counts in benchmarks/results/fuzz.json
"""
