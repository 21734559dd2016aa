"""The framework's own exceptions: each names the bad value and what is allowed."""


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
