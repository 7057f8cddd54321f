"""Turtle Recall (Zindi 2022), as its 5th-place solution: the competition folder (`data`), the original's split
(`folds`), its augmentation (`augment`), its records (`records`, `photoid tfrecords`), the ensemble and `new_turtle`
rule's submission (`ensemble`), the leaderboard's MAP@5 (`scoring`) and the task definition (`task`)."""
