//! Polygon -> mask in the two conventions the evaluator uses, and COCO RLE.
//!
//! - `pycocotools`: `mask.decode(mask.frPyObjects([poly], h, w))` per polygon, OR-ed (the
//!   training masks of the LEGION loader);
//! - `cv2`: `cv2.fillPoly(mask, [np.float32(poly).reshape(-1, 2).astype(np.int32)], 1)`, one
//!   call per polygon (the LEGION evaluation ground truth).

use legion_data::mask::Mask;
use legion_data::raster::{coco_polygons, cv2_fill_poly};
use legion_data::rle::Rle;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::arrays::MaskArray;
use crate::value_error;

/// A mask as a `(height, width)` `uint8` array of 0/1.
fn mask_to_numpy(py: Python<'_>, mask: Mask) -> PyResult<Bound<'_, PyArray2<u8>>> {
    let (height, width) = (mask.height(), mask.width());
    let array = Array2::from_shape_vec((height, width), mask.into_raw())
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(array.into_pyarray(py))
}

/// Rasterises `polygons` (a list of flat `[x1, y1, x2, y2, ...]` coordinate lists, in pixels)
/// into a `(height, width)` `uint8` 0/1 mask, in the `pycocotools` or `cv2` convention.
#[pyfunction]
#[pyo3(signature = (polygons, height, width, convention = "pycocotools"))]
pub(crate) fn polygon_mask<'py>(
    py: Python<'py>,
    polygons: &Bound<'py, PyAny>,
    height: usize,
    width: usize,
    convention: &str,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let polygons: Vec<Vec<f64>> = polygons.extract().map_err(|_| {
        PyValueError::new_err(
            "`polygons` must be a list of polygons, each a flat list of numbers [x1, y1, x2, y2, ...]",
        )
    })?;
    let rasterise = match convention {
        "pycocotools" => coco_polygons,
        "cv2" => cv2_fill_poly,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown convention `{other}`: use \"pycocotools\" or \"cv2\""
            )));
        }
    };
    let mask = py
        .detach(|| rasterise(&polygons, height, width))
        .map_err(|e| value_error(&e))?;
    mask_to_numpy(py, mask)
}

/// COCO RLE of a 2-D `uint8`/`bool` mask (nonzero = set), as pycocotools'
/// `mask.encode(np.asfortranarray(m))`: `{"size": [h, w], "counts": str}` (pycocotools gives
/// the same counts as `bytes`).
#[pyfunction]
pub(crate) fn rle_encode<'py>(
    py: Python<'py>,
    mask: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let array = MaskArray::extract(mask, "mask")?;
    let (height, width) = array.shape();
    let bytes = array.bytes();
    let bytes: &[u8] = &bytes;
    let counts = py
        .detach(|| {
            let binary = bytes.iter().map(|&v| u8::from(v != 0)).collect();
            let mask = Mask::from_raw(height, width, binary).map_err(|e| e.to_string())?;
            Rle::from_mask(&mask)
                .map(|rle| rle.to_coco_string())
                .map_err(|e| e.to_string())
        })
        .map_err(PyValueError::new_err)?;
    let out = PyDict::new(py);
    out.set_item("size", [height, width])?;
    out.set_item("counts", counts)?;
    Ok(out)
}

/// Decodes a COCO RLE `{"size": [h, w], "counts": ...}` (compressed `str`/`bytes`, or the
/// uncompressed list of run lengths) into a `(h, w)` `uint8` 0/1 mask.
#[pyfunction]
pub(crate) fn rle_decode<'py>(
    py: Python<'py>,
    rle: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let field = |name: &str| {
        rle.get_item(name).map_err(|_| {
            PyValueError::new_err(format!(
                "the RLE must be a dict with `size` and `counts`; `{name}` is missing"
            ))
        })
    };
    let size: Vec<usize> = field("size")?.extract().map_err(|_| {
        PyValueError::new_err("RLE `size` must be [height, width] (two non-negative integers)")
    })?;
    let [height, width] = size[..] else {
        return Err(PyValueError::new_err(format!(
            "RLE `size` must be [height, width], got {} numbers",
            size.len()
        )));
    };
    let counts = field("counts")?;
    let decoded = if counts.is_instance_of::<PyString>() {
        Rle::from_coco_string(height, width, &counts.extract::<String>()?)
    } else if let Ok(bytes) = counts.cast::<PyBytes>() {
        let text = std::str::from_utf8(bytes.as_bytes())
            .map_err(|_| PyValueError::new_err("RLE `counts` bytes are not ASCII"))?;
        Rle::from_coco_string(height, width, text)
    } else {
        let runs: Vec<u32> = counts.extract().map_err(|_| {
            PyValueError::new_err(
                "RLE `counts` must be a str, bytes or a list of non-negative integers",
            )
        })?;
        Rle::from_counts(height, width, runs)
    };
    let rle = decoded.map_err(|e| value_error(&e))?;
    let mask = py.detach(|| rle.to_mask());
    mask_to_numpy(py, mask)
}
