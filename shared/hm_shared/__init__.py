"""Contracts shared by every environment: dataset, splits, features, predictions, ensemble."""

__version__ = "0.1.0"
