"""probe: train residual networks on image datasets, then take them apart.

The analyses as plain functions, on any nn.Module that maps [0, 1] images (N, C, H, W) to
logits, in any dtype and on any device; each returns a typed result with `.figures()` (drawing
needs the class names only), `.summary()` and `.to_json()`:

    import probe
    result = probe.saliency(model, images, target=3, methods="vanilla,ig", classes=names)
    for stem, fig in result.figures().items():
        fig.savefig(f"{stem}.png")

The names resolve on first use, so `import probe` (and the CLI's start-up) stays light.
"""

__version__ = "0.1.1"

# public name → the module that defines it
_API = {
    "load_model": "probe.models.foreign",
    "misclassified": "probe.analysis.misclassified",
    "confusion_matrix": ("probe.analysis.misclassified", "confusion"),
    "saliency": "probe.analysis.saliency",
    "faithfulness": "probe.analysis.saliency",
    "attack": "probe.methods.attacks",
    "robustness_curve": "probe.analysis.robustness",
    "fool_from_noise": "probe.analysis.fooling",
    "fool_from_dataset": "probe.analysis.fooling",
    "learning_curves": "probe.analysis.curves",
    "ClassNames": "probe.data.spec",
    "ProbeError": "probe.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'probe' has no attribute {name!r}")
    import importlib
    module, attr = _API[name] if isinstance(_API[name], tuple) else (_API[name], name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__():
    return sorted(__all__)
