"""Benchmarks for smsinvite: scripts that print figures (see bench/README.md). Not tests: nothing here asserts a timing."""
