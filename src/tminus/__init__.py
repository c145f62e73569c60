"""tminus: a production deployment plan as one file, checked, rendered and executed safely."""

__all__ = ["__version__"]

__version__ = "0.1.0"
