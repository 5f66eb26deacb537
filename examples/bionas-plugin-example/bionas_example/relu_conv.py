"""A search-space operation: ReLU, a 3x3 convolution, BatchNorm (DARTS's ReLUConvBN as an edge candidate).

It starts with a ReLU, so it is built as a `bionas.ReLUFirst`: a mixed edge of the
supernet then computes that ReLU once for every candidate that starts with one.
Its convolution learns by the edge's rule: `bionas.with_rule` applies it.
"""

from torch import nn

import bionas


class ReLUConv3x3(bionas.Operation):
    name = "relu_conv_3x3"
    description = "ReLU, 3x3 convolution, BatchNorm; strided at stride 2 (example plugin)."
    parametric = True  # one candidate per rule of the space

    def build(self, channels: int, stride: int, rule, affine: bool) -> nn.Module:
        block = bionas.ReLUFirst(
            nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels, affine=affine),  # affine=False: built for the supernet, as DARTS
        )
        return bionas.with_rule(block, rule)
