"""make_loader: batch interface, epoch-determined order and augmentation, sharding, vectorized augmentation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import bionas
from bionas.data import AugmentSpec, make_loader, search_split, stratified_split
from bionas.data.augment import augment_batch, cutout_mask, draw_params, gather_crops
from bionas.data.transforms import build_transform


@pytest.fixture
def synthetic():
    return bionas.get_dataset("synthetic", image_size=12, train_size=203, val_size=40, test_size=50)


def collect(loader):
    batches = list(loader)
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]), [len(y) for _, y in batches]


def test_train_loader_batches_and_epoch_determinism(synthetic):
    loader = make_loader(synthetic, "train", 32, train=True, seed=7)
    assert loader.in_memory and len(loader) == 203 // 32
    x0, y0, sizes = collect(loader)  # epoch 0, then the loader moves to epoch 1
    assert sizes == [32] * 6 and x0.dtype == torch.float32 and y0.dtype == torch.int64
    assert 0 <= float(x0.min()) and float(x0.max()) <= 1
    x1, y1, _ = collect(loader)
    assert not torch.equal(y0, y1)  # a new shuffle each epoch
    loader.set_epoch(0)
    again = collect(loader)
    assert torch.equal(again[0], x0) and torch.equal(again[1], y0)
    fresh = make_loader(synthetic, "train", 32, train=True, seed=7)
    fresh.set_epoch(1)  # resume at epoch 1 without replaying epoch 0
    assert torch.equal(collect(fresh)[0], x1)
    other = make_loader(synthetic, "train", 32, train=True, seed=8)
    assert not torch.equal(collect(other)[1], y0)


def test_loader_leaves_the_global_rng_alone(synthetic):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for loader in (make_loader(synthetic, "train", 50, train=True), make_loader(synthetic, "train", 50, train=True,
                                                                                  in_memory=False, num_workers=0)):
        for _ in loader:
            pass
    assert torch.equal(torch.rand(3), expected)


def test_a_batch_larger_than_the_split_is_refused_when_it_would_give_no_batch(synthetic):
    with pytest.raises(ValueError, match="larger than the 203 images"):
        make_loader(synthetic, "train", 256, train=True)
    assert len(make_loader(synthetic, "train", 256, train=True, drop_last=False)) == 1
    assert len(make_loader(synthetic, "train", 256, train=False)) == 1


def test_eval_loader_keeps_order_and_does_not_augment(synthetic):
    loader = make_loader(synthetic, "test", 16, train=False)
    x, y, sizes = collect(loader)
    assert sizes == [16, 16, 16, 2] and len(loader) == 4
    images, labels = synthetic.tensors("test")
    assert torch.equal(y, labels) and torch.equal(x, images.float() / 255)


def test_indices_restrict_the_loader(synthetic):
    weights, arch = search_split(synthetic, 0.5, seed=1)
    assert len(weights) + len(arch) == 203 and not set(weights.tolist()) & set(arch.tolist())
    assert torch.equal(search_split(synthetic, 0.5, seed=1)[1], arch)
    loader = make_loader(synthetic, "train", 10, train=False, indices=arch)
    _, y, _ = collect(loader)
    assert torch.equal(y, synthetic.labels("train")[arch])


def test_ranks_get_disjoint_equal_shards(synthetic):
    ys = []
    for rank in range(3):
        loader = make_loader(synthetic, "train", 8, train=True, seed=0, rank=rank, world_size=3, augment=False,
                             drop_last=False)
        assert loader.num_samples == 67
        x, _, _ = collect(loader)
        ys.append({tuple(img.flatten()[:20].tolist()) for img in x})
    assert sum(len(s) for s in ys) == 201 and len(ys[0] | ys[1] | ys[2]) == 201
    evaluation = [collect(make_loader(synthetic, "val", 8, train=False, rank=r, world_size=3))[1] for r in range(3)]
    assert sum(len(y) for y in evaluation) == 40


def test_stratified_split_keeps_class_proportions():
    labels = torch.arange(1000) % 4
    labels[:100] = 0  # class 0: 325, others 225
    small, big = stratified_split(labels, [200], seed=3)
    counts = labels[small].bincount()
    assert counts.tolist() == pytest.approx([65, 45, 45, 45], abs=1)
    assert len(big) == 800 and not set(small.tolist()) & set(big.tolist())


def test_gather_crops_equals_pad_then_slice_then_flip():
    images = torch.randint(0, 256, (5, 3, 7, 9), dtype=torch.uint8)
    padded = F.pad(images, (2, 2, 2, 2))
    index = torch.tensor([4, 0, 2, 2, 1])
    top, left = torch.tensor([0, 4, 2, 1, 3]), torch.tensor([4, 0, 2, 3, 1])
    flip = torch.tensor([True, False, True, False, True])
    out = gather_crops(padded, index, top, left, 7, 9, flip)
    for i in range(5):
        crop = padded[index[i], :, top[i] : top[i] + 7, left[i] : left[i] + 9]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)


def test_cutout_mask_is_a_clipped_square():
    mask = cutout_mask(torch.tensor([5, 0]), torch.tensor([5, 9]), 4, 10, 10)
    assert mask.shape == (2, 1, 10, 10)
    assert mask[0, 0, 3:7, 3:7].all() and int(mask[0].sum()) == 16
    assert int(mask[1].sum()) == 2 * 3  # rows 0..1, cols 7..9


def test_in_memory_and_dataloader_augmentations_agree_in_distribution():
    """Both paths crop the zero-padded image and flip: each reaches exactly the 3 x 3 x 2 possible outputs."""
    image = torch.arange(3 * 6 * 6, dtype=torch.uint8).view(1, 3, 6, 6)
    spec = AugmentSpec(padding=1, flip=True)
    padded = F.pad(image, (1, 1, 1, 1))[0]

    def key(x: torch.Tensor) -> bytes:
        x = (x * 255).round().to(torch.uint8) if x.is_floating_point() else x
        return x.contiguous().numpy().tobytes()

    windows = [padded[:, t : t + 6, s : s + 6] for t in range(3) for s in range(3)]
    reachable = {key(w) for w in windows} | {key(w.flip(-1)) for w in windows}
    params = draw_params(400, spec, 6, 6, torch.Generator().manual_seed(0))
    fast = augment_batch(padded[None], torch.zeros(400, dtype=torch.int64), spec, params, torch.zeros(3))
    transform = build_transform(spec, 6, (0.0, 0.0, 0.0))
    torch.manual_seed(0)
    slow = [transform(image[0]) for _ in range(400)]
    assert {key(x) for x in fast} == reachable and {key(x) for x in slow} == reachable


def test_cutout_fills_with_the_mean_colour(synthetic):
    spec = AugmentSpec(cutout=4)
    loader = make_loader(synthetic, "train", 64, train=True, augment=spec)
    x, _ = next(iter(loader))
    mean = torch.tensor(synthetic.info.mean).view(1, 3, 1, 1)
    filled = (x == mean).all(1)  # pixels equal to the mean colour in every channel
    per_image = filled.flatten(1).sum(1)
    assert int(per_image.min()) >= 4 and int(per_image.max()) >= 16  # a clipped or full 4x4 square
    slow = make_loader(synthetic, "train", 64, train=True, augment=spec, in_memory=False, num_workers=0)
    xs, _ = next(iter(slow))
    assert int((xs == mean).all(1).flatten(1).sum(1).min()) >= 4


def test_dataloader_path_matches_the_batch_interface(synthetic):
    loader = make_loader(synthetic, "train", 32, train=True, seed=2, in_memory=False, num_workers=0)
    assert not loader.in_memory and len(loader) == 6
    x, y, sizes = collect(loader)
    assert x.shape == (192, 3, 12, 12) and sizes == [32] * 6
    loader.set_epoch(0)
    assert torch.equal(collect(loader)[0], x)
    evaluation = make_loader(synthetic, "test", 16, train=False, in_memory=False, num_workers=0)
    assert torch.equal(collect(evaluation)[0], collect(make_loader(synthetic, "test", 16, train=False))[0])


def test_augment_argument_forms(synthetic):
    assert make_loader(synthetic, "train", 8, train=True).augment == synthetic.augmentation
    assert not make_loader(synthetic, "train", 8, train=False).augment.active
    assert not make_loader(synthetic, "train", 8, train=True, augment=False).augment.active
    spec = make_loader(synthetic, "train", 8, train=True, augment={"cutout": 16}).augment
    assert spec == AugmentSpec(padding=2, cutout=16)  # synthetic's padding 2 kept
    with pytest.raises(ValueError, match="in-memory loader can't be used"):
        make_loader(synthetic, "train", 8, train=True, augment=AugmentSpec(resized_crop=True), in_memory=True)
    resized = make_loader(synthetic, "train", 8, train=True, augment=AugmentSpec(resized_crop=True), num_workers=0)
    assert not resized.in_memory and next(iter(resized))[0].shape == (8, 3, 12, 12)
