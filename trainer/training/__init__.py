"""Training a model on a TRANSFORM_DIR and exporting the MODEL_DIR (SavedModel + NumPy twin)."""
