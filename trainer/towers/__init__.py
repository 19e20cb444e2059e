"""What the service imports from the trainer: the exported towers, in TensorFlow or NumPy."""
