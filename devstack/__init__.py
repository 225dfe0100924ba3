"""Local development stack: servers, demo data and generated media for the demo,
the benchmarks and the tests."""
