#!/usr/bin/env python3
"""Times `legion eval` against the Python reference evaluator on the same 1,000 images, in one run.

1. `legion data synth` writes a SynthScars-layout test split of N images at S px (default 1000 at 1024).
2. Predictions: each image's GT mask (cv2.fillPoly, the LEGION convention) shifted by 8 px, as
   binary PNGs: a realistic, imperfect predictor.
3. `scripts/eval_reference.py` (numpy + cv2 + rouge-score) and `legion eval` (--profile) score
   the same folders; the script checks the overall numbers are identical and prints the times and
   the ratio.

    /path/to/venv/bin/python scripts/bench_eval.py [--count 1000] [--size 1024] [--profile dev]
        [--reuse-data]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def generate(legion, gt, pred, args):
    """Writes the GT dataset (`legion data synth`) and the shifted-GT prediction PNGs."""
    subprocess.run([str(legion), "data", "synth", "--out", str(gt), "--seed", "3", "--train", "1",
                    "--test", str(args.count), "--image-size", str(args.size), "--force"],
                   check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(pred, ignore_errors=True)  # no stale masks from a larger --count
    pred.mkdir(parents=True)
    records = json.loads((gt / "test/annotations/test.json").read_text())
    for rec in records:
        (body,) = rec.values()
        h = w = args.size
        mask = np.zeros((h, w), np.uint8)
        for ref in body["refs"]:
            for seg in ref["segmentation"]:
                pts = np.array(seg, dtype=np.float32).reshape(-1, 2).astype(np.int32)
                cv2.fillPoly(mask, [pts], 1)
        shifted = np.roll(mask, (8, 8), axis=(0, 1))
        cv2.imwrite(str(pred / (Path(body["img_file_name"]).stem + ".png")), shifted * 255)


def prepare_data(legion, args):
    """The benchmark folders under target/bench-eval, generated unless `args.reuse_data` and an
    earlier run (of this script or bench_python_api.py) used the same count and size.
    Returns (work folder, GT dataset, prediction folder)."""
    work = ROOT / "target" / "bench-eval"
    gt, pred = work / "gt", work / "pred"
    stamp = work / "params.json"
    params = {"count": args.count, "size": args.size, "seed": 3}
    if args.reuse_data and stamp.is_file() and json.loads(stamp.read_text()) == params:
        print(f"reusing {work}", file=sys.stderr)
    else:
        stamp.unlink(missing_ok=True)
        generate(legion, gt, pred, args)
        stamp.write_text(json.dumps(params))
    return work, gt, pred


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--profile", choices=["release", "dev"], default="release",
                    help="which build of `legion` to time (dev: dependencies, legion-eval and legion-data at "
                         "opt-level 3, the rest at 1, debug assertions on)")
    ap.add_argument("--reuse-data", action="store_true",
                    help="keep target/bench-eval from an earlier run with the same --count/--size "
                         "(generating 1,000 images at 1024 px takes minutes)")
    args = ap.parse_args()
    legion = ROOT / "target" / ("release" if args.profile == "release" else "debug") / "legion"
    build = ["cargo", "build", "-q", "-p", "legion-cli"] + (["--release"] if args.profile == "release" else [])
    subprocess.run(build, cwd=ROOT, check=True)
    work, gt, pred = prepare_data(legion, args)
    records = json.loads((gt / "test/annotations/test.json").read_text())

    t = time.perf_counter()
    ref = subprocess.run([sys.executable, str(ROOT / "scripts/eval_reference.py"), "--gt", str(gt), "--split", "test",
                          "--masks", str(pred), "--labels", str(gt / "labels.jsonl")],
                         check=True, capture_output=True, text=True)
    python_s = time.perf_counter() - t
    ref = json.loads(ref.stdout)["localization"]["overall"]

    out = work / "rust.json"
    t = time.perf_counter()
    subprocess.run([str(legion), "eval", "--gt", str(gt), "--split", "test", "--masks", str(pred),
                    "--format", "json", "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    rust_s = time.perf_counter() - t
    rust = json.loads(out.read_text())["localization"]["overall"]

    diffs = {k: abs(rust[k] - ref[k]) for k in ("miou_per_image", "f1_per_image") if k in ref and k in rust}
    print(json.dumps({
        "images": len(records), "size": args.size, "cores": os.cpu_count(), "profile": args.profile,
        "python_seconds": python_s, "rust_seconds": rust_s, "speedup": python_s / rust_s,
        "rust_overall": {k: rust[k] for k in ("miou_per_image", "f1_per_image")},
        "reference_overall": {k: ref.get(k) for k in ("miou_per_image", "f1_per_image")},
        "max_abs_diff": diffs,
    }, indent=2))


if __name__ == "__main__":
    main()
