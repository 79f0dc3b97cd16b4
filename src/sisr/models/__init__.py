"""Networks and the registry that builds them by name.

>>> import sisr
>>> net = sisr.create_model("defian-s", scale=4)
>>> sisr.list_models()
['bicubic', 'edsr-baseline', 'edsr', 'rcan', 'csnln', 'defian-s', 'defian-l', 'cran', 'eacrn']
"""

from .registry import (
    ModelInfo,
    ModelSpec,
    count_parameters,
    has_parameters,
    create_model,
    get_info,
    is_model_name,
    list_models,
    model_infos,
)

__all__ = ["ModelInfo", "ModelSpec", "count_parameters", "create_model", "has_parameters", "get_info", "is_model_name", "list_models", "model_infos"]
