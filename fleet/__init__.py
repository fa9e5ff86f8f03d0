"""fleet: a per-host GPU fleet manager in the line of ClearML Agent."""

__version__ = "0.1.0"
