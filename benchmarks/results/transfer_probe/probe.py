"""Where does the twin -> spiking transfer lose its ~1 dB, and what wins it back? (issue 14, "Transfer")

The quickstart student (SpikingDnCNN 1 x 24 x 8, IF, T = 4) on photos-train, gray sigma 25. One QCFS twin is trained
(cached in twin.pt), copied and rate-calibrated with the library's own warm-start pieces (students.transfer), and
then each method starts from that same calibrated copy:

* ``layerwise``: layer-wise weight calibration (Li et al. 2021's "advanced" pipeline, done here by gradient): each
  conv in turn, first layer first, fits the spiking layer's firing rate to the twin's activation on calibration
  patches, the layers before it already fitted; then the tail fits the twin's output. No clean image is used.
* ``ft_clean``: the spiking fine-tune of the recipes (L1 to the clean image, Adam 1e-3, cosine), ``--steps`` steps.
* ``ft_twin``: the same plus a hint from the frozen twin at every layer (MSE between the student's rate and the
  twin's activation, weight ``--twin-weight``).
* ``layerwise+ft_clean``: the fine-tune after the layer-wise calibration.

Validation PSNR (dB, all 7 photos-eval images, 256 x 256 centre crops) is printed after each stage and written to
results.json with the seconds each took. Run from the repository root with PYTHONPATH set to it.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from distill.data import DenoisingDataModule
from distill.modeling import run_model
from students.spiking_dncnn import SpikingDnCNN
from students.transfer import calibrate_rates, channel_rates, copy_twin, init_thresholds, make_twin, neuron_paths

OUT = Path(__file__).resolve().parent


def batch(dataset, epoch: int, start: int, size: int) -> dict:
    return default_collate([dataset[(epoch, i)] for i in range(start, start + size)])


@torch.no_grad()
def val_psnr(model, dm) -> float:
    model.eval()
    scores = []
    for b in dm.val_dataloader():
        out = run_model(model, b["input"], b["sigma"]).clamp(0, 1)
        scores += (-10 * torch.log10((out - b["target"]).pow(2).flatten(1).mean(1))).tolist()
    return round(sum(scores) / len(scores), 3)


def rates_of(model, x, paths, grad: bool):
    """The output of each neuron in ``paths`` as a per-step mean [B, C, H, W], and the model output."""
    seen = {}
    hooks = [model.get_submodule(p).register_forward_hook(
        lambda _m, _i, o, p=p: seen.__setitem__(p, o.mean(0) if o.dim() == 5 else o)) for p in paths]
    try:
        with torch.set_grad_enabled(grad):
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen, out


def conv_of(student, path: str):
    parent = student.get_submodule(path.rpartition(".")[0])
    return getattr(parent.conv, "layer", parent.conv)


def layerwise(student, twin, x, iterations: int, lr: float) -> None:
    """Fit each layer's rate to the twin's activation, then the tail to the twin's output (see the docstring). A
    block's input spikes come from the layers before it, already fitted, so they are recorded once per layer."""
    paths = neuron_paths(student)
    targets, twin_out = rates_of(twin, x, paths, grad=False)
    student.train()
    for p in student.parameters():
        p.requires_grad_(False)
    layers = [student.head] + list(student.blocks)
    for k, (path, layer) in enumerate(zip(paths, layers)):
        if k == 0:
            inputs = x
        else:
            seen = []
            hook = layer.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
            with torch.no_grad():
                student(x)
            hook.remove()
            inputs = seen[0]
        params = list(conv_of(student, path).parameters())
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr)
        for _ in range(iterations):
            out = layer(inputs)
            loss = F.mse_loss(out.mean(0), targets[path])
            opt.zero_grad()
            loss.backward()
            opt.step()
        for p in params:
            p.requires_grad_(False)
    params = list(student.tail.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(iterations):
        loss = F.mse_loss(student(x), twin_out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in student.parameters():
        p.requires_grad_(True)


def finetune(student, twin, dataset, steps: int, twin_weight: float, batch_size: int = 16) -> None:
    paths = neuron_paths(student)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, 1e-5)
    per_epoch = 1600 // batch_size
    student.train()
    for step in range(steps):
        epoch, i = divmod(step, per_epoch)
        b = batch(dataset, epoch, i * batch_size, batch_size)
        seen, out = rates_of(student, b["input"], paths, grad=True)
        loss = F.l1_loss(out, b["target"])
        if twin_weight:
            targets, _ = rates_of(twin, b["input"], paths, grad=False)
            loss = loss + twin_weight * sum(F.mse_loss(seen[p], targets[p]) for p in paths) / len(paths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", default="/work/shared/data/photos-train")
    ap.add_argument("--eval", default="/work/shared/data/photos-eval")
    ap.add_argument("--twin-steps", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--lw-lr", type=float, default=1e-3)
    ap.add_argument("--twin-weight", type=float, default=1.0)
    ap.add_argument("--calib", type=int, default=64, help="calibration patches")
    ap.add_argument("--methods", nargs="+", default=["layerwise", "ft_clean", "ft_twin", "layerwise+ft_clean"])
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.manual_seed(0)
    dm = DenoisingDataModule(train=[args.train], val=[args.eval], channels=1, sigma=25.0, patch_size=40,
                             patches_per_epoch=1600, batch_size=16, eval_size=256)
    dataset = dm.train_dataset()
    student = SpikingDnCNN(1, 24, 8, timesteps=4, neuron="if", norm="none", init_membrane=0.5)
    twin = make_twin(student)
    calib = batch(dataset, 1_000_000, 0, args.calib)["input"]
    results = json.loads((OUT / "results.json").read_text()) if (OUT / "results.json").is_file() else {}
    cache = OUT / f"twin{args.twin_steps}.pt"
    if cache.is_file():
        twin.load_state_dict(torch.load(cache))
    else:
        started = time.perf_counter()
        init_thresholds(twin, calib[:16])
        opt = torch.optim.Adam(twin.parameters(), lr=2e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.twin_steps, 2e-5)
        twin.train()
        for step in range(args.twin_steps):
            epoch, i = divmod(step, 100)
            b = batch(dataset, 1_000_001 + epoch, i * 16, 16)
            loss = F.l1_loss(run_model(twin, b["input"], b["sigma"]), b["target"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        torch.save(twin.state_dict(), cache)
        results[f"twin{args.twin_steps}_seconds"] = round(time.perf_counter() - started, 1)
    twin.eval()
    copy_twin(twin, student)
    calibrate_rates(student, calib[:16], channel_rates(twin, calib[:16], neuron_paths(twin)))
    row = {"twin": val_psnr(twin, dm), "calibrated": val_psnr(student, dm)}
    print(row, flush=True)
    start_state = copy.deepcopy(student.state_dict())
    for method in args.methods:
        student.load_state_dict(start_state)
        started = time.perf_counter()
        if method.startswith("layerwise"):
            layerwise(student, twin, calib, args.iterations, args.lw_lr)
        if "ft_" in method:
            finetune(student, twin, dataset, args.steps, args.twin_weight if method.endswith("ft_twin") else 0.0)
        row[method] = {"psnr": val_psnr(student, dm), "seconds": round(time.perf_counter() - started, 1)}
        print(method, row[method], flush=True)
    results[f"twin{args.twin_steps}{args.tag}"] = {"args": vars(args), **row}
    (OUT / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
