"""Engine: inference, evaluation, training and profiling. Knows nothing of particular models."""
