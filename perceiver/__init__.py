"""perceiver: a research toolkit for the Perceiver (Jaegle et al., ICML 2021, arXiv 2103.03206)."""

__version__ = "0.1.0"
