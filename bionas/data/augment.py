"""Training augmentation: the AugmentSpec and its vectorized whole-batch form.

The in-memory loader augments whole batches on the training device with the
functions here: it zero-pads the whole uint8 image tensor once, then one gather
from a windowed view crops every image of a batch at its own offset, one
select flips, one masked write does cutout.
The random parameters of a whole epoch are drawn up front on the CPU from a
`torch.Generator`, so an epoch's augmentation depends only on its seed and is
the same on every device. The per-image torchvision v2 form of the same spec
lives in `bionas.data.transforms` (the DataLoader path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import ConfigDict, Field

from bionas.plugin import PluginOptions


class AugmentSpec(PluginOptions):
    """Training augmentation of one dataset: padded random crop, horizontal flip, cutout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    padding: int = Field(
        0, ge=0, description="random crop of the image size after zero padding by this many pixels per side; 0: off"
    )
    flip: bool = Field(False, description="random horizontal flip with probability 0.5")
    cutout: int = Field(
        0,
        ge=0,
        description="side of a square set to the dataset's mean colour, centred uniformly at random "
        "(clipped at the border, as in DARTS); 0: off",
    )
    resized_crop: bool = Field(
        False,
        description="RandomResizedCrop (scale 0.08-1) to the image size, ImageNet style; "
        "per-image only (DataLoader path), so it disables the in-memory loader",
    )

    @property
    def active(self) -> bool:
        return bool(self.padding or self.flip or self.cutout or self.resized_crop)


NO_AUGMENT = AugmentSpec()


@dataclass
class BatchParams:
    """Random parameters for a run of images: crop offsets in the padded image, flips, cutout centres."""

    top: torch.Tensor  # int64, in [0, 2 * padding]
    left: torch.Tensor
    flip: torch.Tensor  # bool
    cy: torch.Tensor  # int64 cutout centre row, in [0, H)
    cx: torch.Tensor

    def __getitem__(self, index) -> BatchParams:
        return BatchParams(*(t[index] for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.top, self.left, self.flip, self.cy, self.cx

    def to(self, device) -> BatchParams:
        return BatchParams(*(t.to(device, non_blocking=True) for t in self.tensors()))


def draw_params(n: int, spec: AugmentSpec, height: int, width: int, generator: torch.Generator) -> BatchParams:
    """The random parameters of `n` augmented images, drawn from `generator` (CPU) in a fixed order."""
    span = 2 * spec.padding + 1
    top = torch.randint(span, (n,), generator=generator)
    left = torch.randint(span, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5 if spec.flip else torch.zeros(n, dtype=torch.bool)
    cy = torch.randint(height, (n,), generator=generator)
    cx = torch.randint(width, (n,), generator=generator)
    return BatchParams(top, left, flip, cy, cx)


def gather_crops(
    source: torch.Tensor,
    index: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    height: int,
    width: int,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crops `source[index[i], :, top[i]:top[i]+height, left[i]:left[i]+width]`, mirrored where `flip[i]`.

    `source` is N x C x H x W (any dtype, any device); the crops must lie inside
    it (pad the source once for zero-padded random crops). One gather from a
    windowed view of the source, no loop over images.
    """
    windows = source.unfold(2, height, 1).unfold(3, width, 1)  # N x C x (H-h+1) x (W-w+1) x h x w, a view
    out = windows[index, :, top, left]  # B x C x h x w
    if flip is not None:
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def cutout_mask(cy: torch.Tensor, cx: torch.Tensor, length: int, height: int, width: int) -> torch.Tensor:
    """B x 1 x H x W bool mask of the cutout squares: rows [cy - length//2, cy - length//2 + length), clipped."""
    device = cy.device
    y0 = (cy - length // 2)[:, None]
    x0 = (cx - length // 2)[:, None]
    ys = torch.arange(height, device=device)[None, :]
    xs = torch.arange(width, device=device)[None, :]
    in_rows = (ys >= y0) & (ys < y0 + length)
    in_cols = (xs >= x0) & (xs < x0 + length)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def augment_batch(
    padded: torch.Tensor,
    index: torch.Tensor,
    spec: AugmentSpec,
    params: BatchParams,
    fill: torch.Tensor,
) -> torch.Tensor:
    """The augmented float batch (in [0, 1]) of images `index`.

    `padded` is the uint8 N x C x (H + 2p) x (W + 2p) image tensor, zero padded
    by p = spec.padding on every side (once, by the loader); `fill` is the
    per-channel cutout colour (C floats in [0, 1], on the device).
    """
    pad = spec.padding
    height, width = padded.shape[2] - 2 * pad, padded.shape[3] - 2 * pad
    if pad or spec.flip:
        batch = gather_crops(padded, index, params.top, params.left, height, width, params.flip if spec.flip else None)
    else:
        batch = padded[index]
    batch = batch.float().div_(255)
    if spec.cutout:
        mask = cutout_mask(params.cy, params.cx, spec.cutout, height, width)
        batch = torch.where(mask, fill.view(1, -1, 1, 1), batch)
    return batch
