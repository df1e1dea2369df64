"""Training building blocks that need no distributed runtime: schedules, parameter groups."""
