"""The release, in one place (the package and its stores name it)."""

__version__ = "0.1.0"
