//! Masks from numpy: 2-D `uint8` or `bool` arrays (nonzero = artifact), any strides. Anything
//! else is a `ValueError` that names the argument and says what it got.

use std::borrow::Cow;

use numpy::{PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A borrowed 2-D mask array; keeps numpy's read borrow for as long as it lives.
pub(crate) enum MaskArray<'py> {
    U8(PyReadonlyArray2<'py, u8>),
    Bool(PyReadonlyArray2<'py, bool>),
}

impl<'py> MaskArray<'py> {
    /// Reads argument `name`: a 2-D numpy array of dtype `uint8` or `bool`.
    ///
    /// # Errors
    /// `ValueError` naming `name`, the expected types and what was given (type, dtype, shape).
    pub(crate) fn extract(value: &Bound<'py, PyAny>, name: &str) -> PyResult<Self> {
        if let Ok(array) = value.cast::<PyArray2<u8>>() {
            return Ok(Self::U8(array.readonly()));
        }
        if let Ok(array) = value.cast::<PyArray2<bool>>() {
            return Ok(Self::Bool(array.readonly()));
        }
        Err(PyValueError::new_err(format!(
            "`{name}` must be a 2-D numpy array of dtype uint8 or bool (nonzero = artifact), got {}",
            describe(value)
        )))
    }

    /// `(height, width)`.
    pub(crate) fn shape(&self) -> (usize, usize) {
        let shape = match self {
            Self::U8(a) => a.shape(),
            Self::Bool(a) => a.shape(),
        };
        (shape[0], shape[1])
    }

    /// The pixels in row-major order, one byte each (nonzero = artifact): borrowed when the
    /// array is C-contiguous, copied otherwise.
    pub(crate) fn bytes(&self) -> Cow<'_, [u8]> {
        // `as_slice` also accepts Fortran-ordered arrays, whose memory is column-major: only a
        // C-contiguous array may be read in place.
        match self {
            Self::U8(a) => match a.as_slice() {
                Ok(slice) if a.is_c_contiguous() => Cow::Borrowed(slice),
                _ => Cow::Owned(a.as_array().iter().copied().collect()),
            },
            Self::Bool(a) => match a.as_slice() {
                // SAFETY: `bool` has the size and alignment of `u8` and every `bool` is a
                // valid `u8` (0 or 1), so the slice may be read as bytes.
                Ok(slice) if a.is_c_contiguous() => Cow::Borrowed(unsafe {
                    std::slice::from_raw_parts(slice.as_ptr().cast::<u8>(), slice.len())
                }),
                _ => Cow::Owned(a.as_array().iter().map(|&v| u8::from(v)).collect()),
            },
        }
    }
}

/// "a 3-D numpy array of dtype float64 and shape (2, 3, 4)" or "a list".
fn describe(value: &Bound<'_, PyAny>) -> String {
    let attribute = |name: &str| {
        value
            .getattr(name)
            .and_then(|a| a.str().map(|s| s.to_string()))
            .ok()
    };
    match (attribute("dtype"), attribute("shape"), attribute("ndim")) {
        (Some(dtype), Some(shape), Some(ndim)) => {
            format!("a {ndim}-D array of dtype {dtype} and shape {shape}")
        }
        _ => {
            let type_name = value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into());
            format!("an object of type {type_name}")
        }
    }
}

/// Checks that the GT and prediction masks have the same shape.
///
/// # Errors
/// `ValueError` naming both shapes (and the image index in a batch).
pub(crate) fn same_shape(
    gt: &MaskArray<'_>,
    prediction: &MaskArray<'_>,
    what: &str,
) -> PyResult<()> {
    let (g, p) = (gt.shape(), prediction.shape());
    if g != p {
        return Err(PyValueError::new_err(format!(
            "{what}: `gt` has shape {g:?} but `pred` has shape {p:?}; resize the prediction to the image size first"
        )));
    }
    Ok(())
}
