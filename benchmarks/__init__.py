"""Benchmarks: ``python -m benchmarks.run [--quick]`` measures chatstream against its peers."""
