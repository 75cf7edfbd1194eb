"""Backbone definitions and the registry that names them."""

# Importing a family registers its variants; the import order is the order `lightexport list` shows.
# isort: off
from lightexport.model_defs import fasternet as _fasternet  # noqa: F401
from lightexport.model_defs import mobilenetv1 as _mobilenetv1  # noqa: F401
from lightexport.model_defs import mobilenetv2 as _mobilenetv2  # noqa: F401
from lightexport.model_defs import mobilenetv3 as _mobilenetv3  # noqa: F401
from lightexport.model_defs import shufflenetv2 as _shufflenetv2  # noqa: F401
from lightexport.model_defs import efficientnetv2 as _efficientnetv2  # noqa: F401
from lightexport.model_defs import efficientnet_lite as _efficientnet_lite  # noqa: F401
from lightexport.model_defs import ghostnetv2 as _ghostnetv2  # noqa: F401
from lightexport.model_defs import inception as _inception  # noqa: F401
from lightexport.model_defs import mobilenext as _mobilenext  # noqa: F401
from lightexport.model_defs import shufflenetv1 as _shufflenetv1  # noqa: F401
from lightexport.model_defs import xception as _xception  # noqa: F401
from lightexport.model_defs import xception_aligned as _xception_aligned  # noqa: F401
from lightexport.model_defs import blazeface as _blazeface  # noqa: F401
# isort: on
from lightexport.model_defs.checkpoint import load_weights, read_checkpoint
from lightexport.model_defs.registry import ModelSpec, create_model, get_spec, is_registered, list_models

__all__ = ["ModelSpec", "create_model", "get_spec", "is_registered", "list_models", "load_weights", "read_checkpoint"]
