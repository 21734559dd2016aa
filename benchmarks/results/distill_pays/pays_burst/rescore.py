"""Re-score a warm-started burst run's student with the initial membrane its copy gave it (0.25 of the threshold):
the runs of this folder were started before copy_twin refused a recipe whose init_membrane differs from the copy's,
so their checkpoints rebuild the student at the recipe's 0.5 and benchmarks/distill_pays.py scored that. The first
score is kept as anchor_init0.5.json.  usage: rescore.py RUN_DIR [gray|rgb]"""
import json, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from benchmarks.common import SHARED, anchor_psnr
from distill.export import load_record, network_record
from distill.io import atomic_write_json
run = Path(sys.argv[1]); mode = (sys.argv[2:] or ["gray"])[0]
record = network_record(run / "checkpoints" / "last.ckpt")
record["init_args"]["init_membrane"] = 0.25
anchor = anchor_psnr(load_record(record, str(run)), SHARED / "data" / "photos-eval", mode)
old = run / "anchor_init0.5.json"
if not old.exists():
    (run / "anchor.json").rename(old)
atomic_write_json(run / "anchor.json", anchor)
print(run, json.loads(old.read_text())["anchor_psnr"], "->", anchor["anchor_psnr"])
