"""`spikedistill data check FOLDER [FOLDER...] --layout flat|paired [--channels 1|3] [--min-size N]`: read every
image of dataset folders with the loaders training uses (`distill.data.images`, `distill.data.pairs`) and report
what would fail (missing folder, no images, unreadable file, image smaller than the patch size, rainy/clean files
without a partner, pairs of different sizes), or a short summary. The entry ``skimage-samples`` checks the embedded
photos (every split), as a recipe's folder lists accept it. Exit status 0, or 2 with the errors."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from distill.data.images import list_images, load_image
from distill.data.pairs import find_pairs, load_pair
from distill.data.samples import SAMPLES_NAME, sample_paths
from distill.errors import DataError

LAYOUTS = ("flat", "paired")


@dataclass
class FolderSummary:
    folder: str
    layout: str
    channels: int
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (W, H) of every clean image
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        unit = "pairs" if self.layout == "paired" else "images"
        widths, heights = [w for w, _ in self.sizes], [h for _, h in self.sizes]
        return (f"{self.folder}: {len(self.sizes)} {unit}, sizes {min(widths)}x{min(heights)} to "
                f"{max(widths)}x{max(heights)} (WxH), {self.channels} channel{'s' if self.channels > 1 else ''}")


def _size_error(path: Path, width: int, height: int, min_size: int) -> str | None:
    if width >= min_size and height >= min_size:
        return None
    return f"image {str(path)!r} is {width}x{height} (WxH), smaller than --min-size {min_size}"


def check_folder(folder: str, layout: str, channels: int, min_size: int) -> FolderSummary:
    """Read every image (or pair) of `folder`; problems go to `errors` (a folder-level one stops the folder)."""
    summary = FolderSummary(folder, layout, channels)
    if folder == SAMPLES_NAME:
        if layout == "paired":
            summary.errors.append(f"{SAMPLES_NAME!r} holds clean photos only, not rain pairs: use --layout flat "
                                  "(deraining recipes add synthetic rain to it)")
            return summary
        return read_images(summary, [(None, p) for split in ("train", "val") for p in sample_paths(split)], min_size)
    if not Path(folder).is_dir():  # the paired lookup would only say "no paired layout"
        what = "is not a folder" if Path(folder).exists() else "does not exist"
        summary.errors.append(f"image folder {folder!r} {what}")
        return summary
    try:
        items = find_pairs(folder) if layout == "paired" else [(None, p) for p in list_images(folder)]
    except DataError as exc:
        summary.errors.append(str(exc))
        return summary
    return read_images(summary, items, min_size)


def read_images(summary: FolderSummary, items: list[tuple[Path | None, Path]], min_size: int) -> FolderSummary:
    """Load every (rainy or None, clean) item into `summary`: its size, or the error that loading or the size gives."""
    channels = summary.channels
    for rainy, clean in items:
        try:
            arr = load_pair(rainy, clean, channels)[1] if rainy is not None else load_image(clean, channels)
        except DataError as exc:
            summary.errors.append(str(exc))
            continue
        height, width = arr.shape[:2]
        small = _size_error(clean, width, height, min_size)
        if small:
            summary.errors.append(small)
        summary.sizes.append((width, height))
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikedistill data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate dataset folders with the training loaders")
    check.add_argument("folders", nargs="+", metavar="FOLDER")
    check.add_argument("--layout", choices=LAYOUTS, required=True,
                       help="flat: images directly inside; paired: rain/ + norain/ (or rainy/, input/ + target/)")
    check.add_argument("--channels", type=int, choices=(1, 3), default=3, help="as the recipe reads them")
    check.add_argument("--min-size", type=int, default=1, metavar="N",
                       help="smallest allowed side, e.g. the recipe's patch_size")
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    summaries = [check_folder(f, args.layout, args.channels, args.min_size) for f in args.folders]
    errors = [e for s in summaries for e in s.errors]
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise DataError(f"{len(errors)} problem{'s' if len(errors) > 1 else ''} found:\n  " + "\n  ".join(shown))
    for summary in summaries:
        print(summary.line())
