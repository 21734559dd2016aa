"""How much of the nested teacher's 24-channel network survives weight selection into the QCFS twin, by level count.

Run from the repository root: PYTHONPATH=. python benchmarks/results/distill_pays/pays_nested/selection_probe.py
(16 calibration patches of photos-train, data seed 0; PSNR on the 7 photos-eval 256x256 centre crops, fixed noise)."""
import torch

from distill.data import DenoisingDataModule
from distill.export import load_network
from students.spiking_dncnn import SpikingDnCNN
from students.transfer import make_twin, select_from_dncnn

torch.manual_seed(0)
teacher = load_network("teachers/pretrained/dncnn_nested_gray_s25.pt").eval()
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


print(f"teacher (48 ch) {psnr(teacher):.2f} dB; its nested 24-ch ReLU network {psnr(teacher.nested_output):.2f} dB")
for levels in (4, 16, 64):
    twin = make_twin(SpikingDnCNN(1, 24, 8, timesteps=levels, neuron="if", norm="none", init_membrane=0.5)).eval()
    for percentile in (99.9, 100.0):
        select_from_dncnn(teacher, twin, calibration, percentile)
        print(f"QCFS twin, {levels} levels, thresholds at the {percentile} percentile: {psnr(twin):.2f} dB")
