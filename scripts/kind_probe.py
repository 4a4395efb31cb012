#!/usr/bin/env python3
"""The best case for the tiny LEGION's kind score: a vision network trained *directly* on the
planted artifact kind (cross-entropy on the label, no language model in between), scored on the
test split's images with artifacts. The LLM of the main job can only name a kind its CLIP tower
sees, through a far weaker signal (a few tokens of a ~165-token answer), so what a directly
supervised network of the tiny CLIP's shape reaches here bounds what the main job can reach.

    python3 scripts/kind_probe.py [--data data/synthscars-tiny] [--size 32] [--arch vit]
                                  [--patch 8] [--width 32] [--seeds 3] [--epochs 50]

`--arch vit` is the tiny preset's CLIP shape (patch 8 at 32 px: 16 tokens, width 32, 2
pre-norm layers, 4 heads, MLP 2x; mean-pooled tokens into a linear head); `--arch cnn` a small
convolutional network (4 3x3 convolutions, max pooling) for comparison: convolutions need far
fewer examples than a ViT. AdamW lr 1e-3, batch 16, images resized with Pillow's bicubic filter
as in `scripts/kind_separability.py` (whose loader this uses). Prints each seed's test
accuracy and confusion table, then the mean. Needs torch, numpy and Pillow.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from kind_separability import KINDS, load


def tensors(images, size):
    resized = [im if im.size == (size, size) else im.resize((size, size), Image.BICUBIC)
               for im in images]
    pixels = np.stack([np.asarray(im, dtype=np.float32) / 255 for im in resized])
    return (torch.from_numpy(pixels).permute(0, 3, 1, 2) - 0.5) / 0.25


class Vit(nn.Module):
    def __init__(self, size, patch, width, layers):
        super().__init__()
        self.embed = nn.Conv2d(3, width, patch, patch)
        self.positions = nn.Parameter(torch.randn(1, (size // patch) ** 2, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, 0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, len(KINDS))

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.positions
        return self.head(self.encoder(tokens).mean(1))


def cnn():
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.GELU(), nn.Conv2d(32, 32, 3, padding=1), nn.GELU(),
        nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.GELU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(64, len(KINDS)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/synthscars-tiny"))
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--arch", choices=("vit", "cnn"), default="vit")
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train_images, train_kinds = load(args.data, "train")
    test_images, test_kinds = load(args.data, "test")
    x_train, y_train = tensors(train_images, args.size), torch.from_numpy(train_kinds)
    x_test, y_test = tensors(test_images, args.size), torch.from_numpy(test_kinds)
    print(f"{args.data}: {len(y_train)} training / {len(y_test)} test images with artifacts, "
          f"{args.arch} at {args.size} px")
    accuracies = []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        model = (Vit(args.size, args.patch, args.width, args.layers) if args.arch == "vit"
                 else cnn())
        optimizer = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.01)
        for _ in range(args.epochs):
            order = torch.randperm(len(y_train))
            for start in range(0, len(order), 16):
                batch = order[start:start + 16]
                loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            named = model(x_test).argmax(1)
            train_accuracy = (model(x_train).argmax(1) == y_train).float().mean().item()
        accuracy = (named == y_test).float().mean().item()
        accuracies.append(accuracy)
        table = [[int(((y_test == p) & (named == n)).sum()) for n in range(len(KINDS))]
                 for p in range(len(KINDS))]
        print(f"seed {seed}: test {100 * accuracy:.1f}% (train {100 * train_accuracy:.1f}%), "
              f"planted x named ({'/'.join(KINDS)}): {table}")
    print(f"mean test accuracy over {args.seeds} seeds: {100 * np.mean(accuracies):.1f}% "
          f"(chance {100 / len(KINDS):.0f}%)")


if __name__ == "__main__":
    main()
