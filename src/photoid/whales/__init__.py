"""Where's Whale-do (DrivenData 2022), as its 1st-place solution: beluga photo-identification as retrieval.

`data` reads and validates a competition folder (metadata, query scenarios) and makes encounter-grouped folds;
`records` writes its records (`photoid whale-records`), `pairs` the lateral model's (top, lateral) pairs, `augment`
the winner's training augmentation; `embed` writes the scenario images' embeddings (`photoid embed`); `ranking`
ranks each query against its scenario's database by cosine similarity, `routing` chooses the winner's route per
scenario and `rank` is `photoid rank` (`local_rank`: its shortlists re-ranked with local matching, `rank
--local`); `scoring` is the organisers' mean average precision and the
`score-ranking` command; `task` is the task definition.
"""
