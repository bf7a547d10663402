"""Hypothesis, for every property test (tests/test_properties.py, tests/test_fuzz_servers.py): the "ci"
profile is derandomized (each test draws the same examples every run, so CI is reproducible) and keeps
no example database; `HYPOTHESIS_PROFILE=explore` draws new random examples each run, to look further."""

import os

try:
    from hypothesis import settings
except ImportError:  # the dev extra is not installed: the property test files say so when imported
    settings = None

if settings is not None:
    settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
    settings.register_profile("explore", derandomize=False, database=None, deadline=None, print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
