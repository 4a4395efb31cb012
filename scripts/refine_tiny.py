#!/usr/bin/env python3
"""LEGION as a controller on the shipped tiny data: `legion refine` with the built-in inpainter on
every test image, and the mean detected artifact area per round.

A model bundle is needed first (the README's main job writes runs/tiny/final):

    cargo run -p legion-cli -- train --config configs/tiny.toml
    python3 scripts/refine_tiny.py --checkpoint runs/tiny/final

An image whose loop stopped keeps its last detected area in later rounds (it is done), so every
round averages over the same images. The dilation is scaled to the 64 px images (the reference's
5x5 kernel x 5 iterations, ~10 px, is meant for 1024 px images).
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default="runs/tiny/final")
    parser.add_argument("--data", default="data/synthscars-tiny")
    parser.add_argument("--out", default="runs/refine-tiny")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dilate", type=int, default=2)
    parser.add_argument("--legion", default=str(ROOT / "target/debug/legion"))
    args = parser.parse_args()

    images = sorted((ROOT / args.data / "test/images").glob("*.png"))
    areas = []  # per image, detected area per round 0..rounds
    for image in images:
        out = ROOT / args.out / image.stem
        subprocess.run(
            [args.legion, "refine", str(image), "--checkpoint", args.checkpoint, "--out", str(out),
             "--rounds", str(args.rounds), "--dilate", str(args.dilate), "--max-new-tokens", "160"],
            check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        summary = json.loads((out / "summary.json").read_text())
        per_round = [r["artifact_area"] for r in summary["rounds"]]
        per_round += [per_round[-1]] * (args.rounds + 1 - len(per_round))
        areas.append(per_round)
    print(f"{len(images)} test images, built-in inpainter, dilation {args.dilate} px, "
          f"up to {args.rounds} rounds")
    print("round  mean detected area (px)  images with an artifact")
    for r in range(args.rounds + 1):
        column = [a[r] for a in areas]
        print(f"{r:5d}  {sum(column) / len(column):23.1f}  {sum(1 for v in column if v > 0):23d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
