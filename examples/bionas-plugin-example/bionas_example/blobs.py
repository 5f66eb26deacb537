"""A tiny in-memory dataset: the class is the quadrant holding a bright Gaussian blob."""

import torch
from pydantic import Field

import bionas


class _Tensors(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


class Blobs(bionas.Dataset):
    name = "blobs"
    description = "Gaussian blobs in one of four quadrants of a noisy 16x16 image (example plugin)."

    class Options(bionas.PluginOptions):
        samples: int = Field(default=400, gt=0, description="Images per split.")
        noise: float = Field(default=0.1, ge=0, description="Std of the Gaussian pixel noise.")
        seed: int = Field(default=0, ge=0, description="Seed of the generated images.")

    size = 16

    @property
    def info(self) -> bionas.DatasetInfo:
        return bionas.DatasetInfo(num_classes=4, channels=1, image_size=self.size, mean=(0.2,), std=(0.25,))

    def split(self, name: str) -> torch.utils.data.Dataset:
        offsets = {"train": 0, "val": 1, "test": 2}
        if name not in offsets:
            raise ValueError(f"unknown split {name!r}; expected train, val or test")
        generator = torch.Generator().manual_seed(self.options.seed * 3 + offsets[name])
        n = self.options.samples
        labels = torch.randint(0, 4, (n,), generator=generator)
        centre = torch.tensor([[4.0, 4.0], [4.0, 11.0], [11.0, 4.0], [11.0, 11.0]])[labels]
        centre += torch.randn(n, 2, generator=generator)
        grid = torch.arange(self.size, dtype=torch.float32)
        dy = (grid.view(1, -1, 1) - centre[:, 0].view(-1, 1, 1)) ** 2
        dx = (grid.view(1, 1, -1) - centre[:, 1].view(-1, 1, 1)) ** 2
        images = torch.exp(-(dx + dy) / 8.0) + self.options.noise * torch.randn(n, self.size, self.size, generator=generator)
        return _Tensors(images.clamp(0, 1).unsqueeze(1), labels)
