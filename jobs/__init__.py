"""Background work: the weekly tune job, its schedule and the queue helpers."""
