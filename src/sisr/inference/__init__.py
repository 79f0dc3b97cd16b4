"""Inference: run a network on a batch, an image or files and folders, and export it.

``options`` (RunOptions: every inference option, checked once), ``forward`` (``run``: precision,
self-ensemble, tiling, chop), ``network`` (the Runner: device, layout, autocast), ``tiling``, ``backends``,
``images`` (``upscale``, ``upscale_array``), ``batch`` (``upscale_files``: jobs, skip-if-done, workers),
``export``. Imports weights, models, data, utils; never evaluation, training or cli.
"""
