"""The distribution's version, single source for pyproject (dynamic) and the user agent."""

__version__ = "0.1.0"
