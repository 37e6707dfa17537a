"""A small CNN with BatchNorm initialized by the ``dcgan`` preset.

DCGAN (Radford, Metz, Chintala, ICLR 2016) initializes every convolution from N(0, 0.02) and
BatchNorm scales from N(1, 0.02), biases at zero. The data: 16x16 single-channel images, each
one of four random templates plus noise; the network must tell which.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import Classifier, common_parser, loader, print_final_loss, trainer_for

from lightning_init import InitCallback


def template_images(num_samples: int = 2048, num_classes: int = 4, seed: int = 0) -> TensorDataset:
    """Images of shape (1, 16, 16): a class template (fixed across calls) plus unit noise."""
    templates = torch.randn(num_classes, 1, 16, 16, generator=torch.Generator().manual_seed(99))
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (num_samples,), generator=generator)
    images = templates[labels] + torch.randn(num_samples, 1, 16, 16, generator=generator)
    return TensorDataset(images, labels)


def small_cnn(num_classes: int = 4) -> nn.Sequential:
    def block(in_channels: int, out_channels: int) -> list[nn.Module]:
        return [
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        ]

    return nn.Sequential(
        *block(1, 16),
        nn.MaxPool2d(2),
        *block(16, 32),
        nn.MaxPool2d(2),
        *block(32, 32),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


def main(argv: list[str] | None = None) -> None:
    args = common_parser(__doc__.splitlines()[0]).parse_args(argv)
    L.seed_everything(0, verbose=False)
    model = Classifier(small_cnn(), lr=0.05)
    trainer = trainer_for("cnn_dcgan", args, [InitCallback(policy="dcgan")])
    trainer.fit(model, loader(template_images()))
    print_final_loss(trainer)


if __name__ == "__main__":
    main()
