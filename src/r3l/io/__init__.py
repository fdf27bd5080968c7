"""Files in and out: images, checkpoints, training and test data, atomic writes and strict JSON."""
