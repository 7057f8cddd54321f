"""The package version (light: `photoid --version` reads it without the API)."""

__version__ = "0.1.0"
