"""Paired summary of the rgb_recipe runs: anchor PSNR per arm and seed, distilled minus each control, train seconds."""
import json
import statistics as st
import sys
from pathlib import Path

root = Path(sys.argv[1])
arms, seeds = ("distilled", "alone", "scratch"), (0, 1, 2)
get = lambda a, s, f: json.loads((root / a / f"s{s}" / f).read_text())
psnr = {a: [get(a, s, "anchor.json")["anchor_psnr"] for s in seeds] for a in arms}
secs = {a: [get(a, s, "results.json")["convergence"]["train_seconds"] for s in seeds] for a in arms}
lines = ["| arm | anchor PSNR s0 / s1 / s2 (dB) | mean | train s (mean) |", "|---|---|---|---|"]
lines += [f"| {a} | {' / '.join(f'{p:.2f}' for p in psnr[a])} | {st.mean(psnr[a]):.2f} | {st.mean(secs[a]):.0f} |" for a in arms]
for c in ("alone", "scratch"):
    d = [x - y for x, y in zip(psnr["distilled"], psnr[c])]
    lines.append(f"\ndistilled - {c}: {st.mean(d):+.2f} +- {st.stdev(d):.2f} dB ({sum(x > 0 for x in d)}/{len(d)} positive)")
print("\n".join(lines))
