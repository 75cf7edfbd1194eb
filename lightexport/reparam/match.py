"""Recognising third-party module classes by name, so timm and torchvision stay optional imports."""

from __future__ import annotations

import torch.nn as nn


def class_path(cls: type) -> str:
    """``package.module.Class``: unlike the bare class name, it cannot collide with a user's own class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def lineage(module: nn.Module) -> set[str]:
    """The class paths of a module's class and its bases, so subclasses of a listed class match too."""
    return {class_path(cls) for cls in type(module).__mro__}
