"""Inference: run a network on a batch or an image (precision, self-ensemble, chop, tiling) and export it.

Imports weights, models, data, utils; never evaluation, training or cli.
"""
