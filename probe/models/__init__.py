"""The ResNet family, the Classifier that wraps it, and the model zoo's numbers.

The names resolve on first use: reading a model folder's description (probe.models.folder,
probe.models.config) needs no PyTorch, so `probe models list` starts without it."""

# public name → the module that defines it
_EXPORTS = {
    "Classifier": "probe.models.classifier", "Normalize": "probe.models.classifier",
    "NAME_PATTERN": "probe.models.resnet", "PostActBlock": "probe.models.resnet", "PreActBlock": "probe.models.resnet",
    "ResNet": "probe.models.resnet", "ShortcutA": "probe.models.resnet", "build": "probe.models.resnet",
    "build_model": "probe.models.resnet", "get_config": "probe.models.resnet", "list_presets": "probe.models.resnet",
    "ResNetConfig": "probe.models.config",
    "count_macs": "probe.models.zoo", "count_parameters": "probe.models.zoo", "zoo_table": "probe.models.zoo",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'probe.models' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
