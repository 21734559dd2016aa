"""Restore large images in overlapping tiles with bounded memory.

How tiles are placed and blended
--------------------------------
Along each axis of length ``L`` tiles of size ``tile`` start every ``tile - overlap`` pixels; the
last tile is aligned to the far edge, so every tile has the full size (models that need sizes
divisible by 8 keep working) and the last overlap may be larger. An axis no longer than ``tile``
is one tile of the whole axis.

Each tile's output is weighted by a separable window that is **zero** in the ``overlap // 2``
pixels next to an *inner* tile edge (an edge that is not an image border), then ramps up linearly
over the rest of the overlap, then is 1. The output is the weighted average, accumulated tile by
tile into one output buffer (plus one weight plane), so memory is the image plus one tile's
activations; the tiles are never all materialised.

Exactness: a pixel only gets weight from tiles where it lies at least ``overlap // 2`` pixels
from every inner edge. For a translation-equivariant model whose receptive-field radius ``r``
(a stack of ``k`` 3x3 convolutions has ``r = k``) satisfies ``r <= overlap // 2``, every weighted
output pixel equals the untiled output, so the tiled result equals the untiled one up to float
rounding. Models with global context (attention over the whole image) are approximated, and the
ramp hides the seams.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from spikedistill_core.checks import check_int
from distill.errors import ConfigError

__all__ = ["check_tiling", "tile_starts", "tile_weights", "restore_tiled"]


def check_tiling(tile: int | None, overlap: int) -> None:
    """Raise ConfigError unless `tile` is None or an int > `overlap` >= 0."""
    check_int("tile_overlap", overlap, 0, " (pixels)")
    if tile is None:
        return
    check_int("tile_size", tile, 1, " (pixels) or null for no tiling")
    if tile <= overlap:
        raise ConfigError(
            f"tile_size={tile} must be larger than tile_overlap={overlap}: tiles would not advance; "
            f"use e.g. tile_size >= {overlap + 1} or a smaller overlap"
        )


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis of `length` pixels (the last one ends at `length`)."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_weights(size: int, inner_before: bool, inner_after: bool, overlap: int,
                 device: torch.device | None = None) -> Tensor:
    """1-D blending window of a tile of `size` pixels (see the module docstring)."""
    w = torch.ones(size, dtype=torch.float32, device=device)
    margin = overlap // 2
    ramp_len = overlap - margin
    # distance d (0 = the tile's edge pixel): 0 for d < margin, then (d - margin + 1) / (ramp_len + 1)
    ramp = torch.arange(1, ramp_len + 1, dtype=torch.float32, device=device) / (ramp_len + 1)
    edge = torch.cat([torch.zeros(margin, device=device), ramp])[: size]
    if inner_before:
        w[: edge.numel()] = torch.minimum(w[: edge.numel()], edge)
    if inner_after:
        w[size - edge.numel():] = torch.minimum(w[size - edge.numel():], edge.flip(0))
    return w


def restore_tiled(fn: Callable[[Tensor], Tensor], image: Tensor, tile: int | None, overlap: int = 0) -> Tensor:
    """Run `fn` on `image` ``[B, C, H, W]``: directly if `tile` is None, else in overlapping tiles.

    `fn` must map ``[B, C, h, w]`` to ``[B, C', h, w]`` (same height and width). Raises ConfigError for
    a bad `tile`/`overlap` or when `fn` changes the spatial size of a tile.
    """
    check_tiling(tile, overlap)
    if image.dim() != 4:
        raise ConfigError(f"restore_tiled expects an image batch [B, C, H, W], got shape {list(image.shape)}")
    if tile is None:
        return fn(image)
    height, width = image.shape[-2:]
    if height <= tile and width <= tile:
        return fn(image)
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    out: Tensor | None = None
    norm: Tensor | None = None
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            piece = fn(image[:, :, y : y + th, x : x + tw])
            if piece.dim() != 4 or piece.shape[-2:] != (th, tw) or piece.shape[0] != image.shape[0]:
                raise ConfigError(
                    f"tiled restoration needs a model whose output keeps the batch, height and width of its "
                    f"input: a tile of shape {list(image[:, :, y:y + th, x:x + tw].shape)} gave {list(piece.shape)}; "
                    f"set tile_size: null"
                )
            if out is None:
                out = piece.new_zeros(piece.shape[0], piece.shape[1], height, width)
                norm = torch.zeros(1, 1, height, width, dtype=piece.dtype, device=piece.device)
            wy = tile_weights(th, i > 0, i < len(ys) - 1, overlap, piece.device)
            wx = tile_weights(tw, j > 0, j < len(xs) - 1, overlap, piece.device)
            weight = (wy[:, None] * wx[None, :]).to(piece.dtype)
            out[:, :, y : y + th, x : x + tw] += piece * weight
            norm[:, :, y : y + th, x : x + tw] += weight
            del piece
    assert out is not None and norm is not None
    return out.div_(norm)  # in place: no second image-sized buffer
