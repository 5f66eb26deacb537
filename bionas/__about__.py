"""The one place the project's name and version are written."""

PROJECT = "bionas"
__version__ = "0.1.0"
