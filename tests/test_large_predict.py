"""Large inputs: `spikedistill predict` restores a big image in tiles with peak memory set by the tile and
a few image-sized buffers, not by the network's activations over the whole image.

Measured in a fresh process (peak RSS: VmHWM of /proc/self/status, reset before each run): tiled, then untiled,
whose activations (T x features x H x W per layer) push the peak far past the tiled bound.
README numbers (4096x4096 RGB, tile 256) come from the same script with SIZE=4096.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from cli_helpers import REPO, cli_env

SCRIPT = textwrap.dedent("""
    import json, re, sys
    from distill.cli import main

    def peak():  # MiB; the high-water mark of this process's own memory (getrusage's ru_maxrss would
        # include the parent's size at fork), reset between runs through clear_refs
        status = open("/proc/self/status").read()
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024

    def reset():
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    folder, out, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    common = ["predict", "--model=distill.module.RestorationModule",
              "--model.init_args.model=students.spiking_dncnn.SpikingDnCNN",
              "--model.init_args.model.init_args.in_channels=3", "--model.init_args.model.init_args.features=8",
              "--model.init_args.model.init_args.depth=4", "--model.init_args.model.init_args.timesteps=2",
              "--data=distill.prediction.ImageFolderDataModule", "--data.init_args.folder=" + folder,
              "--data.init_args.channels=3", "--data.init_args.tile_overlap=16", "--trainer.logger=false",
              "--trainer.enable_progress_bar=false", "--trainer.default_root_dir=" + out + "/run"]
    reset()
    base = peak()
    main(common + ["--data.init_args.tile_size=256", "--data.init_args.output_dir=" + out + "/tiled"])
    tiled = peak() - base
    untiled = None
    if size <= 2048:  # untiled, the activations alone would need several GB at 4096
        reset()
        base2 = peak()
        main(common + ["--data.init_args.tile_size=null", "--data.init_args.output_dir=" + out + "/whole"])
        untiled = peak() - base2
    print(json.dumps({"base": base, "tiled": tiled, "untiled": untiled}))
""")


def measure(folder, out, size):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), str(out), str(size)], cwd=REPO,
                          env=cli_env(OMP_NUM_THREADS="2"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="peak memory is read from Linux /proc")
@pytest.mark.slow  # a prediction subprocess on a large image
def test_tiled_predict_memory_is_bounded_by_the_tile(tmp_path):
    size = 1024
    folder = tmp_path / "in"
    folder.mkdir()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    rgb = np.stack([np.sin(xx / 37.0), np.cos(yy / 23.0), np.sin((xx + yy) / 51.0)], axis=2)
    Image.fromarray(((rgb + 1) * 127.5).astype(np.uint8)).save(folder / "big.png", compress_level=1)

    mib = measure(folder, tmp_path, size)
    image_mib = 3 * size * size * 4 / 2**20  # one float32 copy of the image: 12 MiB
    # tiled: the input, the output and its weight plane, plus one tile's activations (~4 MiB per tensor)
    assert 0 < mib["tiled"] < 100, mib
    # untiled: one layer's spikes alone are T * features * H * W * 4 bytes = 64 MiB, and several are alive
    assert mib["untiled"] > 2 * mib["tiled"] and mib["untiled"] > 150, mib
    assert image_mib < mib["tiled"], mib  # the bound is a few image buffers, not zero
    # same result either way (receptive-field radius 4 <= overlap / 2)
    tiled = np.asarray(Image.open(tmp_path / "tiled" / "big.png"), dtype=np.int16)
    whole = np.asarray(Image.open(tmp_path / "whole" / "big.png"), dtype=np.int16)
    assert tiled.shape == (size, size, 3) and np.abs(tiled - whole).max() <= 1
