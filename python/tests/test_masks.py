"""Polygon -> mask in both conventions against pycocotools and cv2.fillPoly, and COCO RLE
against pycocotools, on the committed raster fixture (350 cases: random, self-intersecting,
out-of-image and degenerate polygons)."""

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

import legion_rs


def polygons_of(case):
    return [[float(v) for v in poly] for poly in case["polygons"]]


def pycocotools_union(polygons, h, w):
    out = np.zeros((h, w), np.uint8)
    for poly in polygons:
        out |= coco_mask.decode(coco_mask.frPyObjects([np.array(poly)], h, w))[:, :, 0]
    return out


def cv2_gt(polygons, h, w):
    """LEGION's evaluation GT: one cv2.fillPoly call per polygon on float32 -> int32 points."""
    out = np.zeros((h, w), np.uint8)
    for poly in polygons:
        points = np.array(poly, dtype=np.float32).reshape((-1, 2)).astype(np.int32)
        cv2.fillPoly(out, [points], 1)
    return out


def test_polygon_masks_match_pycocotools_and_cv2(raster_cases):
    compared = {"pycocotools": 0, "cv2": 0, "refused": 0}
    for case in raster_cases["cases"]:
        h, w, polygons = case["height"], case["width"], polygons_of(case)
        if all(c is not None for c in case["coco"]):
            ours = legion_rs.polygon_mask(polygons, h, w)
            assert ours.dtype == np.uint8 and ours.shape == (h, w)
            np.testing.assert_array_equal(ours, pycocotools_union(polygons, h, w), err_msg=case["name"])
            compared["pycocotools"] += 1
        else:
            # pycocotools raises on these (4 numbers or fewer); so do we, with a message.
            with pytest.raises(ValueError, match="polygon"):
                legion_rs.polygon_mask(polygons, h, w, convention="pycocotools")
            compared["refused"] += 1
        if case["cv2"] is not None:
            ours = legion_rs.polygon_mask(polygons, h, w, convention="cv2")
            np.testing.assert_array_equal(ours, cv2_gt(polygons, h, w), err_msg=case["name"])
            compared["cv2"] += 1
    assert compared["pycocotools"] >= 300 and compared["cv2"] >= 300 and compared["refused"] >= 7


def test_bad_polygons_are_value_errors():
    with pytest.raises(ValueError, match="odd"):
        legion_rs.polygon_mask([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]], 10, 10)
    with pytest.raises(ValueError, match="polygon 1"):
        legion_rs.polygon_mask([[1, 1, 5, 1, 5, 5], [float("nan"), 1, 5, 1, 5, 5]], 10, 10)
    with pytest.raises(ValueError, match="flat list of numbers"):
        legion_rs.polygon_mask([1, 2, 3, 4, 5, 6], 10, 10)
    with pytest.raises(ValueError, match="image size"):
        legion_rs.polygon_mask([[1, 1, 5, 1, 5, 5]], 0, 10)
    with pytest.raises(ValueError, match="convention"):
        legion_rs.polygon_mask([[1, 1, 5, 1, 5, 5]], 10, 10, convention="skimage")


def rle_masks(raster_cases):
    rng = np.random.default_rng(7)
    masks = [np.zeros((5, 3), np.uint8), np.ones((4, 6), np.uint8), np.zeros((1, 1), np.uint8)]
    masks += [(rng.random((h, w)) < p).astype(np.uint8)
              for h, w, p in [(31, 17, 0.5), (200, 300, 0.02), (64, 64, 0.97)]]
    masks += [pycocotools_union(polygons_of(c), c["height"], c["width"])
              for c in raster_cases["cases"][:60] if all(x is not None for x in c["coco"])]
    return masks


def test_rle_encode_and_decode_match_pycocotools(raster_cases):
    for k, mask in enumerate(rle_masks(raster_cases)):
        theirs = coco_mask.encode(np.asfortranarray(mask))
        ours = legion_rs.rle_encode(mask)
        assert ours == {"size": list(theirs["size"]), "counts": theirs["counts"].decode("ascii")}, k
        assert legion_rs.rle_encode(mask.astype(bool)) == ours
        np.testing.assert_array_equal(legion_rs.rle_decode(ours), coco_mask.decode(theirs))
        np.testing.assert_array_equal(legion_rs.rle_decode(theirs), mask)  # bytes counts
    for case in raster_cases["rle_cases"]:
        h, w = case["height"], case["width"]
        from_string = legion_rs.rle_decode({"size": [h, w], "counts": case["string"]})
        from_runs = legion_rs.rle_decode({"size": [h, w], "counts": case["counts"]})
        np.testing.assert_array_equal(from_string, from_runs)
        np.testing.assert_array_equal(
            from_string, coco_mask.decode({"size": [h, w], "counts": case["string"].encode()}))


def test_bad_rles_are_value_errors():
    with pytest.raises(ValueError, match="sum to 5"):
        legion_rs.rle_decode({"size": [2, 3], "counts": [1, 4]})
    with pytest.raises(ValueError, match="outside the COCO alphabet"):
        legion_rs.rle_decode({"size": [2, 3], "counts": "~~"})
    with pytest.raises(ValueError, match="`counts` is missing"):
        legion_rs.rle_decode({"size": [2, 3]})
    with pytest.raises(ValueError, match="size"):
        legion_rs.rle_decode({"size": "2x3", "counts": "6"})
