"""Exceptions raised by sisr.

Every error a user can cause (bad file, bad option, unknown model) is a
``SisrError`` whose message is one line naming the thing and the problem; the
command line prints it without a traceback.
"""


class SisrError(Exception):
    """Base class for errors caused by input, configuration or environment."""


class ImageError(SisrError):
    """An image file cannot be read or written."""


class WeightsError(SisrError):
    """A weights file is missing, unreadable or does not fit the model."""


class ConfigError(SisrError):
    """A configuration file or option is invalid."""


class ModelError(SisrError):
    """An unknown model, scale or hyper-parameter was requested."""
