"""legion-rs from Python: the LEGION evaluator and SynthScars helpers, computed in Rust.

The numbers are those of ``legion eval`` (and of the reference Python evaluation,
``scripts/eval_reference.py``, to 1e-9): per-image mIoU / F1 as the LEGION tables report them,
the dataset-accumulated variants, ROUGE-L as ``rouge-score``, masks as pycocotools and
``cv2.fillPoly``. Every call that walks pixels or files releases the GIL.

Example::

    import legion_rs
    report = legion_rs.evaluate("data/synthscars-tiny", masks_dir="pred/masks",
                                explanations="pred/explanations.jsonl")
    print(report["summary"])          # {'variant': 'per-image', 'miou': ..., 'f1': ..., ...}

Installing the wheel also puts the ``legion`` command on PATH.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

from . import _native
from ._cli import cli_path
from ._native import (
    LocalizationAccumulator,
    SynthScarsRecords,
    clean_analysis_text,
    image_scores,
    image_scores_batch,
    polygon_mask,
    rle_decode,
    rle_encode,
    rouge_l,
)

__version__ = _native.__version__

__all__ = [
    "LocalizationAccumulator",
    "SynthScarsRecords",
    "clean_analysis_text",
    "cli_path",
    "evaluate",
    "image_scores",
    "image_scores_batch",
    "load_synthscars",
    "polygon_mask",
    "rle_decode",
    "rle_encode",
    "rouge_l",
]

PathLike = Union[str, "os.PathLike[str]"]

_VARIANTS = {
    "per-image": ("miou_per_image", "f1_per_image"),
    "accumulated": ("miou_accumulated", "f1_accumulated"),
}


def evaluate(
    gt_dir: PathLike,
    masks_dir: Optional[PathLike] = None,
    explanations: Optional[PathLike] = None,
    split: str = "test",
    variant: str = "per-image",
    *,
    scores: Optional[PathLike] = None,
    labels: Optional[PathLike] = None,
    no_labels: bool = False,
    method: str = "method",
    threshold: float = 0.5,
    missing: str = "error",
) -> Dict[str, Any]:
    """Evaluates predictions on a SynthScars-layout dataset, like ``legion eval``.

    Args:
        gt_dir: the dataset root (``<gt_dir>/<split>/annotations/<split>.json`` + ``images/``).
        masks_dir: folder of ``<image stem>.png`` predicted masks (binary or 8/16-bit score
            maps, any size).
        explanations: JSONL of ``{"image": ..., "explanation": ...}``.
        split: the split to evaluate.
        variant: which localization numbers go into ``report["summary"]``: ``"per-image"``
            (the LEGION tables' convention) or ``"accumulated"`` (counts summed over the
            dataset). The full report always holds both.
        scores: CSV/JSONL of image-level real/fake scores (detection metrics).
        labels: labels JSONL for per-content-type numbers; default ``<gt_dir>/labels.jsonl``
            when it exists, unless ``no_labels``.
        method: the method name stored in the report.
        threshold: score maps count as artifact where score > threshold.
        missing: ``"error"`` (default) or ``"empty"`` (score images without prediction as
            empty).

    Returns:
        The report of ``legion eval --format json`` as a dict (same keys, same numbers; CSS is
        not computed, as without ``--encoder``), plus ``"summary"``: ``{"variant", "miou",
        "f1", "rouge_l"}`` in [0, 1] (``None`` where not evaluated).

    Raises:
        ValueError: bad arguments or bad input (the message names the file, record and field).
        OSError: an unreadable file or folder.
    """
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be 'per-image' or 'accumulated', got {variant!r}")
    report = _native.evaluate_json(
        _fspath(gt_dir),
        split=split,
        masks_dir=_fspath(masks_dir),
        explanations=_fspath(explanations),
        scores=_fspath(scores),
        labels=_fspath(labels),
        no_labels=no_labels,
        method=method,
        threshold=threshold,
        missing=missing,
    )
    miou_key, f1_key = _VARIANTS[variant]
    overall = (report.get("localization") or {}).get("overall") or {}
    explanation = (report.get("explanation") or {}).get("overall") or {}
    report["summary"] = {
        "variant": variant,
        "miou": overall.get(miou_key),
        "f1": overall.get(f1_key),
        "rouge_l": explanation.get("rouge_l"),
    }
    return report


def load_synthscars(
    root: PathLike, split: str = "train", mask: Optional[str] = "cv2"
) -> SynthScarsRecords:
    """The records of one split of a SynthScars-layout dataset, in annotation order.

    Opening reads and checks the whole annotation file (a bad record raises ``ValueError``
    naming the file, record and field); iterating yields one dict per record::

        {"id", "image", "image_path", "caption",
         "refs": [{"sentence", "explanation", "bbox", "segmentation"}],
         "height", "width", "mask"}

    ``mask`` is a ``(height, width)`` ``uint8`` 0/1 array: ``"cv2"`` (default) rasterises
    every polygon of every ref as LEGION's evaluation ground truth (``cv2.fillPoly`` on int32
    points), ``"pycocotools"`` as its training masks (``frPyObjects`` + ``decode``, OR-ed);
    ``None`` skips the mask (and the image header read, so no ``height``/``width``).
    """
    return _native.load_synthscars(_fspath(root), split=split, mask=mask)


def _fspath(path: Optional[PathLike]) -> Optional[str]:
    return None if path is None else os.fspath(path)
