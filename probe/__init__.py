"""probe: train residual networks on image datasets, then take them apart."""

__version__ = "0.1.0"


def load_model(path, device="cpu"):
    """The trained Classifier of a model folder (eval mode) and its meta.json as a dict.
    device: auto, cpu, cuda or cuda:N."""
    from probe.models.folder import load_model as _load
    return _load(path, device)


__all__ = ["load_model", "__version__"]
