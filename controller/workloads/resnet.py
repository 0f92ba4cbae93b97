"""ResNet-32 as in Joshi et al. 2020 (Nature Communications 11, 2473), for 28x28 grey images.

He et al.'s CIFAR ResNet with n = 5: a 3x3 convolution to 16 channels, then three stages of
five basic blocks (two 3x3 convolutions, each followed by batch norm, a ReLU between them and
after the sum with the shortcut) at 16, 32 and 64 channels, the first block of stages 2 and 3
halving the image with stride 2; global average pooling and a fully connected layer to the 10
classes: 31 convolutions + 1 linear layer = 32 weighted layers. Every convolution is bias-free
(a batch norm follows each). Where a block changes the shape, its shortcut is a 1x1 convolution
with stride 2 and batch norm (He et al.'s option B), so that every weight of the network sits
on the crossbar and AdaBS re-estimates the statistics of both paths.

On Fashion-MNIST (1 input channel, 28x28: stages at 28, 14 and 7 pixels) this holds
464,144 crossbar weights: 144 in the first convolution, 23,040 in stage 1, 88,064 in stage 2
(with its 512-weight shortcut), 352,256 in stage 3 (2,048 in its shortcut), 640 in the linear
layer. Joshi's CIFAR-10 network reports 361,722 synaptic weights; the paper's exact layer
widths are not reproduced here (``RESNET32_WEIGHTS`` is this network's count, tested).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from controller.workloads.network_torch import ResidualBlock

#: Crossbar weights of ``resnet32()`` for 1-channel input and 10 classes.
RESNET32_WEIGHTS = 464_144


def _basic_block(name: str, c_in: int, c_out: int, stride: int) -> ResidualBlock:
    body = nn.Sequential(
        OrderedDict(
            [
                (f"{name}_conv1", nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)),
                (f"{name}_bn1", nn.BatchNorm2d(c_out)),
                (f"{name}_relu1", nn.ReLU()),
                (f"{name}_conv2", nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)),
                (f"{name}_bn2", nn.BatchNorm2d(c_out)),
            ]
        )
    )
    shortcut = nn.Sequential()
    if stride != 1 or c_in != c_out:
        shortcut = nn.Sequential(
            OrderedDict(
                [
                    (f"{name}_proj", nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False)),
                    (f"{name}_proj_bn", nn.BatchNorm2d(c_out)),
                ]
            )
        )
    return ResidualBlock(body, shortcut)


def resnet(
    blocks_per_stage: int = 5,
    widths: tuple[int, ...] = (16, 32, 64),
    in_channels: int = 1,
    n_classes: int = 10,
    image_px: int = 28,
) -> nn.Sequential:
    """A CIFAR-style ResNet (6 * ``blocks_per_stage`` + 2 weighted layers) as an
    ``nn.Sequential`` of modules a network description can hold. Layer names are unique
    across the network (``s2b0_conv1``: stage 2, block 0, first convolution)."""
    layers: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)),
        ("bn1", nn.BatchNorm2d(widths[0])),
        ("relu1", nn.ReLU()),
    ]
    c_in, px = widths[0], image_px
    for s, c_out in enumerate(widths, start=1):
        for b in range(blocks_per_stage):
            stride = 2 if (s > 1 and b == 0) else 1
            px = (px - 1) // stride + 1
            layers.append((f"s{s}b{b}", _basic_block(f"s{s}b{b}", c_in, c_out, stride)))
            layers.append((f"s{s}b{b}_relu", nn.ReLU()))
            c_in = c_out
    layers += [
        ("pool", nn.AvgPool2d(px)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(c_in, n_classes)),
    ]
    return nn.Sequential(OrderedDict(layers))


def resnet32() -> nn.Sequential:
    """Joshi's ResNet-32 (3 stages of 5 basic blocks, 16/32/64 channels) for Fashion-MNIST."""
    return resnet(5)
