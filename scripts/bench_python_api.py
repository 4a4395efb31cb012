#!/usr/bin/env python3
"""Times the legion_rs Python API against the reference Python evaluation, in one run.

Needs the legion_rs wheel installed in this interpreter (README, "From Python") plus numpy,
cv2 and rouge-score. On the same images (by default 1,000 at 1024 px, the data of
scripts/bench_eval.py: `legion data synth` + each GT shifted by 8 px as binary PNGs):

1. folders: `scripts/eval_reference.py` (numpy + cv2) vs `legion_rs.evaluate(gt, masks_dir=...)`
   (both compute the TruFor-style F1 too, as by default);
2. arrays already in memory: the reference's numpy `calculate_miou` + `calculate_f1` per image
   vs `legion_rs.image_scores` per image, `legion_rs.LocalizationAccumulator.add` per image, and
   one `legion_rs.image_scores_batch` call.

It checks that both sides give the same numbers and prints times, ratios and the load average.

    python scripts/bench_python_api.py [--count 1000] [--size 1024] [--reuse-data] [--rounds 1]
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

import legion_rs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from bench_eval import prepare_data  # noqa: E402  (same data as the CLI benchmark)


def load_reference():
    spec = importlib.util.spec_from_file_location("eval_reference", ROOT / "scripts" / "eval_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--reuse-data", action="store_true",
                    help="keep target/bench-eval from an earlier run (of this script or bench_eval.py) "
                         "with the same --count/--size")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the in-memory comparison (median reported)")
    args = ap.parse_args()

    _, gt, pred = prepare_data(legion_rs.cli_path(), args)
    labels = gt / "labels.jsonl"
    reference = load_reference()
    load_before = os.getloadavg()

    # 1. Folders.
    python_s, out = timed(lambda: subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "eval_reference.py"), "--gt", str(gt), "--split", "test",
         "--masks", str(pred), "--labels", str(labels)], check=True, capture_output=True, text=True))
    theirs = json.loads(out.stdout)["localization"]["overall"]
    rust_s, report = timed(lambda: legion_rs.evaluate(gt, masks_dir=pred, labels=labels))
    ours = report["localization"]["overall"]
    folder_diff = max(abs(ours[k] - theirs[k]) for k in ("miou_per_image", "f1_per_image", "miou_accumulated"))

    # 2. Arrays in memory (loading is not timed).
    records = list(legion_rs.load_synthscars(gt, "test"))
    gts = [r["mask"] for r in records]
    preds = [(cv2.imread(str(pred / (Path(r["image"]).stem + ".png")), cv2.IMREAD_UNCHANGED) != 0).astype(np.uint8)
             for r in records]

    def numpy_per_image():
        return [(reference.calculate_miou(p, g), reference.calculate_f1(p, g)) for g, p in zip(gts, preds)]

    def rust_per_image():
        return [legion_rs.image_scores(g, p) for g, p in zip(gts, preds)]

    def rust_accumulator():
        accumulator = legion_rs.LocalizationAccumulator()
        for g, p in zip(gts, preds):
            accumulator.add(g, p)
        return accumulator.summary()

    def rust_batch():
        return legion_rs.image_scores_batch(gts, preds)

    times = {"numpy": [], "image_scores": [], "accumulator": [], "batch": []}
    for _ in range(args.rounds):
        t, numpy_scores = timed(numpy_per_image)
        times["numpy"].append(t)
        t, rust_scores = timed(rust_per_image)
        times["image_scores"].append(t)
        t, summary = timed(rust_accumulator)
        times["accumulator"].append(t)
        t, batch = timed(rust_batch)
        times["batch"].append(t)
    array_diff = max(max(abs(r["miou"] - m), abs(r["f1"] - f)) for r, (m, f) in zip(rust_scores, numpy_scores))
    assert batch == rust_scores
    mean_miou = sum(m for m, _ in numpy_scores) / len(numpy_scores)
    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}

    print(json.dumps({
        "images": len(records), "size": args.size, "cores": os.cpu_count(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "folders": {"reference_python_s": python_s, "legion_rs_evaluate_s": rust_s,
                    "speedup": python_s / rust_s, "max_abs_diff_overall": folder_diff},
        "arrays": {"numpy_per_image_s": median["numpy"], "image_scores_s": median["image_scores"],
                   "accumulator_s": median["accumulator"], "batch_s": median["batch"],
                   "speedup_image_scores": median["numpy"] / median["image_scores"],
                   "speedup_accumulator": median["numpy"] / median["accumulator"],
                   "speedup_batch": median["numpy"] / median["batch"],
                   "max_abs_diff_per_image": array_diff,
                   "mean_miou_diff": abs(summary["miou_per_image"] - mean_miou)},
    }, indent=2))


if __name__ == "__main__":
    main()
