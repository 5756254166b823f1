"""What the user writes and what a handler sees: phases, the loader, items, the context, limits, checkpoints."""
