"""Training: one fold with the original's optimiser and callbacks (`fold`), a recipe k-fold — train, predict, score,
submit — (`kfold`), the out-of-fold and test prediction files (`predictions`) and the distribution strategy
(`strategy`)."""
