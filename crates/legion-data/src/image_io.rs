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
use std::io::{BufReader, Cursor};
use std::path::{Path, PathBuf};

use image::{
    DynamicImage, ImageBuffer, ImageDecoder, ImageError, ImageFormat, ImageReader, Rgb, RgbImage,
    metadata::Orientation,
};
use zune_core::bytestream::ZCursor;

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
    #[error("unsupported image format in {path}: {source} (supported: JPEG, PNG, WebP)")]
    UnsupportedFormat {
        /// The image file.
        path: PathBuf,
        /// What the decoder reported (the `image` crate's error, or this module's finding).
        #[source]
        source: Cause,
    },
    /// The file has a known format but its data is truncated or corrupt.
    #[error("truncated or corrupt image data in {path}: {source}")]
    Corrupt {
        /// The image file.
        path: PathBuf,
        /// What the decoder reported (the `image` crate's or zune-jpeg's error, or this
        /// module's finding).
        #[source]
        source: Cause,
    },
    /// Decoding would exceed the decoder's memory limits.
    #[error("image {path} is too large to decode: {source}")]
    TooLarge {
        /// The image file.
        path: PathBuf,
        /// What the decoder reported.
        #[source]
        source: Cause,
    },
}

/// The cause of an [`ImageIoError`]: a decoder's error, or a finding of this module's own
/// checks (a `String` converts with `.into()`).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Decoder errors that need a word of context in the message.
#[derive(Debug, thiserror::Error)]
enum DecoderError {
    /// An I/O error while decoding an opened file: almost always an unexpected EOF.
    #[error("data ends early ({0})")]
    EndsEarly(#[source] std::io::Error),
    /// zune-jpeg's error (its `Display` is its `Debug`, without the format's name).
    #[error("JPEG: {0:?}")]
    Jpeg(#[source] zune_jpeg::errors::DecodeErrors),
}

impl ImageIoError {
    fn from_image(path: &Path, err: ImageError) -> Self {
        let path = path.to_path_buf();
        match err {
            // An I/O error while decoding an opened file is almost always an unexpected EOF.
            ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                ImageIoError::Corrupt {
                    path,
                    source: Box::new(DecoderError::EndsEarly(e)),
                }
            }
            ImageError::IoError(source) => ImageIoError::Io { path, source },
            ImageError::Unsupported(e) => ImageIoError::UnsupportedFormat {
                path,
                source: Box::new(e),
            },
            ImageError::Limits(e) => ImageIoError::TooLarge {
                path,
                source: Box::new(e),
            },
            e @ (ImageError::Decoding(_) | ImageError::Parameter(_) | ImageError::Encoding(_)) => {
                ImageIoError::Corrupt {
                    path,
                    source: Box::new(e),
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
        return Err(empty_file(path));
    }
    let mut reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(io_err)?;
    if reader.format().is_none() {
        reader.set_format(format_from_extension(path)?);
    }
    reader
        .into_decoder()
        .map_err(|e| ImageIoError::from_image(path, e))
}

fn empty_file(path: &Path) -> ImageIoError {
    ImageIoError::Corrupt {
        path: path.to_path_buf(),
        source: "the file is empty".into(),
    }
}

/// The format named by `path`'s extension, for content whose magic bytes match no format.
fn format_from_extension(path: &Path) -> Result<ImageFormat, ImageIoError> {
    ImageFormat::from_path(path).map_err(|_| ImageIoError::UnsupportedFormat {
        path: path.to_path_buf(),
        source: "content matches no known image format".into(),
    })
}

/// EXIF orientation of an opened decoder; unreadable metadata counts as "no transform" (OpenCV
/// also decodes such files, ignoring the bad EXIF block).
fn orientation_of(path: &Path, decoder: &mut impl ImageDecoder) -> Orientation {
    decoder.orientation().unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable EXIF orientation");
        Orientation::NoTransforms
    })
}

/// Largest decoded image accepted, bytes: the `image` crate's default allocation limit, applied
/// to every format (the strict JPEG path bypasses `image`'s reader).
const MAX_DECODED_BYTES: u64 = 512 * 1024 * 1024;

/// Strictly decodes an encoded JPEG, PNG or WebP held in memory; `path` names it in errors.
/// Returns the pixels as stored and the EXIF orientation (not applied).
///
/// Strict means damaged data is an error, never guessed pixels:
/// - **JPEG** is decoded by `zune-jpeg` in strict mode (the `image` crate turns strict mode off
///   and fills the rows after a premature end of the entropy-coded data with grey, where libjpeg
///   warns "Premature end of JPEG file" and Pillow refuses "image file is truncated"), and must
///   end its last scan with an end-of-image marker. Otherwise the decoder, its options and hence
///   the pixels are the ones `image` would produce.
/// - **PNG** chunks are CRC-checked by the `png` crate (a flipped bit anywhere in a chunk is
///   found) and the file must hold its `IEND` chunk (a file cut inside the trailer would
///   otherwise decode).
/// - **WebP** must be as long as its RIFF header announces, then goes through `image-webp`.
///
/// A flipped bit inside JPEG or lossy-WebP entropy-coded data can still decode to plausible
/// pixels: those formats carry no checksum, so no decoder (libjpeg, libwebp, Pillow) can tell.
fn decode_strict(bytes: &[u8], path: &Path) -> Result<(DynamicImage, Orientation), ImageIoError> {
    if bytes.is_empty() {
        return Err(empty_file(path));
    }
    let format = match image::guess_format(bytes) {
        Ok(format) => format,
        Err(_) => format_from_extension(path)?,
    };
    if format == ImageFormat::Jpeg {
        if !has_jpeg_end_after_last_scan(bytes) {
            return Err(ImageIoError::Corrupt {
                path: path.to_path_buf(),
                source: "the JPEG has no end-of-image marker after its last scan (the file is \
                         truncated)"
                    .into(),
            });
        }
        return decode_jpeg_strict(bytes, path);
    }
    if format == ImageFormat::WebP && !riff_is_complete(bytes) {
        return Err(ImageIoError::Corrupt {
            path: path.to_path_buf(),
            source: "the WebP is shorter than its RIFF header says (the file is truncated)".into(),
        });
    }
    if format == ImageFormat::Png && !has_png_trailer(bytes) {
        return Err(ImageIoError::Corrupt {
            path: path.to_path_buf(),
            source: "the PNG has no IEND chunk (the file is truncated)".into(),
        });
    }
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format)
        .into_decoder()
        .map_err(|e| ImageIoError::from_image(path, e))?;
    let orientation = orientation_of(path, &mut decoder);
    let image =
        DynamicImage::from_decoder(decoder).map_err(|e| ImageIoError::from_image(path, e))?;
    Ok((image, orientation))
}

/// Whether a RIFF container (WebP) holds as many bytes as its header announces: `image-webp`
/// decodes a file cut inside its last chunk when the image data happen to suffice.
fn riff_is_complete(bytes: &[u8]) -> bool {
    let Some(size) = bytes.get(4..8) else {
        return false;
    };
    let announced = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as u64 + 8;
    bytes.len() as u64 >= announced
}

/// Whether a PNG stream holds an `IEND` chunk (length 0, type, CRC) near its end. Bytes after
/// `IEND` are tolerated, as libpng and Pillow do, but only a few (appended padding), so that a
/// file cut before its trailer is not saved by an `IEND` string inside compressed data.
fn has_png_trailer(bytes: &[u8]) -> bool {
    const IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];
    const MAX_TRAILING: usize = 64;
    let tail = &bytes[bytes.len().saturating_sub(IEND.len() + MAX_TRAILING)..];
    tail.windows(IEND.len()).any(|w| w == IEND)
}

/// Whether an end-of-image marker (`FF D9`) follows the last start-of-scan marker (`FF DA`).
/// Entropy-coded data cannot hold either pair (a data `FF` is followed by `00` or a restart
/// marker), and an EXIF thumbnail's own end marker comes before the first scan, so a file cut
/// anywhere after its last scan header fails this test even when the decoder has every block
/// it needs (a cut inside the final marker). Data after the end marker is allowed.
fn has_jpeg_end_after_last_scan(bytes: &[u8]) -> bool {
    let Some(last_scan) = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) else {
        return false;
    };
    bytes[last_scan..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// The strict JPEG decode of [`decode_strict`]: `zune-jpeg` with the `image` crate's options
/// (output colour space RGB, RGBA, gray or gray+alpha as stored, anything else converted to RGB)
/// and strict mode on.
fn decode_jpeg_strict(
    bytes: &[u8],
    path: &Path,
) -> Result<(DynamicImage, Orientation), ImageIoError> {
    use zune_core::colorspace::ColorSpace;
    let corrupt = |e: zune_jpeg::errors::DecodeErrors| ImageIoError::Corrupt {
        path: path.to_path_buf(),
        source: Box::new(DecoderError::Jpeg(e)),
    };
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| match e {
        zune_jpeg::errors::DecodeErrors::Unsupported(scheme) => ImageIoError::UnsupportedFormat {
            path: path.to_path_buf(),
            source: format!("JPEG: {scheme:?}").into(),
        },
        e => corrupt(e),
    })?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| corrupt(zune_jpeg::errors::DecodeErrors::ZeroError))?;
    let out_colorspace = match decoder.input_colorspace() {
        Some(cs @ (ColorSpace::RGB | ColorSpace::RGBA | ColorSpace::Luma | ColorSpace::LumaA)) => {
            cs
        }
        _ => ColorSpace::RGB,
    };
    let decoded_bytes = width as u64 * height as u64 * out_colorspace.num_components() as u64;
    if decoded_bytes > MAX_DECODED_BYTES {
        return Err(ImageIoError::TooLarge {
            path: path.to_path_buf(),
            source: format!("{width}x{height} needs {decoded_bytes} bytes decoded").into(),
        });
    }
    let orientation = decoder
        .exif()
        .and_then(|exif| Orientation::from_exif_chunk(exif))
        .unwrap_or(Orientation::NoTransforms);
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(out_colorspace));
    let pixels = decoder.decode().map_err(corrupt)?;
    // JPEG dimensions are 16-bit, so these conversions cannot fail.
    let (w, h) = (width as u32, height as u32);
    let image = match out_colorspace {
        ColorSpace::RGBA => ImageBuffer::from_raw(w, h, pixels).map(DynamicImage::ImageRgba8),
        ColorSpace::Luma => ImageBuffer::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8),
        ColorSpace::LumaA => ImageBuffer::from_raw(w, h, pixels).map(DynamicImage::ImageLumaA8),
        _ => ImageBuffer::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8),
    };
    let image = image.ok_or_else(|| ImageIoError::Corrupt {
        path: path.to_path_buf(),
        source: "JPEG: the decoder returned fewer pixels than the header announces".into(),
    })?;
    Ok((image, orientation))
}

fn read_file(path: &Path) -> Result<Vec<u8>, ImageIoError> {
    std::fs::read(path).map_err(|source| ImageIoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Strictly decodes a JPEG, PNG or WebP file and returns its pixels as stored (no EXIF
/// orientation, no colour conversion): for masks and score maps, whose grey levels matter.
///
/// # Errors
/// [`ImageIoError`] naming `path`: missing/unreadable file, unsupported format, truncated or
/// corrupt data (see [`decode_rgb_bytes`] for what "strict" catches), or an image too large.
/// Never panics on bad input.
pub fn decode_image(path: impl AsRef<Path>) -> Result<DynamicImage, ImageIoError> {
    let path = path.as_ref();
    Ok(decode_strict(&read_file(path)?, path)?.0)
}

/// Decodes a JPEG, PNG or WebP file to 8-bit RGB with EXIF orientation applied, matching
/// `cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)` (see the module docs for alpha, gray and
/// 16-bit handling), strictly (see [`decode_rgb_bytes`]).
///
/// # Errors
/// [`ImageIoError`] naming `path`: missing/unreadable file, unsupported format, truncated or
/// corrupt data, or an image too large for the decoder's limits. Never panics on bad input.
pub fn decode_rgb(path: impl AsRef<Path>) -> Result<RgbImage, ImageIoError> {
    let path = path.as_ref();
    decode_rgb_bytes(&read_file(path)?, path)
}

/// [`decode_rgb`] for an encoded image already in memory (an HTTP body, a generator's answer);
/// `name` stands for the file in errors.
///
/// Decoding is strict: a truncated JPEG (the entropy-coded data ends early), a JPEG with stray
/// markers or bytes, a PNG with a bad chunk CRC or without its `IEND` trailer, a WebP shorter than
/// its RIFF header says, and an empty input are all errors rather than images with invented
/// pixels. A flipped bit inside JPEG or lossy-WebP entropy-coded data can still decode: those
/// formats have no checksum, and no decoder can tell.
///
/// # Errors
/// As [`decode_rgb`].
pub fn decode_rgb_bytes(bytes: &[u8], name: &Path) -> Result<RgbImage, ImageIoError> {
    let (mut image, orientation) = decode_strict(bytes, name)?;
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
