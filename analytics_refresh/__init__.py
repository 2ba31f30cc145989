"""analytics-refresh: keeps every client's dashboard cache fresh."""

__version__ = "1.0.0"
