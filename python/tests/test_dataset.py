"""load_synthscars against the annotation JSON and the reference rasterisers."""

import json

import cv2
import numpy as np
import pytest

import legion_rs

from conftest import EVAL_FIXTURE
from test_masks import pycocotools_union

DATASET = EVAL_FIXTURE / "dataset"


def test_records_match_the_annotations_and_reference_masks(reference):
    with open(DATASET / "test" / "annotations" / "test.json") as f:
        expected = [next(iter(item.items())) for item in json.load(f)]
    records = legion_rs.load_synthscars(DATASET, "test")
    assert len(records) == len(expected) == 36
    seen = 0
    for record, (record_id, body) in zip(records, expected):
        assert record["id"] == record_id
        assert record["image"] == body["img_file_name"]
        assert record["image_path"] == str(DATASET / "test" / "images" / body["img_file_name"])
        assert record["caption"] == body["caption"]  # as stored (the evaluator cleans it itself)
        # serde_json without its `float_roundtrip` feature may parse a coordinate 1 ulp off
        # Python's float() (e.g. 9.441641241917699 -> 9.4416412419177); hence the 1e-12.
        for ours, theirs in zip(record["refs"], body["refs"]):
            assert [len(p) for p in ours["segmentation"]] == [len(p) for p in theirs["segmentation"]]
            for a, b in zip(ours["segmentation"], theirs["segmentation"]):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
            assert ours["sentence"] == theirs["sentence"] and ours["explanation"] == theirs["explanation"]
        image = cv2.imread(record["image_path"], cv2.IMREAD_UNCHANGED)
        assert (record["height"], record["width"]) == image.shape[:2]
        want = reference.gt_mask_polygons(body, *image.shape[:2])
        assert record["mask"].dtype == np.uint8
        np.testing.assert_array_equal(record["mask"], want, err_msg=record_id)
        seen += 1
    assert seen == 36


def test_training_convention_and_no_mask():
    cv2_records = list(legion_rs.load_synthscars(DATASET, "test"))
    coco_records = list(legion_rs.load_synthscars(DATASET, "test", mask="pycocotools"))
    for cv2_record, record in zip(cv2_records, coco_records):
        polygons = [p for r in record["refs"] for p in r["segmentation"]]
        want = pycocotools_union(polygons, record["height"], record["width"])
        np.testing.assert_array_equal(record["mask"], want, err_msg=record["id"])
    bare = next(iter(legion_rs.load_synthscars(DATASET, "test", mask=None)))
    assert "mask" not in bare and "height" not in bare


def test_bad_datasets_are_errors_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="mask convention"):
        legion_rs.load_synthscars(DATASET, "test", mask="pil")
    with pytest.raises((OSError, ValueError), match="nowhere"):
        legion_rs.load_synthscars(tmp_path / "nowhere", "test")
    annotations = tmp_path / "ds" / "test" / "annotations"
    annotations.mkdir(parents=True)
    (annotations / "test.json").write_text(json.dumps([{"r1": {
        "caption": "x", "img_file_name": "a.png",
        "refs": [{"sentence": "x", "explanation": "", "bbox": None, "segmentation": [[1, 2, 3]]}]}}]))
    (tmp_path / "ds" / "test" / "images").mkdir()
    with pytest.raises(ValueError, match=r"test\.json.*r1"):
        list(legion_rs.load_synthscars(tmp_path / "ds", "test"))
