"""Shared pieces of the benchmark scripts: the student registry, a training step, machine facts,
peak-RSS measurement in a fresh subprocess, and table formatting.

Not a benchmark itself; ``benchmarks/train_speed.py``, ``benchmarks/memory.py`` and
``benchmarks/distill_quality.py`` import it.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from distill.modeling import run_model  # noqa: E402

# glibc: with a fixed mmap threshold every tensor above 64 KiB is its own mmap and goes back to the OS
# on free, so RSS follows live tensor memory (the default *dynamic* threshold would keep freed blocks
# on the heap and make a high-water mark depend on what ran before).
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
RESULT_PREFIX = "RESULT "


# ---------------------------------------------------------------------------------------------------
# students and their ANN twins


@dataclass(frozen=True)
class StudentSpec:
    key: str
    label: str
    channels: int
    build: Callable[..., nn.Module]  # build(timesteps, **extra) -> spiking student
    twin: Callable[[], nn.Module]  # the ANN twin (teachers.twins), T = 1
    checkpointable: bool = True  # accepts checkpoint_segments


def _dncnn(timesteps: int, **kw: Any) -> nn.Module:
    from students.spiking_dncnn import SpikingDnCNN

    return SpikingDnCNN(in_channels=1, features=32, depth=10, timesteps=timesteps, **kw)


def _dncnn_twin() -> nn.Module:
    from teachers.twins import DnCNNTwin

    return DnCNNTwin(in_channels=1, features=32, depth=10)


def _unet(timesteps: int, **kw: Any) -> nn.Module:
    from students.spiking_unet import SpikingUNet

    return SpikingUNet(in_channels=1, preset="tiny", timesteps=timesteps, **kw)


def _unet_twin() -> nn.Module:
    from teachers.twins import UNetTwin

    return UNetTwin(in_channels=1, preset="tiny")


def _esdnet(preset: str) -> Callable[..., nn.Module]:
    def build(timesteps: int, **kw: Any) -> nn.Module:
        from students.esdnet import ESDNet

        return ESDNet(in_channels=3, preset=preset, timesteps=timesteps, **kw)

    return build


def _esdnet_twin(preset: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from teachers.twins import ESDNetTwin

        return ESDNetTwin(in_channels=3, preset=preset)

    return build


def _spiker(timesteps: int, **kw: Any) -> nn.Module:
    from students.spiker_ir import SpikerIR

    return SpikerIR(in_channels=3, preset="tiny", timesteps=timesteps, **kw)


def _spiker_twin() -> nn.Module:
    from teachers.twins import SpikerIRTwin

    return SpikerIRTwin(in_channels=3, preset="tiny")


STUDENTS: dict[str, StudentSpec] = {
    s.key: s
    for s in (
        StudentSpec("spiking_dncnn", "SpikingDnCNN (10 conv, 32 ch, LIF)", 1, _dncnn, _dncnn_twin),
        StudentSpec("spiking_unet_tiny", "SpikingUNet tiny (multi-threshold IF)", 1, _unet, _unet_twin),
        StudentSpec("esdnet_tiny", "ESDNet tiny (LIF, MDA)", 3, _esdnet("tiny"), _esdnet_twin("tiny"), False),
        StudentSpec("esdnet_small", "ESDNet small (LIF, MDA)", 3, _esdnet("small"), _esdnet_twin("small"), False),
        StudentSpec("spiker_ir_tiny", "SpikerIR tiny (LIF)", 3, _spiker, _spiker_twin),
    )
}


def build_student(key: str, timesteps: int, seed: int = 0, **kw: Any) -> nn.Module:
    if key not in STUDENTS:
        raise SystemExit(f"unknown student {key!r}; choose from {', '.join(STUDENTS)}")
    torch.manual_seed(seed)
    return STUDENTS[key].build(timesteps, **kw)


def build_twin(key: str, student: nn.Module | None = None) -> nn.Module:
    """The ANN twin; with ``student`` its weights are copied in (the same layers)."""
    twin = STUDENTS[key].twin()
    if student is not None:
        twin.load_state_dict(student.state_dict(), strict=False)
    return twin


def make_batch(channels: int, batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A noisy input and a clean target, ``[B, C, size, size]`` (values only matter for spike counts)."""
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, channels, size, size, generator=g)
    noisy = target + 0.1 * torch.randn(batch, channels, size, size, generator=g)
    return noisy, target


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float = 1e-3, sigma: torch.Tensor | None = None,
              bf16: bool = False) -> Callable[[], float]:
    """One training step: forward (``sigma`` passed to noise-level models, bf16 autocast on request), L1 loss,
    backward, Adam step (grads set to None first)."""
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x) if sigma is None else run_model(model, x, sigma)
        loss = F.l1_loss(out.float(), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


# ---------------------------------------------------------------------------------------------------
# machine facts, timing statistics


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> float:
    """1-minute load average."""
    return round(os.getloadavg()[0], 2)


def machine_info() -> dict[str, Any]:
    try:
        import snntorch

        snn_version = snntorch.__version__
    except Exception:  # pragma: no cover - snntorch is a dependency
        snn_version = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "snntorch": snn_version,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "load": [round(v, 2) for v in os.getloadavg()],
    }


def machine_line(info: dict[str, Any]) -> str:
    return (f"{info['date']}; {info['cpu']}, {info['cores']} cores; torch {info['torch']}, "
            f"snntorch {info['snntorch']}; {info['threads']} thread(s); load {info['load']}")


def summarize(times: Sequence[float]) -> dict[str, float]:
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "n": len(times)}


def command_line() -> str:
    """The command that produced this output (for the tables)."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(REPO)
    except ValueError:
        pass
    return " ".join(["python", str(script), *sys.argv[1:]])


# ---------------------------------------------------------------------------------------------------
# resident-set high-water mark


def proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_step_memory(step: Callable[[], float], warmup: int = 1) -> dict[str, float]:
    """Peak RSS of one training step in this process: warm-up (Adam state, allocator), reset the
    high-water mark, record RSS, run one step, read the high-water mark. MiB."""
    import gc

    for _ in range(warmup):
        step()
    gc.collect()
    ok = reset_peak_rss()
    base = proc_status_kb("VmRSS")
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    peak = proc_status_kb("VmHWM")
    return {
        "base_mib": base / 1024,
        "peak_mib": peak / 1024,
        "step_mib": (peak - base) / 1024 if ok else float("nan"),
        "step_s": seconds,
    }


def run_child(script: Path, payload: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """Run ``script --child JSON`` in a fresh interpreter and return the JSON it reports."""
    env = dict(os.environ, **CHILD_ENV)
    threads = payload.get("threads")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(
        [sys.executable, str(script), "--child", json.dumps(payload)],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=str(REPO),
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"child {payload} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def report_child(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------
# tables


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join("—" if v is None else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def fmt_ms(value: float | None) -> str | None:
    if value is None:
        return None
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def fmt_ratio(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}×"


def anchor_psnr(net: nn.Module, eval_dir: Path, mode: str, sigma: float = 25.0) -> dict[str, Any]:
    """PSNR of a denoiser on the full ``eval_dir`` images by ``../shared/anchors/protocol.py`` (``mode`` gray or
    rgb), the protocol the published DnCNN, BM3D and FFDNet numbers in its README were measured with."""
    sys.path.insert(0, str(SHARED / "anchors"))
    from protocol import score  # noqa: WPS433 (the shared protocol, not a package)

    from distill.modeling import run_model

    def denoise(noisy, level):
        with torch.no_grad():
            x = torch.from_numpy(noisy).float()
            x = x[None, None] if x.dim() == 2 else x.permute(2, 0, 1)[None]
            y = run_model(net.eval(), x, torch.full((1,), float(level)))[0]
            return (y[0] if y.shape[0] == 1 else y.permute(1, 2, 0)).double().numpy()

    psnr, count = score(denoise, str(eval_dir), sigma=sigma, mode=mode)
    return {"anchor_psnr": round(psnr, 4), "images": count, "folder": str(eval_dir), "mode": mode, "sigma": sigma}


@torch.no_grad()
def held_out_psnr(net: Callable[[torch.Tensor], torch.Tensor], loader: Any) -> float:
    """Mean per-image PSNR (dB, peak 1, output clamped to [0, 1]) of ``net`` over a DataModule's evaluation batches."""
    scores: list[float] = []
    for batch in loader:
        mse = ((net(batch["input"]).clamp(0, 1) - batch["target"]) ** 2).flatten(1).mean(1)
        scores += (-10 * torch.log10(mse)).tolist()
    return sum(scores) / len(scores)
