"""Running a pipeline: the session around a run, the runner over items, each item's phases, the budget."""
