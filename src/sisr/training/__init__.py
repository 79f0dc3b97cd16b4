"""Training: YAML recipes and configs, the trainer, resumable checkpoints and logs.

Imports inference, weights, models, data, metrics, utils; never evaluation or cli.
"""
