"""Benchmarks of eventix-operator; see bench/README.md. Not tests: they print figures."""
