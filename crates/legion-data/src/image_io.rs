//! Image decoding as the LEGION reference loader sees images.
//!
//! The reference (`opendatalab/LEGION`, `dataset/gcg_datasets/GranDf_gcg_ds.py`) reads every image
//! with `cv2.imread(path)` (flag `IMREAD_COLOR`) followed by `cv2.cvtColor(.., COLOR_BGR2RGB)`.
//! [`decode_rgb`] returns the same 8-bit RGB pixels for JPEG, PNG and WebP:
//!
//! - **EXIF orientation is applied** (OpenCV does this for JPEG, PNG `eXIf` and WebP unless
//!   `IMREAD_IGNORE_ORIENTATION` is given), so a photo tagged "rotate 90" comes out upright with
//!   width and height swapped.
//! - **Alpha is dropped, not blended**: RGBA / gray+alpha / palette-with-transparency images keep
//!   their colour channels unchanged, whatever the alpha value (what `IMREAD_COLOR` does).
//! - **Gray is replicated** to three equal channels.
//! - **16-bit samples are truncated to their high byte** (`v >> 8`), as OpenCV's `IMREAD_COLOR`
//!   does; the `image` crate's own conversion would round (`v / 257`) and differ by one.
//!
//! Lossless formats (PNG, lossless WebP) match OpenCV exactly. JPEG (and lossy WebP) pixels depend
//! on the decoder's IDCT and chroma upsampling: this crate uses `zune-jpeg` (through `image`),
//! OpenCV uses libjpeg-turbo; `tests/preprocess_parity.rs` measures the difference on a fixture.
//!
//! Reference quirk: the loader takes mask sizes from PIL's `Image.open(path).size`, which ignores
//! EXIF orientation, while `cv2.imread` applies it, so for rotated-EXIF images the reference's masks
//! and image disagree in shape. legion-rs applies the orientation consistently ([`dimensions`] also
//! reports the oriented size).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use image::{
    DynamicImage, ImageDecoder, ImageError, ImageReader, Rgb, RgbImage, metadata::Orientation,
};

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageIoError {
    /// The file could not be opened or read.
    #[error("cannot read image file {path}: {source}")]
    Io {
        /// The image file.
        path: PathBuf,
        /// The underlying I/O error (e.g. not found, permission denied).
        #[source]
        source: std::io::Error,
    },
    /// The content is not a JPEG, PNG or WebP image (or uses a feature the decoder lacks).
    #[error("unsupported image format in {path}: {detail} (supported: JPEG, PNG, WebP)")]
    UnsupportedFormat {
        /// The image file.
        path: PathBuf,
        /// What the decoder reported.
        detail: String,
    },
    /// The file has a known format but its data is truncated or corrupt.
    #[error("truncated or corrupt image data in {path}: {detail}")]
    Corrupt {
        /// The image file.
        path: PathBuf,
        /// What the decoder reported.
        detail: String,
    },
    /// Decoding would exceed the decoder's memory limits.
    #[error("image {path} is too large to decode: {detail}")]
    TooLarge {
        /// The image file.
        path: PathBuf,
        /// What the decoder reported.
        detail: String,
    },
}

impl ImageIoError {
    fn from_image(path: &Path, err: ImageError) -> Self {
        let path = path.to_path_buf();
        match err {
            // An I/O error while decoding an opened file is almost always an unexpected EOF.
            ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                ImageIoError::Corrupt {
                    path,
                    detail: format!("data ends early ({e})"),
                }
            }
            ImageError::IoError(source) => ImageIoError::Io { path, source },
            ImageError::Unsupported(e) => ImageIoError::UnsupportedFormat {
                path,
                detail: e.to_string(),
            },
            ImageError::Limits(e) => ImageIoError::TooLarge {
                path,
                detail: e.to_string(),
            },
            e @ (ImageError::Decoding(_) | ImageError::Parameter(_) | ImageError::Encoding(_)) => {
                ImageIoError::Corrupt {
                    path,
                    detail: e.to_string(),
                }
            }
        }
    }
}

/// Opens `path`, guesses the format from the content (falling back to the extension) and returns
/// a decoder that has parsed the header.
fn open_decoder(path: &Path) -> Result<impl ImageDecoder, ImageIoError> {
    let io_err = |source| ImageIoError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    if file.metadata().map_err(io_err)?.len() == 0 {
        return Err(ImageIoError::Corrupt {
            path: path.to_path_buf(),
            detail: "the file is empty".into(),
        });
    }
    let reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(io_err)?;
    let reader = if reader.format().is_none() {
        // No magic bytes matched: try the extension, and say so if that is unknown too.
        match image::ImageFormat::from_path(path) {
            Ok(format) => {
                let mut reader = reader;
                reader.set_format(format);
                reader
            }
            Err(_) => {
                return Err(ImageIoError::UnsupportedFormat {
                    path: path.to_path_buf(),
                    detail: "content matches no known image format".into(),
                });
            }
        }
    } else {
        reader
    };
    reader
        .into_decoder()
        .map_err(|e| ImageIoError::from_image(path, e))
}

/// EXIF orientation of an opened decoder; unreadable metadata counts as "no transform" (OpenCV
/// also decodes such files, ignoring the bad EXIF block).
fn orientation_of(path: &Path, decoder: &mut impl ImageDecoder) -> Orientation {
    decoder.orientation().unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable EXIF orientation");
        Orientation::NoTransforms
    })
}

/// Decodes a JPEG, PNG or WebP file to 8-bit RGB with EXIF orientation applied, matching
/// `cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)` (see the module docs for alpha, gray and
/// 16-bit handling).
///
/// # Errors
/// [`ImageIoError`] naming `path`: missing/unreadable file, unsupported format, truncated or
/// corrupt data, or an image too large for the decoder's limits. Never panics on bad input.
pub fn decode_rgb(path: impl AsRef<Path>) -> Result<RgbImage, ImageIoError> {
    let path = path.as_ref();
    let mut decoder = open_decoder(path)?;
    let orientation = orientation_of(path, &mut decoder);
    let mut image =
        DynamicImage::from_decoder(decoder).map_err(|e| ImageIoError::from_image(path, e))?;
    image.apply_orientation(orientation);
    Ok(to_rgb8_like_opencv(image))
}

/// `(width, height)` of the image as [`decode_rgb`] would return it (EXIF orientation applied),
/// reading only the header.
///
/// # Errors
/// As [`decode_rgb`], for problems visible in the header.
pub fn dimensions(path: impl AsRef<Path>) -> Result<(u32, u32), ImageIoError> {
    let path = path.as_ref();
    let mut decoder = open_decoder(path)?;
    let (w, h) = decoder.dimensions();
    Ok(match orientation_of(path, &mut decoder) {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (h, w),
        Orientation::NoTransforms
        | Orientation::Rotate180
        | Orientation::FlipHorizontal
        | Orientation::FlipVertical => (w, h),
    })
}

/// Converts any decoded image to RGB8 the way OpenCV's `IMREAD_COLOR` does: drop alpha, replicate
/// gray, keep the high byte of 16-bit samples.
fn to_rgb8_like_opencv(image: DynamicImage) -> RgbImage {
    let hi = |v: u16| (v >> 8) as u8;
    match image {
        DynamicImage::ImageRgb8(img) => img,
        DynamicImage::ImageLuma16(img) => RgbImage::from_fn(img.width(), img.height(), |x, y| {
            let v = hi(img.get_pixel(x, y)[0]);
            Rgb([v, v, v])
        }),
        DynamicImage::ImageLumaA16(img) => RgbImage::from_fn(img.width(), img.height(), |x, y| {
            let v = hi(img.get_pixel(x, y)[0]);
            Rgb([v, v, v])
        }),
        DynamicImage::ImageRgb16(img) => RgbImage::from_fn(img.width(), img.height(), |x, y| {
            let p = img.get_pixel(x, y);
            Rgb([hi(p[0]), hi(p[1]), hi(p[2])])
        }),
        DynamicImage::ImageRgba16(img) => RgbImage::from_fn(img.width(), img.height(), |x, y| {
            let p = img.get_pixel(x, y);
            Rgb([hi(p[0]), hi(p[1]), hi(p[2])])
        }),
        // 8-bit gray / gray+alpha / RGBA: `image` replicates gray and drops alpha without
        // blending, which is OpenCV's behaviour. (Float images cannot come from JPEG/PNG/WebP.)
        other => other.to_rgb8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_keeps_high_byte() {
        let img = image::ImageBuffer::<image::Rgba<u16>, _>::from_raw(
            2,
            1,
            vec![0x12ff, 0x00ff, 0xffff, 7, 0x8080, 0x7f80, 0x0100, 0],
        )
        .unwrap();
        let rgb = to_rgb8_like_opencv(DynamicImage::ImageRgba16(img));
        assert_eq!(rgb.as_raw(), &[0x12, 0x00, 0xff, 0x80, 0x7f, 0x01]);
    }

    #[test]
    fn alpha_is_dropped_not_blended() {
        let img = image::RgbaImage::from_raw(1, 1, vec![10, 20, 30, 0]).unwrap();
        let rgb = to_rgb8_like_opencv(DynamicImage::ImageRgba8(img));
        assert_eq!(rgb.as_raw(), &[10, 20, 30]);
    }
}
