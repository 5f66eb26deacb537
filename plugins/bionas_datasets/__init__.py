"""First-party datasets of bionas, registered through the `bionas` entry-point group."""

import bionas
from bionas_datasets.cifar import Cifar10, Cifar100
from bionas_datasets.embedded import Digits, Mnist5k
from bionas_datasets.folder import Folder, ImageNet
from bionas_datasets.imagenet16 import ImageNet16_120
from bionas_datasets.synthetic import Synthetic

DATASETS = (Cifar10, Cifar100, ImageNet16_120, ImageNet, Mnist5k, Digits, Folder, Synthetic)


@bionas.hookimpl
def bionas_register_datasets(register):
    for dataset in DATASETS:
        register(dataset)
