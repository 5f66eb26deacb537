"""The per-image (torchvision transforms v2) form of an AugmentSpec, for the DataLoader path.

Imported lazily: `import bionas` does not pay for torchvision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import is_pure_tensor

from bionas.data.augment import AugmentSpec


class Cutout(v2.Transform):
    """Sets a `length` x `length` square, centred uniformly at random and clipped at the border, to `fill`.

    The per-image twin of the in-memory loader's cutout (same geometry, same fill).
    Expects a float image tensor C x H x W.
    """

    _transformed_types = (tv_tensors.Image, is_pure_tensor)

    def __init__(self, length: int, fill: Sequence[float]):
        super().__init__()
        self.length = length
        self.fill = tuple(float(f) for f in fill)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        cy = int(torch.randint(height, ()))
        cx = int(torch.randint(width, ()))
        y0, x0 = max(cy - self.length // 2, 0), max(cx - self.length // 2, 0)
        y1, x1 = cy - self.length // 2 + self.length, cx - self.length // 2 + self.length
        return {"rows": slice(y0, max(y1, 0)), "cols": slice(x0, max(x1, 0))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = inpt.clone()
        fill = torch.tensor(self.fill, dtype=out.dtype, device=out.device).view(-1, 1, 1)
        out[..., params["rows"], params["cols"]] = fill
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def build_transform(
    spec: AugmentSpec | None,
    image_size: int,
    fill: Sequence[float],
    head: Sequence[Any] | None = None,
) -> v2.Compose:
    """image (uint8 tensor, float tensor or PIL) -> float32 C x H x W tensor in [0, 1], augmented by `spec`.

    `head` are transforms run first (e.g. decoding-size ops on PIL images:
    Resize + CenterCrop, or RandomResizedCrop); by default RandomResizedCrop
    when `spec.resized_crop`, else nothing.
    """
    if head is None:
        head = [v2.RandomResizedCrop(image_size, antialias=True)] if spec is not None and spec.resized_crop else []
    ops: list[Any] = [*head, v2.ToImage()]
    if spec is not None and spec.padding:
        ops.append(v2.RandomCrop(image_size, padding=spec.padding, fill=0))
    if spec is not None and spec.flip:
        ops.append(v2.RandomHorizontalFlip())
    ops.append(v2.ToDtype(torch.float32, scale=True))
    if spec is not None and spec.cutout:
        ops.append(Cutout(spec.cutout, fill))
    ops.append(v2.ToPureTensor())
    return v2.Compose(ops)
