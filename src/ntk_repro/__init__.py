from importlib.metadata import version as _v

__all__ = ["__version__"]
try:
    __version__ = _v("ntk-repro")
except Exception:  # running from a source tree without installation
    __version__ = "0.0.0"
