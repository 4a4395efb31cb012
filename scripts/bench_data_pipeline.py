#!/usr/bin/env python3
"""Times the SynthScars data pipeline in the reference Python path and in legion-rs, in one run.

The work per record, as LEGION's `LegionGCGDataset` does it: read the image (cv2.imread + RGB),
get its size (PIL), rasterise every ref's polygons (pycocotools frPyObjects + decode, summed),
CLIP preprocessing (transformers CLIPImageProcessor, 336) and SAM preprocessing
(segment-anything ResizeLongestSide(1024) + normalise + pad). The Rust side is the criterion
bench `benches/data_pipeline.rs` on the same folder.

    /path/to/venv/bin/python scripts/bench_data_pipeline.py [--count 32] [--size 512] [--profile dev] [--rounds 3]

Needs: numpy, pillow, opencv-python-headless, pycocotools, transformers, torch, torchvision,
segment-anything. Prints images/s for both and the ratios (sequential vs sequential, and
a process per core vs rayon on all cores). "Sequential" Rust loads one image after the other,
but each image's resampling runs its rows in parallel (rayon), so on 2 cores it is not a
one-core number; the parallel ratios compare all cores with all cores: `parallel` keeps every
sample (`load_many`, what the batcher does), `parallel_discard` drops each one as soon as it is
made, like the Python pool workers, which return only shapes.

A shared machine's speed drifts by tens of percent from minute to minute, so the two sides are
timed in alternation: each round times Python (median of `--repeats` runs) and then Rust
(criterion's median), and the ratios of every round and their median are printed.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as coco_mask
from segment_anything.utils.transforms import ResizeLongestSide
from transformers import CLIPImageProcessor

ROOT = Path(__file__).resolve().parent.parent
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
CLIP = None
SAM = ResizeLongestSide(1024)


def clip_processor():
    return CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": 336}, resample=3, do_center_crop=True,
        crop_size={"height": 336, "width": 336}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711], do_convert_rgb=True)


def load(item):
    global CLIP
    if CLIP is None:
        CLIP = clip_processor()
    path, refs = item
    width, height = Image.open(path).size
    masks = []
    for ref in refs:
        m = np.zeros((height, width), dtype=np.uint8)
        for seg in ref["segmentation"]:
            rles = coco_mask.frPyObjects([np.array(seg)], height, width)
            m += coco_mask.decode(rles).astype(np.uint8).squeeze()
        masks.append(m)
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    clip = CLIP.preprocess(image, return_tensors="pt")["pixel_values"][0]
    sam = SAM.apply_image(image)
    x = (torch.from_numpy(sam).permute(2, 0, 1).contiguous() - MEAN) / STD
    h, w = x.shape[-2:]
    x = F.pad(x, (0, 1024 - w, 0, 1024 - h))
    return clip.shape, x.shape, len(masks)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5, help="Python runs per round (median)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating Python/Rust rounds")
    ap.add_argument("--profile", choices=["release", "dev"], default="release",
                    help="build profile of the Rust side (dev: dependencies, legion-data and legion-eval "
                         "at opt-level 3, debug assertions on; saves a release build of burn)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    data = ROOT / "target" / "bench-data"
    profile = ["--profile", args.profile]
    subprocess.run(["cargo", "run", *profile, "-q", "-p", "legion-cli", "--", "data", "synth", "--out", str(data),
                    "--seed", "7", "--train", str(args.count), "--test", "0", "--image-size", str(args.size),
                    "--force"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    records = json.loads((data / "train/annotations/train.json").read_text())
    items = []
    for rec in records:
        (body,) = rec.values()
        items.append((data / "train/images" / body["img_file_name"], body["refs"]))

    def median_time(fn):
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    env = dict(os.environ, LEGION_BENCH_DATA=str(data))
    bench = ["cargo", "bench", *profile, "-q", "-p", "legion-bench", "--bench", "data_pipeline"]
    subprocess.run([*bench, "--no-run"], cwd=ROOT, check=True)
    crit = ROOT / "target" / "criterion" / "data_pipeline"

    def rust_seconds(name):
        est = json.loads((crit / name / "new" / "estimates.json").read_text())
        return est["median"]["point_estimate"] / 1e9

    n = len(items)
    rounds = []
    with Pool(os.cpu_count()) as pool:
        pool.map(load, items[:2])  # warm the workers
        for _ in range(args.rounds):
            seq = median_time(lambda: [load(i) for i in items])
            par = median_time(lambda: pool.map(load, items))
            subprocess.run([*bench, "--", "--noplot", "--warm-up-time", "1", "--measurement-time", "4",
                            "load_rasterise_preprocess"], cwd=ROOT, env=env, check=True, stdout=sys.stderr)
            rust_seq = rust_seconds("load_rasterise_preprocess_sequential")
            rust_par = rust_seconds("load_rasterise_preprocess_parallel")
            rust_par_discard = rust_seconds("load_rasterise_preprocess_parallel_discard")
            rounds.append({
                "python_sequential_img_per_s": n / seq, "python_pool_img_per_s": n / par,
                "rust_sequential_img_per_s": n / rust_seq, "rust_parallel_img_per_s": n / rust_par,
                "rust_parallel_discard_img_per_s": n / rust_par_discard,
                "ratio_sequential": seq / rust_seq, "ratio_parallel": par / rust_par,
                "ratio_parallel_discard": par / rust_par_discard,
            })
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(json.dumps({
        "images": n, "size": args.size, "cores": os.cpu_count(), "profile": args.profile,
        "rounds": rounds, "median": medians,
    }, indent=2))


if __name__ == "__main__":
    main()
