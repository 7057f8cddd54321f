"""The shared core: no TensorFlow, no task. Errors users act on (`errors`), atomic files (`io`), the CSV reader and
row checks (`tables`), photo file checks (`images`), labels and the new-individual rule (`labels`), classification
metrics (`metrics`), embedding search (`retrieval`), one photo's result (`results`) and TensorFlow's quiet start
(`quiet`)."""
