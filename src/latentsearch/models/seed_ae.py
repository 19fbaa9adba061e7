"""The convolutional autoencoder of Gosthipaty & Chakraborty (2020), layer for layer.

The study's Keras model: three conv blocks with two max-pools in the encoder, the last conv
named ``retrieval``; nearest-neighbour upsampling in the decoder. The embedding is the raw
``retrieval`` conv output (before its BatchNorm/ReLU), global-average-pooled to 128-d, and the
optional "hint" head (GAP → Dense(10)) reads the same tensor.
"""

from __future__ import annotations

import torch
from torch import nn

from latentsearch.errors import LatentsearchError
from latentsearch.models.base import EmbeddingModel, ModelOutput
from latentsearch.models.layers import UpsampleConv2d


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    # Keras BatchNormalization defaults: momentum 0.99 (torch: 0.01), epsilon 1e-3.
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
        nn.ReLU(inplace=True),
    )


def _upconv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    # UpSampling2D + Conv2D(3x3, same), computed without materialising the upsampled map.
    return nn.Sequential(
        UpsampleConv2d(cin, cout),
        nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
        nn.ReLU(inplace=True),
    )


class SeedAutoencoder(EmbeddingModel):
    """The study's autoencoder, optionally with the hint classification head.

    Args:
        in_channels: Image channels (3 for CIFAR-10).
        image_size: Input height and width; must be divisible by 4.
        num_classes: Size of the hint head; 0 builds the vanilla autoencoder.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 0) -> None:
        super().__init__()
        if image_size % 4:
            raise LatentsearchError(f"seed-ae needs an image size divisible by 4, got {image_size}")
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.embedding_dim = 128
        self.encoder = nn.Sequential(
            _conv_bn_relu(in_channels, 32),
            nn.MaxPool2d(2),
            _conv_bn_relu(32, 64),
            nn.MaxPool2d(2),
        )
        self.retrieval = nn.Conv2d(64, 128, 3, padding=1)
        self.retrieval_act = nn.Sequential(
            nn.BatchNorm2d(128, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True)
        )
        self.decoder = nn.Sequential(
            _upconv_bn_relu(128, 128),
            _upconv_bn_relu(128, 64),
            nn.Conv2d(64, in_channels, 3, padding=1),
            nn.Sigmoid(),
        )
        self.head = nn.Linear(128, num_classes) if num_classes > 0 else None
        self._keras_init()

    def _keras_init(self) -> None:
        # Keras defaults: glorot-uniform kernels and zero biases, which the study trained with.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, UpsampleConv2d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """Encodes, decodes and classifies.

        Args:
            x: Images in [0, 1]. Shape: (B, C, H, W).

        Returns:
            ``embedding`` (B, 128), ``reconstruction`` (B, C, H, W) and, with the hint head,
            ``logits`` (B, num_classes).
        """
        z = self.retrieval(self.encoder(x))
        pooled = z.mean(dim=(2, 3))
        recon = self.decoder(self.retrieval_act(z))
        logits = self.head(pooled) if self.head is not None else None
        return ModelOutput(embedding=pooled, reconstruction=recon, logits=logits)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeds without running the decoder. Shape: (B, C, H, W) -> (B, 128)."""
        return self.retrieval(self.encoder(x)).mean(dim=(2, 3))
