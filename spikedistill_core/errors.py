"""The framework's own exceptions: each names the bad value and what is allowed.

They live in this leaf package so that ``students`` and ``teachers`` can raise them without importing
``distill``; ``distill.errors`` re-exports them (``from distill.errors import ConfigError`` keeps working).
"""

__all__ = ["SpikeDistillError", "ConfigError", "DataError", "CheckpointError", "TrainingError"]


class SpikeDistillError(Exception):
    """Base of every error spikedistill raises on purpose."""


class ConfigError(SpikeDistillError, ValueError):
    """A recipe or argument value outside what is allowed."""


class DataError(SpikeDistillError, ValueError):
    """An image, folder or pair that cannot be used."""


class CheckpointError(SpikeDistillError, RuntimeError):
    """Weights that are missing, corrupt, changed, or of another architecture."""


class TrainingError(SpikeDistillError, RuntimeError):
    """Training cannot continue safely (for example a NaN or Inf loss)."""
