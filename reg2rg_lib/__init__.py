"""reg2rg-kit: the library behind the notebooks (data, model, training, metrics, figures). See README.md."""

from reg2rg_lib._version import __version__

__all__ = ["__version__"]
