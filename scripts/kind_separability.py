#!/usr/bin/env python3
"""How much of the planted artifact kind is in the pixels, before any network: a softmax regression
on 7 global statistics of each image, trained on the train split's images with artifacts and
scored on the test split's, at the 32 px the tiny preset's CLIP sees and at the 64 px original.

    python3 scripts/kind_separability.py [--data data/synthscars-tiny]

Needs numpy and Pillow. The planted kind of an image is the generator's own record of it,
`labels.jsonl`'s `categories` (all refs of an image share one kind; it is also the kind its
phrases name, which is what `legion train`'s kind score compares against). The CLIP input is
resized with Pillow's bicubic filter, as the CLIP preprocessing.
"""
import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

KINDS = ("physics", "structure", "distortion")


def load(root, split):
    """The split's images with artifacts and their planted kinds (index into KINDS)."""
    labels = [json.loads(line) for line in (root / "labels.jsonl").read_text().splitlines() if line]
    prefix = f"{split}_"
    images, kinds = [], []
    for label in labels:
        if not label["image"].startswith(prefix) or not label.get("categories"):
            continue
        (kind,) = set(label["categories"])
        images.append(Image.open(root / split / "images" / label["image"]).convert("RGB"))
        kinds.append(KINDS.index(kind))
    return images, np.array(kinds)


def statistics(image, size):
    pixels = np.asarray(image.resize((size, size), Image.BICUBIC), dtype=np.float64) / 255
    luma = pixels.mean(2)
    dy, dx = np.abs(np.diff(luma, axis=0)), np.abs(np.diff(luma, axis=1))
    saturation = pixels.max(2) - pixels.min(2)
    return [dy.mean() + dx.mean(), np.percentile(dy, 99), (luma < 0.15).mean(), (luma < 0.3).mean(),
            saturation.mean(), np.percentile(saturation, 99), luma.std()]


def fit_softmax(features, kinds, steps=3000, lr=0.1, l2=1e-3):
    weights = np.zeros((features.shape[1], len(KINDS)))
    targets = np.eye(len(KINDS))[kinds]
    for _ in range(steps):
        logits = features @ weights
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        weights -= lr * (features.T @ (probs - targets) / len(features) + l2 * weights)
    return weights


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="data/synthscars-tiny")
    args = parser.parse_args()
    root = Path(args.data)
    train_images, train_kinds = load(root, "train")
    test_images, test_kinds = load(root, "test")
    print(f"{len(train_kinds)} train / {len(test_kinds)} test images with artifacts")
    for size in (32, 64):
        train = np.array([statistics(i, size) for i in train_images])
        test = np.array([statistics(i, size) for i in test_images])
        mean, std = train.mean(0), train.std(0) + 1e-12
        with_bias = lambda f: np.c_[(f - mean) / std, np.ones(len(f))]
        weights = fit_softmax(with_bias(train), train_kinds)
        for name, f, kinds in (("train", train, train_kinds), ("test", test, test_kinds)):
            accuracy = ((with_bias(f) @ weights).argmax(1) == kinds).mean()
            print(f"{size} px, {name}: kind named on {100 * accuracy:.1f}% (chance 33.3%)")


if __name__ == "__main__":
    main()
