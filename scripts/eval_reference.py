#!/usr/bin/env python3
"""Reference evaluator for legion-eval (the oracle of its fixture tests).

Computes, independently of the Rust code, the LEGION localization metrics (the first commit of
opendatalab/LEGION: evaluate_ours.py calculate_miou / calculate_f1, eval/utils.py generate_mask),
LISA gIoU/cIoU, a TruFor-style F1, ROUGE-L with the real `rouge-score` package, a toy-encoder CSS
(pipeline check only) and detection metrics (numpy, sklearn-free; sklearn is used only as an
optional cross-check) on a SynthScars-layout GT folder + predictions, and prints JSON.

  /work/venv/bin/python scripts/eval_reference.py --gt DATASET --split test --masks PRED_DIR \
      [--gt-masks DIR] [--labels labels.jsonl] [--explanations preds.jsonl] \
      [--detection scores.csv] [--threshold 0.5] [--missing error|empty] \
      [--trufor-band K] [--trufor-inverted]

Conventions (documented in the Rust crate too):
- GT mask: cv2.fillPoly(mask, [np.float32(points).astype(np.int32)], 1) for every polygon of
  every ref, or a `<stem>.png` from --gt-masks (nonzero = artifact).
- Prediction PNG: single channel; 8-bit values only {0,1} or only {0,255} (16-bit: {0,1} or
  {0,65535}) = binary -> cv2.resize INTER_NEAREST; otherwise a score map v/255 (v/65535) ->
  bilinear, half-pixel centres, edge clamp, float64 (the cv2.INTER_LINEAR rule), then
  score > threshold.
"""
import argparse
import json
import os
import re
import sys

import cv2
import numpy as np
from rouge_score import rouge_scorer

CONTENT_TYPES = ["object", "animal", "human", "scene"]
CATEGORIES = ["physics", "structure", "distortion"]


def load_records(root, split):
    for base in (root, os.path.join(root, "SynthScars")):
        for d in ("annotations", "annoations"):
            p = os.path.join(base, split, d, f"{split}.json")
            if os.path.isfile(p):
                with open(p) as f:
                    data = json.load(f)
                records = []
                for item in data:
                    (rid, body), = item.items()
                    records.append((rid, body))
                return records, os.path.join(base, split, "images")
    raise SystemExit(f"no annotations for {split} under {root}")


def stem(name):
    return os.path.splitext(name)[0]


def gt_mask_polygons(body, h, w):
    mask = np.zeros((h, w), dtype=np.uint8)
    for ref in body["refs"]:
        for seg in ref["segmentation"]:
            points = np.array(seg, dtype=np.float32).reshape((-1, 2)).astype(np.int32)
            cv2.fillPoly(mask, [points], 1)
    return mask


def bilinear(src, dh, dw):
    sh, sw = src.shape

    def taps(d, s):
        scale = s / d
        out = []
        for x in range(d):
            f = (x + 0.5) * scale - 0.5
            i = np.floor(f)
            wgt = f - i
            if i < 0:
                i, wgt = 0.0, 0.0
            i = int(i)
            if i + 1 >= s:
                out.append((s - 1, s - 1, 0.0))
            else:
                out.append((i, i + 1, wgt))
        return out

    xs, ys = taps(dw, sw), taps(dh, sh)
    out = np.zeros((dh, dw), dtype=np.float64)
    for r, (y0, y1, wy) in enumerate(ys):
        for c, (x0, x1, wx) in enumerate(xs):
            top = src[y0, x0] * (1.0 - wx) + src[y0, x1] * wx
            bottom = src[y1, x0] * (1.0 - wx) + src[y1, x1] * wx
            out[r, c] = top * (1.0 - wy) + bottom * wy
    return out


def read_prediction(path, h, w, threshold, stats):
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2:
        raise SystemExit(f"{path}: not a single-channel image")
    top = 255 if raw.dtype == np.uint8 else 65535
    values = np.unique(raw)
    binary = set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, top}
    if binary:
        b = (raw != 0).astype(np.uint8)
        if b.shape != (h, w):
            b = cv2.resize(b, (w, h), interpolation=cv2.INTER_NEAREST)
        return "binary", b, b.astype(np.float64)
    scores = raw.astype(np.float64) / top
    if scores.shape != (h, w):
        ours = bilinear(scores, h, w)
        cv = cv2.resize(scores.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        stats["cv2_linear_max_abs_diff"] = max(stats["cv2_linear_max_abs_diff"], float(np.abs(ours - cv).max()))
        stats["cv2_linear_threshold_disagreements"] += int(((ours > threshold) != (cv > threshold)).sum())
        scores = ours
    return "score-map", (scores > threshold).astype(np.uint8), scores


def calculate_miou(pred, label):  # evaluate_ours.py
    ious = []
    for cls in [0, 1]:
        p, l = pred == cls, label == cls
        inter = int(np.sum(p & l))
        union = int(np.sum(p | l))
        ious.append(inter / (union + 1e-6))
    return sum(ious) / len(ious)


def calculate_f1(pred, label):  # evaluate_ours.py
    pred, label = pred.astype(bool), label.astype(bool)
    tp = int(np.sum(pred & label))
    fp = int(np.sum(pred & ~label))
    fn = int(np.sum(~pred & label))
    precision = tp / (tp + fp) if (tp + fp) > 0 else 0
    recall = tp / (tp + fn) if (tp + fn) > 0 else 0
    if tp == 0 and fp == 0 and fn == 0:
        return 1.0
    if precision + recall == 0:
        return 0.0
    return 2 * (precision * recall) / (precision + recall)


def lisa_iou(pred, label):
    inter = int(np.sum((pred == 1) & (label == 1)))
    union = int(np.sum((pred == 1) | (label == 1)))
    return inter / (union + 1e-5) + (1.0 if union == 0 else 0.0), inter, union


def trufor(scores, gt, threshold, band, inverted):
    if gt.sum() == 0:
        return None
    keep = np.ones(gt.shape, dtype=bool)
    if band > 0:
        kernel = np.ones((2 * band + 1, 2 * band + 1), dtype=np.uint8)
        keep = cv2.dilate(gt, kernel) == cv2.erode(gt, kernel)
    s, g = scores[keep], gt[keep].astype(bool)

    def f1(pred):
        tp = int(np.sum(pred & g)); fp = int(np.sum(pred & ~g)); fn = int(np.sum(~pred & g))
        d = 2 * tp + fp + fn
        return 0.0 if d == 0 else 2 * tp / d

    fixed = f1(s > threshold)
    if inverted:
        fixed = max(fixed, f1((1.0 - s) > threshold))
    candidates = [np.zeros_like(g)] + [s >= v for v in np.unique(s)]
    if inverted:
        candidates += [s <= v for v in np.unique(s)]
    best = max(f1(c) for c in candidates)
    return {"f1_fixed": fixed, "f1_best": best}


def summarize(rows):
    if not rows:
        return None
    n = len(rows)
    acc = {k: sum(r["counts"][k] for r in rows) for k in ("tp", "fp", "fn", "tn")}
    bg = acc["tn"] / (acc["tn"] + acc["fp"] + acc["fn"] + 1e-6)
    fg = acc["tp"] / (acc["tp"] + acc["fp"] + acc["fn"] + 1e-6)
    tp, fp, fn = acc["tp"], acc["fp"], acc["fn"]
    p = tp / (tp + fp) if tp + fp > 0 else 0
    r = tp / (tp + fn) if tp + fn > 0 else 0
    f1_acc = 1.0 if tp == fp == fn == 0 else (0.0 if p + r == 0 else 2 * (p * r) / (p + r))
    tf = [x["trufor"] for x in rows if x["trufor"] is not None]
    return {
        "images": n,
        "missing_predictions": sum(1 for x in rows if x["prediction"] is None),
        "miou_per_image": sum(x["miou"] for x in rows) / n,
        "f1_per_image": sum(x["f1"] for x in rows) / n,
        "miou_accumulated": (bg + fg) / 2,
        "f1_accumulated": f1_acc,
        "giou_lisa": sum(x["giou_term"] for x in rows) / n,
        "ciou_lisa": acc["tp"] / (acc["tp"] + acc["fp"] + acc["fn"] + 1e-10),
        "trufor": None if not tf else {
            "forged_images": len(tf),
            "f1_fixed": sum(t["f1_fixed"] for t in tf) / len(tf),
            "f1_best": sum(t["f1_best"] for t in tf) / len(tf),
        },
    }


def read_labels(path):
    labels = {}
    if path:
        with open(path) as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    labels[d["image"]] = d
    return labels


def clean(text):  # evaluate_ours.py output cleaning, applied to GT captions and predictions
    text = re.sub(r"<.*?>", "", text).replace("[SEG]", "")
    return " ".join(text.split())


def toy_embedding(text):
    """Letter histogram: a deterministic stand-in encoder to check the CSS pipeline."""
    v = np.zeros(26)
    for ch in text.lower():
        if "a" <= ch <= "z":
            v[ord(ch) - 97] += 1
    return v


def cosine(a, b):
    na, nb = np.sqrt((a * a).sum()), np.sqrt((b * b).sum())
    return 0.0 if na == 0 or nb == 0 else float((a * b).sum() / (na * nb))


def average_precision(labels, scores):
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    pos = labels.sum()
    if pos == 0 or pos == len(labels):
        return None
    order = np.argsort(-scores, kind="mergesort")
    s, l = scores[order], labels[order]
    ap, prev_r, tp, fp = 0.0, 0.0, 0, 0
    for k in range(len(s)):
        tp += int(l[k] == 1); fp += int(l[k] == 0)
        if k + 1 == len(s) or s[k + 1] != s[k]:
            r = tp / pos
            ap += (r - prev_r) * (tp / (tp + fp))
            prev_r = r
    return float(ap)


def roc_auc(labels, scores):
    # Mann-Whitney U with ties counted 1/2 (equals sklearn's trapezoidal ROC area).
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def detection(path, threshold):
    import csv
    with open(path) as f:
        rows = list(csv.DictReader(f))
    samples = [(r["image"], int(r["label"]), float(r["score"]), r.get("group") or None) for r in rows]

    def summary(group):
        labels = [s[1] for s in group]
        scores = [s[2] for s in group]
        pred = [1 if s[2] > threshold else 0 for s in group]
        correct = [int(p == l) for p, l in zip(pred, labels)]
        recalls = []
        for cls in (1, 0):
            idx = [i for i, l in enumerate(labels) if l == cls]
            if idx:
                recalls.append(sum(correct[i] for i in idx) / len(idx))
        out = {
            "images": len(group), "real": sum(labels), "fake": len(labels) - sum(labels),
            "accuracy": sum(correct) / len(group),
            "balanced_accuracy": sum(recalls) / len(recalls),
            "average_precision": average_precision(labels, scores),
            "roc_auc": roc_auc(labels, scores),
            "average_precision_fake_positive": average_precision([1 - l for l in labels], [-s for s in scores]),
        }
        try:  # optional cross-check, not the oracle
            from sklearn.metrics import average_precision_score, roc_auc_score
            if out["roc_auc"] is not None:
                out["sklearn_roc_auc"] = float(roc_auc_score(labels, scores))
                out["sklearn_average_precision"] = float(average_precision_score(labels, scores))
        except Exception:
            pass
        return out

    groups = {}
    for s in samples:
        if s[3]:
            groups.setdefault(s[3], []).append(s)
    by_group = {g: summary(v) for g, v in sorted(groups.items())}
    return {
        "overall": summary(samples),
        "by_group": by_group,
        "mean_group_accuracy": (sum(v["accuracy"] for v in by_group.values()) / len(by_group)) if by_group else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--masks")
    ap.add_argument("--gt-masks")
    ap.add_argument("--labels")
    ap.add_argument("--explanations")
    ap.add_argument("--detection")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--missing", choices=["error", "empty"], default="error")
    ap.add_argument("--trufor-band", type=int, default=0)
    ap.add_argument("--trufor-inverted", action="store_true")
    args = ap.parse_args()

    records, image_dir = load_records(args.gt, args.split)
    labels = read_labels(args.labels)
    out = {"threshold": args.threshold}

    if args.masks is not None:
        stats = {"cv2_linear_max_abs_diff": 0.0, "cv2_linear_threshold_disagreements": 0}
        rows = []
        for rid, body in records:
            name = body["img_file_name"]
            img = cv2.imread(os.path.join(image_dir, name), cv2.IMREAD_UNCHANGED)
            h, w = img.shape[:2]
            if args.gt_masks:
                gt = (cv2.imread(os.path.join(args.gt_masks, stem(name) + ".png"), cv2.IMREAD_UNCHANGED) != 0).astype(np.uint8)
            else:
                gt = gt_mask_polygons(body, h, w)
            ppath = os.path.join(args.masks, stem(name) + ".png")
            if os.path.isfile(ppath):
                kind, pred, scores = read_prediction(ppath, h, w, args.threshold, stats)
            elif args.missing == "empty":
                kind, pred, scores = None, np.zeros((h, w), np.uint8), np.zeros((h, w))
            else:
                raise SystemExit(f"missing prediction {ppath}")
            giou_term, _, _ = lisa_iou(pred, gt)
            lab = labels.get(name) or labels.get(rid) or {}
            cats = sorted({c for c in (lab.get("categories") or []) if c})
            rows.append({
                "image": name, "record_id": rid, "height": h, "width": w, "prediction": kind,
                "counts": {
                    "tp": int(((pred == 1) & (gt == 1)).sum()), "fp": int(((pred == 1) & (gt == 0)).sum()),
                    "fn": int(((pred == 0) & (gt == 1)).sum()), "tn": int(((pred == 0) & (gt == 0)).sum()),
                },
                "miou": calculate_miou(pred, gt), "f1": calculate_f1(pred, gt), "giou_term": giou_term,
                "trufor": trufor(scores, gt, args.threshold, args.trufor_band, args.trufor_inverted),
                "content_type": lab.get("content_type"), "categories": cats,
            })
        out["localization"] = {
            "overall": summarize(rows),
            "by_content_type": {ct: summarize([r for r in rows if r["content_type"] == ct]) for ct in CONTENT_TYPES},
            "by_category": {c: summarize([r for r in rows if c in r["categories"]]) for c in CATEGORIES},
            "images": rows,
            "resize_check": stats,
        }

    if args.explanations:
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        preds = {}
        with open(args.explanations) as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    preds[d["image"]] = d["explanation"]
        rows = []
        for rid, body in records:
            name = body["img_file_name"]
            text = preds.get(name, preds.get(stem(name), preds.get(rid)))
            ref = clean(body["caption"])
            if text is None:
                if args.missing != "empty":
                    raise SystemExit(f"missing explanation for {name}")
                rows.append({"image": name, "rouge_l": 0.0, "css_toy": 0.0, "missing": True})
                continue
            hyp = clean(text)
            rows.append({
                "image": name, "missing": False,
                "rouge_l": scorer.score(ref, hyp)["rougeL"].fmeasure,
                "css_toy": cosine(toy_embedding(ref), toy_embedding(hyp)),
            })
        n = len(rows)
        out["explanation"] = {
            "rouge_l": sum(r["rouge_l"] for r in rows) / n,
            "css_toy": sum(r["css_toy"] for r in rows) / n,
            "images": rows,
        }

    if args.detection:
        out["detection"] = detection(args.detection, 0.5)

    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
