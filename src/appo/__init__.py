"""appo — Agentic Procedural Policy Optimization for tool-using reasoning agents."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("appo")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
