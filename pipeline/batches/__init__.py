"""Running and finishing batches: runner, worker, batch-transform jobs, review edits, export."""
