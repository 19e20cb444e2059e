"""The two-tower model: towers, attention, loss, and the TF Transform preprocessing_fn."""
