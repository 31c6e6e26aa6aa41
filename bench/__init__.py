"""Benchmarks: data generator, load runs and raw baselines (docs/PERFORMANCE.md)."""
