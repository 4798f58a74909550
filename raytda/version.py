"""Package version; part of every artifact key so a new release never reuses stale results."""

__version__ = "0.4.0"
