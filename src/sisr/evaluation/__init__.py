"""Evaluation: the papers' PSNR/SSIM protocol and result files, the HTML report, and complexity profiles.

Imports inference, weights, models, data, metrics, utils; never training or cli.
"""
