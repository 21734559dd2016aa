"""What survives weight selection from a nested teacher into the quickstart student, before any training: the
teacher, its nested 24-channel network, the selected QCFS twin by level count (16 and 64 with percentile
thresholds, as a reference), and the T = 4 twin copied into the spiking student (IF), without and with rate
calibration. (It replaces ../pays_nested/selection_probe.py, whose output is ../pays_nested/selection_probe.txt.)

Run from the repository root: PYTHONPATH=. python benchmarks/results/distill_pays/pays_qcfs/selection_probe.py TEACHER.pt
(16 calibration patches of photos-train, data seed 0; PSNR on the 7 photos-eval 256x256 centre crops, fixed noise)."""
import sys

import torch

from distill.data import DenoisingDataModule
from distill.export import load_network
from students.spiking_dncnn import SpikingDnCNN
from students.transfer import calibrate_rates, channel_rates, copy_twin, make_twin, neuron_paths, select_from_dncnn

torch.manual_seed(0)
teacher = load_network(sys.argv[1]).eval()
data = DenoisingDataModule(train=["../shared/data/photos-train"], val=["../shared/data/photos-eval"], channels=1,
                           sigma=25, eval_size=256, patch_size=40, batch_size=16, patches_per_epoch=16)
data.setup("fit")
calibration = next(iter(data.train_dataloader()))["input"]


def psnr(denoise) -> float:
    scores = []
    with torch.no_grad():
        for batch in data.val_dataloader():
            out = denoise(batch["input"]).clamp(0, 1)
            scores += (-10 * torch.log10((out - batch["target"]).pow(2).flatten(1).mean(1))).tolist()
    return sum(scores) / len(scores)


kind = "QCFS" if getattr(teacher, "nested_levels", None) else "ReLU"
print(f"{sys.argv[1]}: teacher (48 ch) {psnr(teacher):.2f} dB; nested 24-ch {kind} network {psnr(teacher.nested_output):.2f} dB")
for levels in (64, 16, 4):
    student = SpikingDnCNN(1, 24, 8, timesteps=levels, neuron="if", norm="none", init_membrane=0.5)
    twin = make_twin(student).eval()
    select_from_dncnn(teacher, twin, calibration)
    print(f"selected QCFS twin, {levels} levels: {psnr(twin):.2f} dB")
copy_twin(twin, student)
student.eval()
print(f"copied into the IF student, T = 4: {psnr(student):.2f} dB")
calibrate_rates(student, calibration, channel_rates(twin, calibration, neuron_paths(twin)))
print(f"after rate calibration: {psnr(student):.2f} dB")
