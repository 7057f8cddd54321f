"""photoid's generic folder for any species (`metadata.csv` and the photos): reading, folds and records (`data`) and
the task definition (`task`)."""
