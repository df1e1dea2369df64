"""Benchmarks of the VLoRA project: scripts run as `python benchmarks/<name>.py` (see README.md)."""
