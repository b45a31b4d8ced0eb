"""Synthetic data with structure a small network can learn (nothing is downloaded).

Every generator is seeded, so a case trains on the same batches every time.
"""

from __future__ import annotations

import torch


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def class_vectors(steps: int, batch: int, features: int, classes: int, seed: int = 0):
    """Gaussian clusters around one random prototype per class, standardised features."""
    g = _generator(seed)
    prototypes = torch.randn(classes, features, generator=g)
    out = []
    for _ in range(steps):
        y = torch.randint(0, classes, (batch,), generator=g)
        x = prototypes[y] + 0.7 * torch.randn(batch, features, generator=g)
        out.append((x, y))
    return out


def class_images(steps: int, batch: int, channels: int, size: int, classes: int, seed: int = 0):
    """Images of one blurry random pattern per class plus noise, roughly zero mean and unit variance."""
    g = _generator(seed)
    patterns = torch.randn(classes, channels, size, size, generator=g)
    patterns = torch.nn.functional.avg_pool2d(patterns, 3, stride=1, padding=1) * 2
    out = []
    for _ in range(steps):
        y = torch.randint(0, classes, (batch,), generator=g)
        out.append((patterns[y] + 0.5 * torch.randn(batch, channels, size, size, generator=g), y))
    return out


def pixel_images(steps: int, batch: int, pixels: int, seed: int = 0):
    """Flattened images in [0, 1], mostly dark background with bright strokes (MNIST-like): one of
    ten stroke patterns per image, each stroke pixel drawn with probability 0.7 (handwriting varies),
    plus a few stray pixels."""
    g = _generator(seed)
    strokes = (torch.rand(10, pixels, generator=g) < 0.2).float()
    out = []
    for _ in range(steps):
        which = torch.randint(0, 10, (batch,), generator=g)
        kept = (torch.rand(batch, pixels, generator=g) < 0.7).float()
        stray = (torch.rand(batch, pixels, generator=g) < 0.03).float()
        intensity = 0.6 + 0.4 * torch.rand(batch, pixels, generator=g)
        out.append((((strokes[which] * kept + stray).clamp(0, 1) * intensity),))
    return out


def token_stream(length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """A long token sequence from a random first-order Markov chain with a few likely successors."""
    g = _generator(seed)
    successors = torch.randint(0, vocab, (vocab, 3), generator=g)
    tokens = [0]
    for choice in torch.randint(0, 3, (length - 1,), generator=g).tolist():
        tokens.append(int(successors[tokens[-1], choice]))
    return torch.tensor(tokens)


def ring_of_gaussians(steps: int, batch: int, dims: int, seed: int = 0):
    """GAN 'real' samples: points near one of eight centres, inside (-1, 1) like normalised images."""
    g = _generator(seed)
    centres = 0.6 * torch.tanh(torch.randn(8, dims, generator=g))
    out = []
    for _ in range(steps):
        which = torch.randint(0, 8, (batch,), generator=g)
        out.append(centres[which] + 0.05 * torch.randn(batch, dims, generator=g))
    return out
