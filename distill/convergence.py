"""Convergence speed: the first step and training seconds at which validation PSNR reaches each target."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ConvergenceTargets:
    """Absolute PSNR targets in dB, and targets relative to the teacher ("teacher PSNR - delta")."""

    psnr: list[float] = field(default_factory=list)
    below_teacher: list[float] = field(default_factory=lambda: [1.0, 0.5])

    def resolve(self, teacher_psnr: float | None) -> dict[str, float]:
        """Target label -> dB; relative targets need the teacher's PSNR."""
        targets = {f"{value:g}dB": float(value) for value in self.psnr}
        if teacher_psnr is not None:
            targets.update({f"teacher-{d:g}dB": teacher_psnr - d for d in self.below_teacher})
        return targets


class ConvergenceTracker:
    """Validation history plus the first (step, seconds) at which each target was reached; checkpointable."""

    def __init__(self, targets: ConvergenceTargets) -> None:
        self.targets = targets
        self.history: list[dict[str, float]] = []
        self.reached: dict[str, dict[str, float]] = {}
        self.train_seconds = 0.0

    def update(self, step: int, psnr: float, teacher_psnr: float | None) -> None:
        """Record one validation result at optimizer step `step`."""
        self.history.append({"step": step, "seconds": round(self.train_seconds, 3), "psnr": psnr})
        for label, target in self.targets.resolve(teacher_psnr).items():
            if label not in self.reached and psnr >= target:
                self.reached[label] = {"target_db": target, "step": step, "seconds": round(self.train_seconds, 3)}

    def summary(self, teacher_psnr: float | None) -> dict[str, Any]:
        """JSON-ready: every target with the step/seconds it was reached at (None if never)."""
        return {
            label: self.reached.get(label, {"target_db": target, "step": None, "seconds": None})
            for label, target in self.targets.resolve(teacher_psnr).items()
        } | {label: value for label, value in self.reached.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "reached": self.reached, "train_seconds": self.train_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.reached = dict(state["reached"])
        self.train_seconds = float(state["train_seconds"])
