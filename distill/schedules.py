"""Weight schedules for loss terms: a pure function of the global step, so resume is exact."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from distill.errors import ConfigError

ScheduleKind = Literal["constant", "linear", "cosine"]


@dataclass
class WeightSchedule:
    """Multiplier for a loss weight: optional warm-up, then constant / linear / cosine decay, optional step-off.

    `kind` decays from 1 to `final` over `decay_steps` after warm-up; `off_after` sets the weight to 0
    from that step on (the hint "step-off" of staged distillation).
    """

    kind: ScheduleKind = "constant"
    warmup_steps: int = 0
    decay_steps: int | None = None
    final: float = 0.0
    off_after: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "linear", "cosine"):
            raise ConfigError(f"schedule kind {self.kind!r} is not one of 'constant', 'linear', 'cosine'")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps={self.warmup_steps} must be >= 0")
        if self.kind != "constant" and (self.decay_steps is None or self.decay_steps < 1):
            raise ConfigError(f"schedule kind {self.kind!r} needs decay_steps >= 1, got {self.decay_steps}")
        if self.off_after is not None and self.off_after < 0:
            raise ConfigError(f"off_after={self.off_after} must be >= 0")

    def __call__(self, step: int) -> float:
        """The multiplier at optimizer step `step` (0-based)."""
        if self.off_after is not None and step >= self.off_after:
            return 0.0
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / self.decay_steps)
        if self.kind == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.final + (1.0 - self.final) * shape


def scheduled(weight: float, schedule: WeightSchedule | None, step: int) -> float:
    """`weight` times the schedule's multiplier at `step` (constant when there is no schedule)."""
    return weight if schedule is None else weight * schedule(step)
