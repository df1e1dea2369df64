"""Shared machinery of the stages: fsspec I/O, content-addressed runs, Ray start-up."""
