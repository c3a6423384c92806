"""Jobs: the job configuration, runners (local / dask / analysis facility), checkpoints, CLI."""
