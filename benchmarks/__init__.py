"""Benchmarks (scripts printing figures) and the dedup calibration library they share."""
