"""The training stages' pieces: plan, launcher, worker, batching, engines, tracking, export."""
