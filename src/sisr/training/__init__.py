"""Training: YAML recipes and configs, the trainer, resumable checkpoints and logs.

Imports inference, weights, models, data, metrics, utils; evaluation only in ``scoring`` (a finished run's
test-set scores, a deferred import); never cli.
"""
