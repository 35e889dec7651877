"""The ResNet family, the Classifier that wraps it, and the model zoo's numbers."""
from probe.models.classifier import Classifier, Normalize
from probe.models.resnet import (NAME_PATTERN, PostActBlock, PreActBlock, ResNet, ResNetConfig,
                                 ShortcutA, build, build_model, get_config, list_presets)
from probe.models.zoo import count_macs, count_parameters, zoo_table

__all__ = ["Classifier", "Normalize", "NAME_PATTERN", "PostActBlock", "PreActBlock", "ResNet",
           "ResNetConfig", "ShortcutA", "build", "build_model", "get_config", "list_presets",
           "count_macs", "count_parameters", "zoo_table"]
