"""Where a handler runs (in the loop's threads, in processes, on a Dask cluster), never touching state."""
