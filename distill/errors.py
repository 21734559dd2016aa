"""The framework's own exceptions, re-exported from the leaf package :mod:`spikedistill_core.errors`
(where they are defined, so that ``students`` and ``teachers`` can raise them without importing ``distill``).
The classes are the same objects: ``distill.errors.ConfigError is spikedistill_core.errors.ConfigError``."""
from spikedistill_core.errors import CheckpointError, ConfigError, DataError, SpikeDistillError, TrainingError

__all__ = ["SpikeDistillError", "ConfigError", "DataError", "CheckpointError", "TrainingError"]
