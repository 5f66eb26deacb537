"""The real dataset plugins read tiny files written in the exact on-disk formats of the real data sets."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import bionas
from bionas.data import make_loader, search_split
from bionas.errors import DataError


def image_ids(images: torch.Tensor) -> list[int]:
    """The id every fixture image carries in its green channel."""
    return images[:, 1, 0, 0].tolist()


def rows_for(ids: np.ndarray, labels: np.ndarray, side: int) -> np.ndarray:
    """N x (3 * side * side) uint8 rows (all R, then G, then B): R = label, G = id, B = column index."""
    n = len(ids)
    img = np.zeros((n, 3, side, side), dtype=np.uint8)
    img[:, 0] = (labels % 256)[:, None, None]
    img[:, 1] = ids[:, None, None]
    img[:, 2] = np.arange(side, dtype=np.uint8)[None, None, :]
    return img.reshape(n, -1)


def dump(path, entry) -> None:
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


@pytest.fixture
def cifar10_root(tmp_path):
    write_cifar10(tmp_path)
    return tmp_path


def write_cifar10(root) -> None:
    """cifar-10-batches-py/ with 5 training batches of 20 images and a test batch of 30."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for b in range(5):
        ids = np.arange(b * 20, b * 20 + 20)
        labels = rng.integers(0, 10, 20)
        dump(d / f"data_batch_{b + 1}", {"batch_label": f"training batch {b + 1} of 5", "labels": labels.tolist(),
                                          "data": rows_for(ids, labels, 32), "filenames": [f"{i}.png" for i in ids]})
    labels = np.arange(30) % 10
    dump(d / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": labels.tolist(),
                            "data": rows_for(np.arange(200, 230), labels, 32), "filenames": []})
    dump(d / "batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": 20, "num_vis": 3072})


@pytest.fixture
def cifar100_root(tmp_path):
    """cifar-100-python/ {train, test, meta}, written with bytes keys as the Python 2 originals have."""
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for split, ids in (("train", np.arange(0, 120)), ("test", np.arange(150, 190))):
        fine = (ids * 7) % 100
        dump(d / split, {b"filenames": [], b"batch_label": split.encode(), b"fine_labels": fine.tolist(),
                         b"coarse_labels": (fine // 5).tolist(), b"data": rows_for(ids, fine, 32)})
    dump(d / "meta", {b"fine_label_names": [b"x"] * 100, b"coarse_label_names": [b"y"] * 20})
    return tmp_path


@pytest.fixture
def imagenet16_root(tmp_path):
    """train_data_batch_1..10 and val_data with 1-based labels 1..125 (those above 120 must be dropped)."""
    rng = np.random.default_rng(1)
    for b in range(10):
        ids = np.arange(b * 20, b * 20 + 20)
        labels = rng.integers(1, 126, 20)
        dump(tmp_path / f"train_data_batch_{b + 1}", {"data": rows_for(ids, labels, 16), "labels": labels.tolist(),
                                                      "mean": np.zeros(768)})
    labels = np.arange(1, 126)[:40]
    labels[-3:] = [121, 124, 125]
    dump(tmp_path / "val_data", {"data": rows_for(np.arange(200, 240), labels, 16), "labels": labels.tolist()})
    return tmp_path


def check_carved(dataset, n_train_total: int, n_val: int):
    """train + val partition the original training set; val is stable across instances."""
    train, val = dataset.tensors("train"), dataset.tensors("val")
    assert len(train[0]) == n_train_total - n_val and len(val[0]) == n_val
    ids_train, ids_val = set(image_ids(train[0])), set(image_ids(val[0]))
    assert not ids_train & ids_val
    assert len(ids_train | ids_val) == n_train_total
    again = type(dataset)(dataset.options)
    assert image_ids(again.tensors("val")[0]) == image_ids(val[0])
    other_seed = type(dataset)(dataset.options, split_seed=1)
    assert image_ids(other_seed.tensors("val")[0]) != image_ids(val[0])


def test_cifar10_reads_the_python_pickles(cifar10_root):
    ds = bionas.get_dataset("cifar10", root=str(cifar10_root), val_size=20)
    assert ds.info.num_classes == 10 and ds.info.channels == 3 and ds.info.image_size == 32
    check_carved(ds, 100, 20)
    images, labels = ds.tensors("test")
    assert images.shape == (30, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == (np.arange(30) % 10).tolist()
    assert image_ids(images) == list(range(200, 230))
    # channel order: all R, then G, then B; rows of 32
    assert torch.equal(images[:, 0, 5, 7], labels.to(torch.uint8))
    assert images[3, 2, 4].tolist() == list(range(32))
    train_images, train_labels = ds.tensors("train")
    assert torch.equal(train_images[:, 0, 0, 0], train_labels.to(torch.uint8))  # labels follow their images
    image, label = ds.split("train")[0]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32) and isinstance(label, int)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert len(ds.split("val")) == 20


def test_cifar100_reads_fine_labels_and_bytes_keys(cifar100_root):
    ds = bionas.get_dataset("cifar100", root=str(cifar100_root), val_size=20)
    assert ds.info.num_classes == 100
    check_carved(ds, 120, 20)
    images, labels = ds.tensors("test")
    assert images.shape == (40, 3, 32, 32)
    assert labels.tolist() == ((np.arange(150, 190) * 7) % 100).tolist()


def test_imagenet16_keeps_the_first_120_classes_relabelled_from_zero(imagenet16_root):
    ds = bionas.get_dataset("imagenet16-120", root=str(imagenet16_root), val_size=15)
    assert ds.info.num_classes == 120 and ds.info.image_size == 16
    assert ds.info.mean[0] == pytest.approx(122.68 / 255)
    train, val, test = (ds.tensors(s) for s in ("train", "val", "test"))
    kept = len(train[1]) + len(val[1])
    assert kept < 200 and len(val[1]) == 15  # some labels were > 120
    for images, labels in (train, val, test):
        assert images.shape[1:] == (3, 16, 16)
        assert int(labels.min()) >= 0 and int(labels.max()) <= 119
        assert torch.equal(images[:, 0, 0, 0].long(), labels + 1)  # R channel holds the 1-based label
    assert len(test[1]) == 37 and image_ids(test[0]) == list(range(200, 237))


def test_missing_cifar_files_say_what_where_and_how(tmp_path):
    ds = bionas.get_dataset("cifar10", root=str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as err:
        ds.split("train")
    message = str(err.value)
    assert "data_batch_1..5, test_batch, batches.meta" in message
    assert str((tmp_path / "nowhere" / "cifar-10-batches-py").resolve()) in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "download: true" in message


def test_download_goes_through_torchvision_only_when_asked(tmp_path, monkeypatch):
    import torchvision

    calls = []

    def fake_cifar10(root, train, download):
        calls.append((root, train, download))
        write_cifar10(tmp_path)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    with pytest.raises(DataError):
        bionas.get_dataset("cifar10", root=str(tmp_path), val_size=20).tensors("train")
    assert calls == []  # download defaults to false
    ds = bionas.get_dataset("cifar10", root=str(tmp_path), val_size=20, download=True)
    assert len(ds.tensors("train")[1]) == 80 and calls == [(str(tmp_path.resolve()), True, True)]
    bionas.get_dataset("cifar10", root=str(tmp_path), val_size=20, download=True).tensors("test")
    assert len(calls) == 1  # files present: nothing downloaded


def test_missing_imagenet16_and_cifar100_files(tmp_path):
    with pytest.raises(DataError, match=r"train_data_batch_1\.\.10 and val_data.*NAS-Bench-201"):
        bionas.get_dataset("imagenet16-120", root=str(tmp_path)).tensors("test")
    with pytest.raises(DataError, match=r"train, test, meta in .*cifar-100-python"):
        bionas.get_dataset("cifar100", root=str(tmp_path)).tensors("test")


def test_default_root_follows_bionas_data(tmp_path, monkeypatch):
    monkeypatch.setenv("BIONAS_DATA", str(tmp_path))
    with pytest.raises(DataError, match=str(tmp_path / "cifar10" / "cifar-10-batches-py")):
        bionas.get_dataset("cifar10").tensors("train")
    monkeypatch.delenv("BIONAS_DATA")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=str(tmp_path / "data" / "imagenet16-120")):
        bionas.get_dataset("imagenet16-120").tensors("train")


def test_bad_split_name_is_a_clear_error(cifar10_root):
    ds = bionas.get_dataset("cifar10", root=str(cifar10_root), val_size=20)
    with pytest.raises(ValueError, match="unknown split 'valid'.*train, val, test"):
        ds.split("valid")
    with pytest.raises(ValueError, match="unknown split"):
        make_loader(ds, "training", 8, train=True)


def test_val_size_too_large(cifar10_root):
    with pytest.raises(DataError, match="val_size 100 leave nothing of the 100 images"):
        bionas.get_dataset("cifar10", root=str(cifar10_root), val_size=100).tensors("train")


# -- ImageFolder trees --------------------------------------------------------------------------


@pytest.fixture
def folder_root(tmp_path):
    """train/{ant,bee,cat}/ 8 PNGs each (various sizes), val/ 2 each; colour encodes class."""
    from PIL import Image

    for split, count in (("train", 8), ("val", 2)):
        for c, name in enumerate(("ant", "bee", "cat")):
            d = tmp_path / split / name
            d.mkdir(parents=True)
            for i in range(count):
                size = (20 + 2 * i, 18 + i)
                colour = (80 * c + 10, 60 + i, 200 - 50 * c)
                Image.new("RGB", size, colour).save(d / f"{i}.png")
    return tmp_path


def test_folder_reads_an_imagefolder_tree(folder_root):
    ds = bionas.get_dataset("folder", root=str(folder_root), image_size=12, val_fraction=0.25)
    assert ds.info.num_classes == 3 and ds.info.image_size == 12 and ds.tensors("train") is None
    train, val, test = (ds.split(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (18, 6, 6)
    assert ds.labels("val").bincount().tolist() == [2, 2, 2]  # stratified
    assert ds.labels("test").tolist() == [0, 0, 1, 1, 2, 2]
    image, label = train[0]
    assert image.shape == (3, 12, 12) and image.dtype == torch.float32
    assert round(float(image[0, 0, 0]) * 255) == 80 * label + 10
    # val is carved from train: disjoint, stable
    assert not set(train.indices) & set(val.indices)
    again = bionas.get_dataset("folder", root=str(folder_root), image_size=12, val_fraction=0.25)
    assert again.split("val").indices == val.indices


def test_folder_with_its_own_val_dir_in_memory_and_grey(folder_root):
    ds = bionas.get_dataset(
        "folder", root=str(folder_root), splits={"train": "train", "val": "val", "test": "val"},
        image_size=8, channels=1, in_memory=True,
    )
    assert ds.info.channels == 1 and ds.info.mean == (0.5,)
    images, labels = ds.tensors("train")
    assert images.shape == (24, 1, 8, 8) and images.dtype == torch.uint8
    assert len(ds.split("val")) == 6
    loader = make_loader(ds, "train", 10, train=True, seed=0)
    assert loader.in_memory and len(loader) == 2
    x, y = next(iter(loader))
    assert x.shape == (10, 1, 8, 8)


def test_folder_options_are_checked(folder_root):
    with pytest.raises(bionas.SpecError, match="splits needs at least train and test"):
        bionas.get_dataset("folder", splits={"train": "train"})
    with pytest.raises(bionas.SpecError, match="unknown split names"):
        bionas.get_dataset("folder", splits={"train": "train", "test": "val", "dev": "dev"})


def test_missing_folder_dirs_say_what_where_and_how(tmp_path):
    with pytest.raises(DataError) as err:
        bionas.get_dataset("imagenet", root=str(tmp_path)).split("train")
    message = str(err.value)
    assert "expected directories train/ and val/" in message and str(tmp_path.resolve()) in message
    assert "image-net.org" in message and "(missing: train/, val/)" in message


def test_imagenet_dataloader_path_with_workers(folder_root):
    ds = bionas.get_dataset("imagenet", root=str(folder_root), image_size=16, val_size=3)
    assert ds.info.num_classes == 3 and ds.info.mean == (0.485, 0.456, 0.406)
    assert len(ds.split("val")) == 3 and len(ds.split("train")) == 21 and len(ds.split("test")) == 6
    assert ds.split("test")[0][0].shape == (3, 16, 16)
    weights, arch = search_split(ds)
    assert len(weights) + len(arch) == 21
    loader = make_loader(ds, "train", 8, train=True, seed=3, indices=weights, num_workers=2)
    assert not loader.in_memory  # ImageNet default augmentation: RandomResizedCrop + flip
    first = list(loader)
    assert len(first) == len(loader) == 1 and first[0][0].shape == (8, 3, 16, 16)
    loader.set_epoch(0)
    again = list(loader)
    assert torch.equal(first[0][0], again[0][0]) and torch.equal(first[0][1], again[0][1])
    evaluation = make_loader(ds, "test", 4, train=False, num_workers=0)
    labels = torch.cat([y for _, y in evaluation])
    assert labels.tolist() == ds.labels("test").tolist() and len(evaluation) == 2
