"""A teacher's nested QCFS network (trained with 4 levels, the T = 4 student's) scored on the anchor protocol with
the same weights and thresholds but L levels: what the 4-level quantisation costs a student of this size.
usage: anchor_levels.py [gray|rgb] [LEVELS...]   (writes anchor_levels.json for gray, anchor_levels_rgb.json for rgb)"""
import json, sys
from pathlib import Path
root = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(root))
from benchmarks.common import SHARED, anchor_psnr
from benchmarks.score_teacher import Nested
from distill.export import load_network
mode = sys.argv[1] if len(sys.argv) > 1 else "gray"
levels_list = [int(v) for v in sys.argv[2:]] or [4, 8, 16, 64]
out = {}
for levels in levels_list:
    net = load_network(root / f"teachers/pretrained/dncnn_nested_qcfs_{mode}_s25_emb.pt")
    for act in net.nested_acts:
        act.levels = levels
    out[levels] = anchor_psnr(Nested(net), SHARED / "data" / "photos-eval", mode, 25.0)["anchor_psnr"]
    print(levels, out[levels], flush=True)
Path(__file__).with_name("anchor_levels.json" if mode == "gray" else f"anchor_levels_{mode}.json").write_text(json.dumps(out, indent=1))
