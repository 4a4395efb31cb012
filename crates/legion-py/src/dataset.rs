//! SynthScars records for Python: `load_synthscars(root, split)` opens a split (annotation
//! errors are raised at once, naming the file, record and field) and yields one dict per
//! record, rasterising its mask only when the record is reached.

use std::path::PathBuf;

use legion_data::Record;
use legion_data::raster::coco_polygons;
use legion_eval::EvalError;
use legion_eval::ground_truth::GroundTruth;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::eval_error;

/// How a record's artifact mask is rasterised.
#[derive(Debug, Clone, Copy)]
enum MaskConvention {
    /// The LEGION evaluation GT: `cv2.fillPoly` of every polygon of every ref.
    Cv2,
    /// The LEGION training masks: pycocotools, every polygon of every ref OR-ed.
    Pycocotools,
}

/// The records of one split, in annotation order; iterate to get dicts.
#[pyclass(module = "legion_rs._native")]
pub(crate) struct SynthScarsRecords {
    gt: GroundTruth,
    mask: Option<MaskConvention>,
    next: usize,
}

/// Opens split `split` of the SynthScars-layout dataset at `root`.
#[pyfunction]
#[pyo3(signature = (root, split = "train", mask = Some("cv2")))]
pub(crate) fn load_synthscars(
    py: Python<'_>,
    root: PathBuf,
    split: &str,
    mask: Option<&str>,
) -> PyResult<SynthScarsRecords> {
    let mask = match mask {
        None => None,
        Some("cv2") => Some(MaskConvention::Cv2),
        Some("pycocotools") => Some(MaskConvention::Pycocotools),
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "unknown mask convention `{other}`: use \"cv2\" (evaluation GT), \"pycocotools\" (training masks) or None"
            )));
        }
    };
    let gt = py
        .detach(|| GroundTruth::open(&root, split))
        .map_err(eval_error)?;
    Ok(SynthScarsRecords { gt, mask, next: 0 })
}

impl SynthScarsRecords {
    /// The mask of `record` in the chosen convention at its image size.
    fn record_mask(
        &self,
        record: &Record,
        convention: MaskConvention,
    ) -> Result<(usize, usize, Vec<u8>), EvalError> {
        let (height, width) = self.gt.image_size(record)?;
        let mask = match convention {
            MaskConvention::Cv2 => self.gt.mask(record, height, width)?,
            MaskConvention::Pycocotools => {
                let polygons: Vec<Vec<f64>> = record
                    .refs
                    .iter()
                    .flat_map(|r| r.segmentation.iter().cloned())
                    .collect();
                coco_polygons(&polygons, height, width).map_err(|source| EvalError::Raster {
                    annotations: self.gt.layout.annotations.clone(),
                    record: record.id.clone(),
                    source,
                })?
            }
        };
        Ok((height, width, mask.into_raw()))
    }
}

#[pymethods]
impl SynthScarsRecords {
    fn __len__(&self) -> usize {
        self.gt.records.len()
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// `{"id", "image", "image_path", "caption", "refs": [{"sentence", "explanation", "bbox",
    /// "segmentation"}], "height", "width", "mask"}`; `mask` is a `(height, width)` `uint8` 0/1
    /// array (absent, and the image header not read, with `mask=None`).
    fn __next__<'py>(
        mut slf: PyRefMut<'py, Self>,
        py: Python<'py>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(record) = slf.gt.records.get(slf.next).cloned() else {
            return Ok(None);
        };
        slf.next += 1;
        let out = PyDict::new(py);
        out.set_item("id", &record.id)?;
        out.set_item("image", &record.img_file_name)?;
        out.set_item(
            "image_path",
            slf.gt.image_path(&record).to_string_lossy().into_owned(),
        )?;
        out.set_item("caption", &record.caption)?;
        let refs = PyList::empty(py);
        for r in &record.refs {
            let item = PyDict::new(py);
            item.set_item("sentence", &r.sentence)?;
            item.set_item("explanation", &r.explanation)?;
            item.set_item("bbox", r.bbox.map(|b| b.to_vec()))?;
            item.set_item("segmentation", &r.segmentation)?;
            refs.append(item)?;
        }
        out.set_item("refs", refs)?;
        if let Some(convention) = slf.mask {
            let this = &*slf;
            let (height, width, data) = py
                .detach(|| this.record_mask(&record, convention))
                .map_err(eval_error)?;
            let array = numpy::ndarray::Array2::from_shape_vec((height, width), data)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            out.set_item("height", height)?;
            out.set_item("width", width)?;
            out.set_item("mask", numpy::IntoPyArray::into_pyarray(array, py))?;
        }
        Ok(Some(out))
    }
}
