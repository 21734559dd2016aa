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
    """Validation history (step, training seconds, PSNR) and the teacher's PSNR; checkpointable.

    When each target was first reached is derived from the history, so it stays right after a resume,
    a change of targets, or a teacher PSNR that arrives late.
    """

    def __init__(self, targets: ConvergenceTargets) -> None:
        self.targets = targets
        self.history: list[dict[str, float]] = []
        self.reference_psnr: float | None = None
        self.train_seconds = 0.0

    def update(self, step: int, psnr: float, teacher_psnr: float | None) -> None:
        """Record one validation result at optimizer step `step`."""
        self.history.append({"step": step, "seconds": round(self.train_seconds, 3), "psnr": psnr})
        if teacher_psnr is not None:
            self.reference_psnr = teacher_psnr

    def summary(self, teacher_psnr: float | None = None) -> dict[str, Any]:
        """Every target with the first step/seconds it was reached at (None if never), JSON-ready."""
        reference = teacher_psnr if teacher_psnr is not None else self.reference_psnr
        summary = {}
        for label, target in self.targets.resolve(reference).items():
            first = next((h for h in self.history if h["psnr"] >= target), None)
            summary[label] = {
                "target_db": target,
                "step": first["step"] if first else None,
                "seconds": first["seconds"] if first else None,
            }
        return summary

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "reference_psnr": self.reference_psnr, "train_seconds": self.train_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.reference_psnr = state.get("reference_psnr")
        self.train_seconds = float(state["train_seconds"])
