"""Type stubs of the Rust extension module (crates/legion-py)."""

from os import PathLike
from typing import Any, Dict, Iterator, List, Optional, Sequence, TypedDict, Union

import numpy as np
import numpy.typing as npt

__version__: str

MaskLike = Union[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]

class ImageScores(TypedDict):
    tp: int
    fp: int
    fn: int
    tn: int
    miou: float
    f1: float
    giou_term: float

class RougeScore(TypedDict):
    precision: float
    recall: float
    fmeasure: float

class Rle(TypedDict):
    size: List[int]
    counts: str

def evaluate_json(
    gt_dir: Union[str, PathLike[str]],
    split: str = "test",
    masks_dir: Optional[Union[str, PathLike[str]]] = None,
    explanations: Optional[Union[str, PathLike[str]]] = None,
    scores: Optional[Union[str, PathLike[str]]] = None,
    labels: Optional[Union[str, PathLike[str]]] = None,
    no_labels: bool = False,
    method: str = "method",
    threshold: float = 0.5,
    missing: str = "error",
) -> Dict[str, Any]:
    """The ``legion eval --format json`` report as a dict (see ``legion_rs.evaluate``)."""

def image_scores(gt: MaskLike, pred: MaskLike) -> ImageScores:
    """Confusion counts of artifact pixels (nonzero = artifact; equal shapes required) plus the
    LEGION per-image mIoU, artifact F1 and LISA's per-image IoU."""

def image_scores_batch(gts: Sequence[MaskLike], preds: Sequence[MaskLike]) -> List[ImageScores]:
    """``image_scores`` of many images, in parallel over the cores."""

def rouge_l(target: str, prediction: str) -> RougeScore:
    """ROUGE-L as ``RougeScorer(['rougeL'], use_stemmer=True).score(target, prediction)``."""

def clean_analysis_text(text: str) -> str:
    """The evaluator's text cleaning: ``<...>`` tags and ``[SEG]`` removed, spaces collapsed."""

class LocalizationAccumulator:
    """Accumulates images and summarises them like ``legion eval``."""

    def __init__(self) -> None: ...
    def add(self, gt: MaskLike, pred: MaskLike, missing: bool = False) -> ImageScores:
        """Adds one image; returns its scores."""
    def summary(self) -> Optional[Dict[str, Any]]:
        """Per-image means and accumulated variants; ``None`` before any image."""
    def __len__(self) -> int: ...

def polygon_mask(
    polygons: Sequence[Sequence[float]], height: int, width: int, convention: str = "pycocotools"
) -> npt.NDArray[np.uint8]:
    """Rasterises flat ``[x1, y1, ...]`` polygons (``"pycocotools"`` or ``"cv2"``) to 0/1."""

def rle_encode(mask: MaskLike) -> Rle:
    """COCO RLE of a 2-D mask, as ``pycocotools.mask.encode`` (counts as ``str``)."""

def rle_decode(rle: Dict[str, Any]) -> npt.NDArray[np.uint8]:
    """Decodes ``{"size": [h, w], "counts": str | bytes | list[int]}`` to a 0/1 mask."""

class SynthScarsRecords:
    """The records of one split; iterate for dicts."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Dict[str, Any]]: ...
    def __next__(self) -> Dict[str, Any]: ...

def load_synthscars(
    root: Union[str, PathLike[str]], split: str = "train", mask: Optional[str] = "cv2"
) -> SynthScarsRecords:
    """Opens one split of a SynthScars-layout dataset (see ``legion_rs.load_synthscars``)."""
