"""Benchmarks of the VLoRA project, run from the repository root as `python -m benchmarks.<name>`.

Each script measures and writes `results/<name>.{json,md}`; what the scripts share is split by
concern (`machine`, `contention`, `timing`, `flops`, `results_io`, `report`), and the long
reports are drawn by `<name>_report` modules from the results dict alone (see README.md).
"""
