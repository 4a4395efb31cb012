"""The array API (per-image scores, batch, accumulator) against the reference evaluator's
numpy functions (scripts/eval_reference.py: calculate_miou, calculate_f1, lisa_iou,
summarize) on the fixture's GT masks and predictions, plus random and edge-case masks."""

import cv2
import numpy as np
import pytest

import legion_rs

from conftest import EVAL_FIXTURE, assert_close


def fixture_pairs(reference):
    """(name, GT, binarised prediction) of every fixture image with a prediction, as the
    reference evaluator reads them (GT PNG nonzero; prediction resized and thresholded)."""
    stats = {"cv2_linear_max_abs_diff": 0.0, "cv2_linear_threshold_disagreements": 0}
    pairs = []
    for gt_path in sorted((EVAL_FIXTURE / "gt_masks").glob("*.png")):
        gt = (cv2.imread(str(gt_path), cv2.IMREAD_UNCHANGED) != 0).astype(np.uint8)
        pred_path = EVAL_FIXTURE / "pred" / gt_path.name
        if pred_path.is_file():
            _, pred, _ = reference.read_prediction(str(pred_path), *gt.shape, 0.5, stats)
            pairs.append((gt_path.stem, gt, pred))
    assert len(pairs) >= 30
    return pairs


def edge_pairs():
    rng = np.random.default_rng(20250315)
    zeros, ones = np.zeros((7, 9), np.uint8), np.ones((7, 9), np.uint8)
    pairs = [("empty/empty", zeros, zeros), ("empty/full", zeros, ones), ("full/empty", ones, zeros),
             ("full/full", ones, ones), ("1x1", np.ones((1, 1), np.uint8), np.zeros((1, 1), np.uint8))]
    for k, (h, w) in enumerate([(64, 64), (33, 4100), (1, 9000), (517, 311)]):
        gt = (rng.random((h, w)) < 0.1 * (k + 1)).astype(np.uint8)
        pred = (rng.random((h, w)) < 0.3).astype(np.uint8)
        pairs.append((f"random {h}x{w}", gt, pred))
    return pairs


def reference_scores(reference, gt, pred):
    giou_term, _, _ = reference.lisa_iou(pred, gt)
    return reference.calculate_miou(pred, gt), reference.calculate_f1(pred, gt), giou_term


def check_scores(ours, reference, gt, pred, what):
    miou, f1, giou_term = reference_scores(reference, gt, pred)
    assert_close(ours["miou"], miou, f"{what}: miou")
    assert_close(ours["f1"], f1, f"{what}: f1")
    assert_close(ours["giou_term"], giou_term, f"{what}: giou_term")
    assert ours["tp"] == int(((pred == 1) & (gt == 1)).sum()), what
    assert ours["fp"] == int(((pred == 1) & (gt == 0)).sum()), what
    assert ours["fn"] == int(((pred == 0) & (gt == 1)).sum()), what
    assert ours["tn"] == int(((pred == 0) & (gt == 0)).sum()), what


def test_image_scores_match_the_reference(reference):
    for name, gt, pred in fixture_pairs(reference) + edge_pairs():
        check_scores(legion_rs.image_scores(gt, pred), reference, gt, pred, name)


def test_bool_255_and_strided_masks_give_the_same_scores(reference):
    for name, gt, pred in edge_pairs():
        expected = legion_rs.image_scores(gt, pred)
        assert legion_rs.image_scores(gt.astype(bool), pred.astype(bool)) == expected, name
        assert legion_rs.image_scores(gt * 255, pred * 255) == expected, name
        # Transposed (Fortran-ordered) and strided views are read through their strides.
        assert legion_rs.image_scores(np.asfortranarray(gt), pred) == expected, name
        check_scores(legion_rs.image_scores(gt.T, pred.T), reference, gt.T, pred.T, name + " (T)")
        check_scores(legion_rs.image_scores(gt[::2, 1::3], pred[::2, 1::3]), reference,
                     gt[::2, 1::3], pred[::2, 1::3], name + " (strided)")


def test_batch_equals_one_by_one(reference):
    pairs = fixture_pairs(reference) + edge_pairs()
    batch = legion_rs.image_scores_batch([g for _, g, _ in pairs], [p for _, _, p in pairs])
    assert batch == [legion_rs.image_scores(g, p) for _, g, p in pairs]
    assert legion_rs.image_scores_batch([], []) == []


def test_accumulator_matches_the_reference_summary(reference):
    pairs = fixture_pairs(reference) + edge_pairs()
    accumulator = legion_rs.LocalizationAccumulator()
    assert accumulator.summary() is None
    rows = []
    for name, gt, pred in pairs:
        missing = name.startswith("empty/empty")
        scores = accumulator.add(gt, pred, missing=missing)
        check_scores(scores, reference, gt, pred, name)
        miou, f1, giou_term = reference_scores(reference, gt, pred)
        rows.append({"counts": {k: scores[k] for k in ("tp", "fp", "fn", "tn")}, "miou": miou,
                     "f1": f1, "giou_term": giou_term, "trufor": None,
                     "prediction": None if missing else "binary"})
    assert len(accumulator) == len(pairs)
    ours, theirs = accumulator.summary(), reference.summarize(rows)
    assert ours["images"] == theirs["images"] and ours["missing_predictions"] == theirs["missing_predictions"] == 1
    for key in ("miou_per_image", "f1_per_image", "miou_accumulated", "f1_accumulated",
                "giou_lisa", "ciou_lisa"):
        assert_close(ours[key], theirs[key], key)
    assert ours["trufor"] is None


BAD_MASKS = [
    (np.zeros((4, 4), np.float64), "dtype float64"),
    (np.zeros((4, 4), np.int64), "dtype int64"),
    (np.zeros((4, 4, 3), np.uint8), "3-D"),
    (np.zeros(16, np.uint8), "1-D"),
    ([[0, 1], [1, 0]], "type list"),
    (None, "type NoneType"),
]


@pytest.mark.parametrize("bad, said", BAD_MASKS)
def test_wrong_dtype_or_shape_is_a_value_error(bad, said):
    good = np.zeros((4, 4), np.uint8)
    for call in (
        lambda: legion_rs.image_scores(bad, good),
        lambda: legion_rs.image_scores(good, bad),
        lambda: legion_rs.LocalizationAccumulator().add(bad, good),
        lambda: legion_rs.image_scores_batch([good, bad], [good, good]),
        lambda: legion_rs.rle_encode(bad),
    ):
        with pytest.raises(ValueError, match="2-D numpy array of dtype uint8 or bool") as error:
            call()
        assert said in str(error.value)


def test_mismatched_shapes_are_a_value_error():
    a, b = np.zeros((4, 5), np.uint8), np.zeros((5, 4), np.uint8)
    with pytest.raises(ValueError, match=r"shape \(4, 5\).*shape \(5, 4\)"):
        legion_rs.image_scores(a, b)
    with pytest.raises(ValueError, match="image 1"):
        legion_rs.image_scores_batch([a, a], [a, b])
    with pytest.raises(ValueError, match="2 GT masks but 1 predictions"):
        legion_rs.image_scores_batch([a, a], [a])
    accumulator = legion_rs.LocalizationAccumulator()
    with pytest.raises(ValueError, match="shape"):
        accumulator.add(a, b)
    assert len(accumulator) == 0
