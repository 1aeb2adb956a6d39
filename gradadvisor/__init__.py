"""gradadvisor: find vanishing and exploding gradients in Keras models, and fix them.

The public API is what ``__all__`` lists.  Names are resolved lazily so that
``import gradadvisor`` (and the command line's ``--help``) stays fast and does
not import TensorFlow.
"""

from ._version import __version__

__all__ = [
    "__version__",
    "diagnose",
    "recommend",
    "GradientMonitor",
    "GradientWarning",
    "Diagnosis",
    "Recommendation",
    "Setup",
    "apply_setup",
    "Finding",
    "run_probe",
    "ProbeResult",
    "load_model",
    "load_data",
    "load_rules",
    "GradAdvisorError",
    "DataError",
    "ModelLoadError",
    "RuleError",
    "UsageError",
    "SurgeryError",
]

_LAZY = {
    "diagnose": ("api", "diagnose"),
    "recommend": ("search", "recommend"),
    "GradientMonitor": ("callback", "GradientMonitor"),
    "GradientWarning": ("callback", "GradientWarning"),
    "Recommendation": ("search", "Recommendation"),
    "Setup": ("surgery", "Setup"),
    "apply_setup": ("surgery", "apply_setup"),
    "Diagnosis": ("analysis", "Diagnosis"),
    "Finding": ("analysis", "Finding"),
    "run_probe": ("probe", "run_probe"),
    "ProbeResult": ("probe", "ProbeResult"),
    "load_model": ("loading", "load_model"),
    "load_data": ("loading", "load_data"),
    "load_rules": ("analysis", "load_rules"),
}


from .errors import (DataError, GradAdvisorError, ModelLoadError, RuleError,  # noqa: E402
                     SurgeryError, UsageError)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        module = importlib.import_module(f".{module_name}", __name__)
        return getattr(module, attribute)
    raise AttributeError(f"module 'gradadvisor' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
