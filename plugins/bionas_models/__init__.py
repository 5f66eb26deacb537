"""First-party models of bionas, registered through the `bionas` entry-point group.

resnet20, resnet32 and resnet56 are the CIFAR ResNets of He et al. (2016), the
networks of BioTorch's CIFAR-10 benchmark; lenet5 is LeNet-5 as BioTorch's MNIST
benchmark trains it; mlp is a plain multilayer perceptron. `timm` and `torchvision`
are families: a spec names `timm/<name>` or `torchvision/<name>` and passes options
through to that library's constructor (no pretrained weights: nothing is downloaded).
"""

import bionas
from bionas_models.families import Timm, Torchvision
from bionas_models.lenet import LeNet5
from bionas_models.mlp import MLP
from bionas_models.resnet import ResNet20, ResNet32, ResNet56

MODELS = (ResNet20, ResNet32, ResNet56, LeNet5, MLP, Timm, Torchvision)


@bionas.hookimpl
def bionas_register_models(register):
    for model in MODELS:
        register(model)
