//! Binary pixel masks.
//!
//! A [`Mask`] is the common currency of the data pipeline: polygon rasterisers
//! ([`crate::raster`]) produce one, COCO run-length encoding ([`crate::rle`]) converts to and
//! from one, and the evaluator compares them. It is a plain row-major `height x width` grid of
//! `0`/`1` bytes — the same layout as the `np.uint8` masks of the LEGION reference
//! (`opendatalab/LEGION`, `eval/utils.py`), so a mask can be compared byte for byte with a
//! NumPy array.
//!
//! ```text
//! cargo test -p legion-data --lib mask
//! ```

use image::GrayImage;

/// Errors from building or combining masks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// `from_raw` was given a buffer whose length is not `height * width`.
    #[error("mask data has {len} bytes, expected height {height} x width {width} = {expected}")]
    DataLength {
        height: usize,
        width: usize,
        expected: usize,
        len: usize,
    },
    /// `from_raw` was given a byte other than 0 or 1.
    #[error(
        "mask data byte {index} (row {row}, column {col}) is {value}; a mask holds only 0 or 1"
    )]
    NotBinary {
        index: usize,
        row: usize,
        col: usize,
        value: u8,
    },
    /// Two masks of different sizes were combined.
    #[error("mask size mismatch: {left_height}x{left_width} vs {right_height}x{right_width}")]
    SizeMismatch {
        left_height: usize,
        left_width: usize,
        right_height: usize,
        right_width: usize,
    },
    /// `height * width` does not fit in `usize`.
    #[error("mask size {height}x{width} overflows the address space")]
    TooLarge { height: usize, width: usize },
}

/// A binary mask: `height` rows of `width` pixels, row-major, each byte 0 or 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mask {
    height: usize,
    width: usize,
    data: Vec<u8>,
}

fn checked_len(height: usize, width: usize) -> Result<usize, MaskError> {
    height
        .checked_mul(width)
        .ok_or(MaskError::TooLarge { height, width })
}

impl Mask {
    /// An all-background (all 0) mask.
    ///
    /// # Panics
    /// If `height * width` overflows `usize` (such a buffer could not be allocated anyway).
    pub fn zeros(height: usize, width: usize) -> Self {
        Self::filled(height, width, 0)
    }

    /// An all-foreground (all 1) mask.
    ///
    /// # Panics
    /// If `height * width` overflows `usize`.
    pub fn full(height: usize, width: usize) -> Self {
        Self::filled(height, width, 1)
    }

    fn filled(height: usize, width: usize, value: u8) -> Self {
        let len = height
            .checked_mul(width)
            .unwrap_or_else(|| panic!("mask size {height}x{width} overflows usize"));
        Self {
            height,
            width,
            data: vec![value; len],
        }
    }

    /// Wraps a row-major buffer of 0/1 bytes, checking its length and values.
    pub fn from_raw(height: usize, width: usize, data: Vec<u8>) -> Result<Self, MaskError> {
        let expected = checked_len(height, width)?;
        if data.len() != expected {
            return Err(MaskError::DataLength {
                height,
                width,
                expected,
                len: data.len(),
            });
        }
        // `any` first: a vectorised scan; the position is only looked up for the error.
        if data.iter().any(|&v| v > 1)
            && let Some((index, &value)) = data.iter().enumerate().find(|&(_, &v)| v > 1)
        {
            return Err(MaskError::NotBinary {
                index,
                row: index / width,
                col: index % width,
                value,
            });
        }
        Ok(Self {
            height,
            width,
            data,
        })
    }

    /// Number of rows.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Number of columns.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The row-major 0/1 bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// Gives back the row-major 0/1 bytes.
    pub fn into_raw(self) -> Vec<u8> {
        self.data
    }

    /// The pixel at `(row, col)`, or `None` outside the mask.
    pub fn get(&self, row: usize, col: usize) -> Option<bool> {
        (row < self.height && col < self.width).then(|| self.data[row * self.width + col] != 0)
    }

    /// Sets the pixel at `(row, col)`.
    ///
    /// # Panics
    /// If `(row, col)` is outside the mask (like slice indexing; use [`Mask::get`] to test).
    pub fn set(&mut self, row: usize, col: usize, value: bool) {
        assert!(
            row < self.height && col < self.width,
            "pixel ({row}, {col}) outside a {}x{} mask",
            self.height,
            self.width
        );
        self.data[row * self.width + col] = u8::from(value);
    }

    /// Sets columns `first..=last` of `row` to 1. Callers clip to the mask first.
    pub(crate) fn fill_span(&mut self, row: usize, first: usize, last: usize) {
        let start = row * self.width;
        self.data[start + first..=start + last].fill(1);
    }

    /// Sets rows `first..end` of column `col` to 1.
    pub(crate) fn fill_column(&mut self, col: usize, first: usize, end: usize) {
        for row in first..end {
            self.data[row * self.width + col] = 1;
        }
    }

    /// Number of foreground pixels.
    pub fn area(&self) -> usize {
        self.data.iter().map(|&v| usize::from(v)).sum()
    }

    /// Pixel-wise OR: every pixel set in `other` becomes set in `self`.
    pub fn union_with(&mut self, other: &Mask) -> Result<(), MaskError> {
        if (self.height, self.width) != (other.height, other.width) {
            return Err(MaskError::SizeMismatch {
                left_height: self.height,
                left_width: self.width,
                right_height: other.height,
                right_width: other.width,
            });
        }
        for (a, &b) in self.data.iter_mut().zip(&other.data) {
            *a |= b;
        }
        Ok(())
    }

    /// A grey image with foreground pixels set to `on` and background to 0
    /// (`on = 255` gives a viewable PNG, `on = 1` the reference's uint8 convention).
    ///
    /// # Panics
    /// If a side exceeds `u32::MAX` (the `image` crate's limit).
    pub fn to_gray_image(&self, on: u8) -> GrayImage {
        let width = u32::try_from(self.width).expect("mask width exceeds u32");
        let height = u32::try_from(self.height).expect("mask height exceeds u32");
        let pixels = self.data.iter().map(|&v| v * on).collect();
        // The buffer has exactly width * height bytes, so this cannot fail.
        GrayImage::from_raw(width, height, pixels).expect("buffer length matches dimensions")
    }
}

impl From<&GrayImage> for Mask {
    /// Any nonzero grey value is foreground.
    fn from(image: &GrayImage) -> Self {
        let (width, height) = image.dimensions();
        Self {
            height: height as usize,
            width: width as usize,
            data: image.as_raw().iter().map(|&v| u8::from(v != 0)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_and_area() {
        let z = Mask::zeros(3, 7);
        assert_eq!((z.height(), z.width(), z.area()), (3, 7, 0));
        let f = Mask::full(3, 7);
        assert_eq!(f.area(), 21);
        assert_eq!(Mask::zeros(0, 5).area(), 0);
    }

    #[test]
    fn get_set_row_major() {
        let mut m = Mask::zeros(2, 3);
        m.set(1, 2, true);
        assert_eq!(m.as_slice(), &[0, 0, 0, 0, 0, 1]);
        assert_eq!(m.get(1, 2), Some(true));
        assert_eq!(m.get(0, 2), Some(false));
        assert_eq!(m.get(2, 0), None);
        assert_eq!(m.get(0, 3), None);
        m.set(1, 2, false);
        assert_eq!(m.area(), 0);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn set_out_of_bounds_panics() {
        Mask::zeros(2, 2).set(2, 0, true);
    }

    #[test]
    fn from_raw_validates() {
        assert!(Mask::from_raw(2, 2, vec![0, 1, 1, 0]).is_ok());
        assert_eq!(
            Mask::from_raw(2, 2, vec![0, 1, 1]),
            Err(MaskError::DataLength {
                height: 2,
                width: 2,
                expected: 4,
                len: 3
            })
        );
        assert_eq!(
            Mask::from_raw(2, 2, vec![0, 1, 1, 255]),
            Err(MaskError::NotBinary {
                index: 3,
                row: 1,
                col: 1,
                value: 255
            })
        );
        assert!(matches!(
            Mask::from_raw(usize::MAX, 2, vec![]),
            Err(MaskError::TooLarge { .. })
        ));
    }

    #[test]
    fn union_is_or_and_checks_size() {
        let mut a = Mask::from_raw(1, 4, vec![1, 1, 0, 0]).unwrap();
        let b = Mask::from_raw(1, 4, vec![0, 1, 1, 0]).unwrap();
        a.union_with(&b).unwrap();
        assert_eq!(a.as_slice(), &[1, 1, 1, 0]);
        let err = a.union_with(&Mask::zeros(4, 1)).unwrap_err();
        assert!(matches!(err, MaskError::SizeMismatch { .. }));
        assert_eq!(
            a.as_slice(),
            &[1, 1, 1, 0],
            "failed union leaves the mask alone"
        );
    }

    #[test]
    fn gray_image_round_trip() {
        let m = Mask::from_raw(2, 3, vec![1, 0, 0, 0, 1, 1]).unwrap();
        let img = m.to_gray_image(255);
        assert_eq!(img.dimensions(), (3, 2));
        assert_eq!(img.get_pixel(0, 0).0, [255]);
        assert_eq!(img.get_pixel(2, 1).0, [255]);
        assert_eq!(img.get_pixel(1, 0).0, [0]);
        assert_eq!(Mask::from(&img), m);
        // Nonzero grey values of any level are foreground.
        let grey = GrayImage::from_raw(2, 1, vec![0, 7]).unwrap();
        assert_eq!(Mask::from(&grey).as_slice(), &[0, 1]);
    }
}
