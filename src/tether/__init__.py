"""Tether: a self-hostable control plane for backing services."""

__version__ = "0.1.0"
