"""legion_rs.evaluate against the reference evaluator (scripts/eval_reference.py, run on the
committed fixture) and against the `legion eval --format json` report of the wheel's CLI."""

import json
import shutil
import subprocess
import sys

import pytest

import legion_rs

from conftest import EVAL_FIXTURE, REFERENCE_SCRIPT, assert_close

DATASET = EVAL_FIXTURE / "dataset"
LABELS = EVAL_FIXTURE / "labels.jsonl"
PRED = EVAL_FIXTURE / "pred"
EXPLANATIONS = EVAL_FIXTURE / "explanations.jsonl"
DETECTION = EVAL_FIXTURE / "detection.csv"
SUMMARY_KEYS = ("miou_per_image", "f1_per_image", "miou_accumulated", "f1_accumulated",
                "giou_lisa", "ciou_lisa")


@pytest.fixture(scope="module")
def reference_report():
    """The reference evaluator on the fixture: polygon GT (cv2.fillPoly), labels, missing
    predictions scored as empty, explanations and detection scores."""
    out = subprocess.run(
        [sys.executable, str(REFERENCE_SCRIPT), "--gt", str(DATASET), "--split", "test",
         "--masks", str(PRED), "--labels", str(LABELS), "--missing", "empty",
         "--explanations", str(EXPLANATIONS), "--detection", str(DETECTION)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def report():
    return legion_rs.evaluate(DATASET, masks_dir=PRED, explanations=EXPLANATIONS, split="test",
                              labels=LABELS, scores=DETECTION, missing="empty")


def check_summary(ours, theirs, what):
    assert ours["images"] == theirs["images"], what
    assert ours["missing_predictions"] == theirs["missing_predictions"], what
    for key in SUMMARY_KEYS:
        assert_close(ours[key], theirs[key], f"{what}.{key}")
    if theirs["trufor"] is None:
        assert ours["trufor"] is None, what
    else:
        assert ours["trufor"]["forged_images"] == theirs["trufor"]["forged_images"], what
        for key in ("f1_fixed", "f1_best"):
            assert_close(ours["trufor"][key], theirs["trufor"][key], f"{what}.trufor.{key}")


def test_localization_matches_the_reference(report, reference_report):
    ours, theirs = report["localization"], reference_report["localization"]
    check_summary(ours["overall"], theirs["overall"], "overall")
    groups = {g["group"].lower(): g["summary"] for g in ours["by_content_type"]}
    for content_type, summary in theirs["by_content_type"].items():
        if summary is None:
            assert content_type not in groups
        else:
            check_summary(groups[content_type], summary, content_type)
    categories = {g["group"].lower(): g["summary"] for g in ours["by_category"]}
    for category, summary in theirs["by_category"].items():
        if summary is not None:
            check_summary(categories[category], summary, category)
    assert len(ours["images"]) == len(theirs["images"]) == 36
    for mine, ref in zip(ours["images"], theirs["images"]):
        assert mine["image"] == ref["image"]
        assert mine["counts"] == ref["counts"], mine["image"]
        assert mine["prediction"] == ref["prediction"], mine["image"]
        for key in ("miou", "f1"):
            assert_close(mine["scores"][key], ref[key], f"{mine['image']}.{key}")
        assert_close(mine["scores"]["giou_term"], ref["giou_term"], f"{mine['image']}.giou_term")


def test_explanations_and_detection_match_the_reference(report, reference_report):
    explanation = report["explanation"]
    assert_close(explanation["overall"]["rouge_l"], reference_report["explanation"]["rouge_l"], "rouge_l")
    for mine, ref in zip(explanation["images"], reference_report["explanation"]["images"]):
        assert mine["image"] == ref["image"] and mine["missing"] == ref["missing"]
        assert_close(mine["rouge_l"], ref["rouge_l"], f"{mine['image']}.rouge_l")
    assert explanation["overall"]["css"] is None and explanation["encoder"] is None
    detection, theirs = report["detection"]["overall"], reference_report["detection"]["overall"]
    for key in ("accuracy", "balanced_accuracy", "average_precision", "roc_auc"):
        assert_close(detection[key], theirs[key], f"detection.{key}")


def test_summary_follows_the_variant(report):
    overall = report["localization"]["overall"]
    assert report["summary"] == {
        "variant": "per-image", "miou": overall["miou_per_image"], "f1": overall["f1_per_image"],
        "rouge_l": report["explanation"]["overall"]["rouge_l"],
    }
    accumulated = legion_rs.evaluate(DATASET, masks_dir=PRED, labels=LABELS, missing="empty",
                                     variant="accumulated")
    assert accumulated["summary"]["miou"] == overall["miou_accumulated"]
    assert accumulated["summary"]["f1"] == overall["f1_accumulated"]
    assert accumulated["summary"]["rouge_l"] is None
    with pytest.raises(ValueError, match="variant"):
        legion_rs.evaluate(DATASET, masks_dir=PRED, variant="macro")


def test_report_equals_the_cli_json(report, tmp_path):
    legion = shutil.which("legion")
    assert legion is not None, "the wheel puts `legion` on PATH"
    out = subprocess.run(
        [legion, "eval", "--gt", str(DATASET), "--split", "test", "--masks", str(PRED),
         "--explanations", str(EXPLANATIONS), "--scores", str(DETECTION), "--labels", str(LABELS),
         "--missing", "empty", "--format", "json"],
        check=True, capture_output=True, text=True,
    )
    cli = json.loads(out.stdout)
    ours = {k: v for k, v in report.items() if k != "summary"}
    assert ours == cli


def test_missing_prediction_is_an_error_naming_the_image():
    with pytest.raises(ValueError, match=r"no prediction for image `img_\d+"):
        legion_rs.evaluate(DATASET, masks_dir=PRED)


def test_bad_inputs_are_python_errors(tmp_path):
    with pytest.raises(ValueError, match="nothing to evaluate"):
        legion_rs.evaluate(DATASET)
    with pytest.raises((OSError, ValueError), match="does-not-exist"):
        legion_rs.evaluate(tmp_path / "does-not-exist", masks_dir=PRED)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "img_00.jpg", "explanation": "ok"}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl.*line 2"):
        legion_rs.evaluate(DATASET, explanations=bad, missing="empty")
    with pytest.raises(ValueError, match="missing"):
        legion_rs.evaluate(DATASET, masks_dir=PRED, missing="skip")
