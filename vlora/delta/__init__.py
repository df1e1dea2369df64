"""Per-sample low-rank deltas and their injection into transformers models."""
