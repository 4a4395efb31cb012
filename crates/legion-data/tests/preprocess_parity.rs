//! Parity of image decoding, Pillow-exact resizing and the CLIP/SAM preprocessing with the LEGION
//! reference (cv2.imread, transformers `CLIPImageProcessorPil`, segment-anything
//! `ResizeLongestSide` + the loader's normalisation and padding).
//!
//! Fixtures: `tests/fixtures/preprocess/`, written by `scripts/fixtures/preprocess.py`
//! (`/work/venv/bin/python scripts/fixtures/preprocess.py`); `manifest.json` records the library
//! versions and the sampling rule reproduced by [`sample_positions`].

use std::path::{Path, PathBuf};

use image::RgbImage;
use legion_data::image_io::{ImageIoError, decode_rgb, dimensions};
use legion_data::preprocess::{
    ClipPreprocessConfig, SamPreprocessConfig, clip_preprocess, preprocess_shape, sam_preprocess,
};
use legion_data::resample::{Filter, resize_rgb8};
use serde::Deserialize;

const FLOAT_TOL: f32 = 1e-5;
const SUM_REL_TOL: f64 = 1e-6;

#[derive(Deserialize)]
struct Manifest {
    sampling: Sampling,
    sam_canvas: u32,
    images: Vec<ImageEntry>,
    decode_files: Vec<String>,
    pil_sizes_ignore_exif: std::collections::HashMap<String, [u32; 2]>,
    jpeg_end_to_end: JpegEntry,
}

#[derive(Deserialize)]
struct JpegEntry {
    file: String,
    width: u32,
    height: u32,
    clip336: PathEntry,
    sam1024: PathEntry,
    sam512: PathEntry,
}

#[derive(Deserialize)]
struct Sampling {
    n_samples: usize,
    margin: u32,
}

#[derive(Deserialize)]
struct ImageEntry {
    name: String,
    width: u32,
    height: u32,
    clip336: PathEntry,
    sam1024: PathEntry,
    sam512: PathEntry,
}

#[derive(Deserialize)]
struct PathEntry {
    resized_hw: [u32; 2],
    #[serde(default)]
    resized_png: Option<String>,
    sum: f64,
    seed: u32,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess")
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(fixture_dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `samples.npy`: f32 `[n_images, 3, n_samples]` (paths: clip336, sam1024, sam512).
fn reference_samples(m: &Manifest) -> Vec<f32> {
    let file = std::fs::File::open(fixture_dir().join("samples.npy")).unwrap();
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).unwrap();
    assert_eq!(
        npy.shape(),
        &[m.images.len() as u64, 3, m.sampling.n_samples as u64]
    );
    npy.into_vec::<f32>().unwrap()
}

fn xorshift32(mut s: u32) -> u32 {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    s
}

/// The script's `sample_positions`: `(c, y, x)` with `c = k % 3`, `y`, `x` from xorshift32.
fn sample_positions(ylim: u32, xlim: u32, n: usize, seed: u32) -> Vec<(usize, usize, usize)> {
    let mut state = seed;
    (0..n)
        .map(|k| {
            state = xorshift32(state);
            let y = state % ylim;
            state = xorshift32(state);
            let x = state % xlim;
            (k % 3, y as usize, x as usize)
        })
        .collect()
}

/// Number of differing bytes and the largest absolute difference.
fn compare_u8(ours: &RgbImage, reference: &RgbImage) -> (usize, u8) {
    assert_eq!(ours.dimensions(), reference.dimensions());
    ours.as_raw()
        .iter()
        .zip(reference.as_raw())
        .fold((0, 0), |(n, m), (&a, &b)| {
            let d = a.abs_diff(b);
            (n + usize::from(d != 0), m.max(d))
        })
}

struct FloatCheck {
    max_abs: f32,
    sum_rel: f64,
}

fn check_floats(
    label: &str,
    pixels: &[f32],
    hw: usize,
    positions: &[(usize, usize, usize)],
    reference: &[f32],
    reference_sum: f64,
) -> FloatCheck {
    let mut max_abs = 0f32;
    for (&(c, y, x), &r) in positions.iter().zip(reference) {
        let v = pixels[c * hw * hw + y * hw + x];
        max_abs = max_abs.max((v - r).abs());
    }
    let sum: f64 = pixels.iter().map(|&v| f64::from(v)).sum();
    let sum_rel = (sum - reference_sum).abs() / reference_sum.abs().max(1e-12);
    assert!(
        max_abs <= FLOAT_TOL,
        "{label}: max abs error {max_abs} at sampled positions"
    );
    assert!(
        sum_rel <= SUM_REL_TOL,
        "{label}: sum {sum} vs reference {reference_sum} (rel {sum_rel})"
    );
    FloatCheck { max_abs, sum_rel }
}

fn load_png(name: &str) -> RgbImage {
    decode_rgb(fixture_dir().join(name)).unwrap()
}

#[test]
fn clip_and_sam_match_reference_processors() {
    let m = manifest();
    let samples = reference_samples(&m);
    let n = m.sampling.n_samples;
    let clip_cfg = ClipPreprocessConfig::clip_vit_l_336();
    let mut worst_float = 0f32;
    let mut worst_sum = 0f64;
    let mut total_diff = 0usize;
    for (i, entry) in m.images.iter().enumerate() {
        let image = load_png(&format!("{}.png", entry.name));
        assert_eq!(image.dimensions(), (entry.width, entry.height));

        // CLIP: resize intermediate, then the normalised crop.
        let (rh, rw) = clip_cfg.resize_shape(entry.height, entry.width);
        assert_eq!(
            [rh, rw],
            entry.clip336.resized_hw,
            "{} clip shape",
            entry.name
        );
        let ours = resize_rgb8(&image, rw, rh, Filter::Bicubic);
        let reference = load_png(&format!("{}.clip_resized.png", entry.name));
        let (ndiff, maxd) = compare_u8(&ours, &reference);
        println!(
            "{:>9} clip336  resized {rh}x{rw}: {ndiff} differing values (max {maxd})",
            entry.name
        );
        total_diff += ndiff;

        let clip = clip_preprocess(&image, &clip_cfg).unwrap();
        assert_eq!(clip.shape, [3, 336, 336]);
        let pos = sample_positions(336, 336, n, entry.clip336.seed);
        let base = (i * 3) * n;
        let fc = check_floats(
            &format!("{} clip336", entry.name),
            &clip.pixels,
            336,
            &pos,
            &samples[base..base + n],
            entry.clip336.sum,
        );
        println!(
            "{:>9} clip336  floats: max abs err {:e} over {n} samples, sum rel err {:e}",
            entry.name, fc.max_abs, fc.sum_rel
        );
        worst_float = worst_float.max(fc.max_abs);
        worst_sum = worst_sum.max(fc.sum_rel);

        // SAM at both resize targets, on the 1024 canvas.
        for (j, (cfg, path)) in [
            (SamPreprocessConfig::inference_1024(), &entry.sam1024),
            (SamPreprocessConfig::training_512(), &entry.sam512),
        ]
        .into_iter()
        .enumerate()
        {
            let label = format!("{} sam{}", entry.name, cfg.longest_side);
            assert_eq!(cfg.pad_size, m.sam_canvas);
            let (rh, rw) = preprocess_shape(entry.height, entry.width, cfg.longest_side);
            assert_eq!([rh, rw], path.resized_hw, "{label} shape");
            let ours = resize_rgb8(&image, rw, rh, Filter::Bilinear);
            let reference = match &path.resized_png {
                Some(png) => load_png(png),
                None => image.clone(), // same size: the reference copies the input
            };
            let (ndiff, maxd) = compare_u8(&ours, &reference);
            println!("{label:>17} resized {rh}x{rw}: {ndiff} differing values (max {maxd})");
            total_diff += ndiff;

            let sam = sam_preprocess(&image, &cfg).unwrap();
            assert_eq!(sam.resized_hw, (rh, rw));
            assert_eq!(sam.original_hw, (entry.height, entry.width));
            let canvas = cfg.pad_size as usize;
            let pos = sample_positions(
                (rh + m.sampling.margin).min(cfg.pad_size),
                (rw + m.sampling.margin).min(cfg.pad_size),
                n,
                path.seed,
            );
            let base = (i * 3 + 1 + j) * n;
            let fc = check_floats(
                &label,
                &sam.pixels,
                canvas,
                &pos,
                &samples[base..base + n],
                path.sum,
            );
            println!(
                "{label:>17} floats: max abs err {:e} over {n} samples, sum rel err {:e}",
                fc.max_abs, fc.sum_rel
            );
            worst_float = worst_float.max(fc.max_abs);
            worst_sum = worst_sum.max(fc.sum_rel);
        }
    }
    println!(
        "TOTAL: {total_diff} differing uint8 values; worst float abs err {worst_float:e}; worst sum rel err {worst_sum:e}"
    );
    assert_eq!(total_diff, 0, "uint8 intermediates differ from Pillow");
}

#[test]
fn decoding_matches_opencv_imread() {
    let m = manifest();
    for file in &m.decode_files {
        let path = fixture_dir().join(file);
        let ours = decode_rgb(&path).unwrap();
        let reference = load_png(&format!("{file}.cv2.png"));
        assert_eq!(
            ours.dimensions(),
            reference.dimensions(),
            "{file}: oriented size differs from cv2.imread"
        );
        assert_eq!(dimensions(&path).unwrap(), ours.dimensions(), "{file}");
        let (ndiff, maxd) = compare_u8(&ours, &reference);
        println!(
            "{file:>12}: {}x{}, {ndiff} of {} values differ from cv2.imread (max abs {maxd})",
            ours.width(),
            ours.height(),
            ours.as_raw().len()
        );
        if file.ends_with(".jpg") {
            // Different JPEG decoders (zune-jpeg here, libjpeg-turbo in OpenCV) differ in IDCT
            // rounding, YCbCr->RGB fixed point and 4:2:0 chroma upsampling. Measured on these
            // 24x16 fixtures (saturated hard edges, the worst case): max 5. The bound is 6;
            // a larger difference would mean a real decoding bug, not rounding.
            assert!(maxd <= 6, "{file}: JPEG decode differs by up to {maxd}");
        } else {
            assert_eq!(ndiff, 0, "{file}: lossless decode differs from cv2.imread");
        }
    }
    // Orientation independent of decoder differences: exif6.jpg holds the same JPEG data as
    // plain.jpg plus the tag, so our decode must be our plain decode rotated 90 degrees clockwise.
    let plain = decode_rgb(fixture_dir().join("plain.jpg")).unwrap();
    let rotated = decode_rgb(fixture_dir().join("exif6.jpg")).unwrap();
    assert_eq!(image::imageops::rotate90(&plain), rotated);
    let plain_png = decode_rgb(fixture_dir().join("exif6.png")).unwrap();
    assert_eq!(plain_png.dimensions(), (16, 24));

    // EXIF orientation 6: PIL's `Image.open().size` (the reference's mask size) is the stored,
    // unrotated size; cv2.imread and we rotate it.
    let pil = m.pil_sizes_ignore_exif["exif6.jpg"];
    let oriented = dimensions(fixture_dir().join("exif6.jpg")).unwrap();
    assert_eq!((pil[1], pil[0]), oriented);
    assert_ne!(pil[0], pil[1]);
}

fn expect_error(path: &Path, what: &str) -> ImageIoError {
    let err = decode_rgb(path).expect_err(what);
    let msg = err.to_string();
    assert!(
        msg.contains(&*path.to_string_lossy()),
        "{what}: message does not name the file: {msg}"
    );
    println!("{what}: {msg}");
    err
}

#[test]
fn bad_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixture_dir();

    let missing = dir.path().join("missing.jpg");
    assert!(matches!(
        expect_error(&missing, "missing file"),
        ImageIoError::Io { .. }
    ));
    assert!(matches!(dimensions(&missing), Err(ImageIoError::Io { .. })));

    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    expect_error(&empty, "empty file");

    let random = dir.path().join("random.jpg");
    let mut state = 0x9e37_79b9u32;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            state = xorshift32(state);
            (state >> 24) as u8
        })
        .collect();
    std::fs::write(&random, &bytes).unwrap();
    expect_error(&random, "random bytes");

    let jpeg = std::fs::read(fx.join("exif6.jpg")).unwrap();
    let truncated = dir.path().join("truncated.jpg");
    std::fs::write(&truncated, &jpeg[..jpeg.len() / 2]).unwrap();
    assert!(matches!(
        expect_error(&truncated, "truncated JPEG"),
        ImageIoError::Corrupt { .. }
    ));

    // Flip one byte of the IDAT chunk's CRC.
    let mut png = std::fs::read(fx.join("landscape.png")).unwrap();
    let idat = png.windows(4).position(|w| w == b"IDAT").unwrap() - 4;
    let len = u32::from_be_bytes(png[idat..idat + 4].try_into().unwrap()) as usize;
    png[idat + 8 + len] ^= 0xff;
    let bad_crc = dir.path().join("bad_crc.png");
    std::fs::write(&bad_crc, &png).unwrap();
    assert!(matches!(
        expect_error(&bad_crc, "PNG with a bad CRC"),
        ImageIoError::Corrupt { .. }
    ));

    let gif = dir.path().join("image.gif");
    std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    assert!(matches!(
        expect_error(&gif, "GIF (unsupported)"),
        ImageIoError::UnsupportedFormat { .. }
    ));
}

/// Whole pipeline on a 4:2:0 JPEG against cv2.imread + the reference processors. The only
/// difference is the JPEG decoder (see `decoding_matches_opencv_imread`); this measures how much
/// of it survives resizing and normalisation. Not a 1e-5 parity check: decoders differ.
#[test]
fn jpeg_end_to_end_error_is_small() {
    let m = manifest();
    let e = &m.jpeg_end_to_end;
    let n = m.sampling.n_samples;
    let file = std::fs::File::open(fixture_dir().join("jpeg_samples.npy")).unwrap();
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).unwrap();
    assert_eq!(npy.shape(), &[3, n as u64]);
    let reference = npy.into_vec::<f32>().unwrap();

    let image = decode_rgb(fixture_dir().join(&e.file)).unwrap();
    assert_eq!(image.dimensions(), (e.width, e.height));
    let clip = clip_preprocess(&image, &ClipPreprocessConfig::clip_vit_l_336()).unwrap();
    let sam1024 = sam_preprocess(&image, &SamPreprocessConfig::inference_1024()).unwrap();
    let sam512 = sam_preprocess(&image, &SamPreprocessConfig::training_512()).unwrap();
    type Run<'a> = (&'a str, &'a [f32], usize, &'a PathEntry, (u32, u32));
    let runs: [Run; 3] = [
        ("clip336", &clip.pixels, 336, &e.clip336, (336, 336)),
        (
            "sam1024",
            &sam1024.pixels,
            1024,
            &e.sam1024,
            sam1024.resized_hw,
        ),
        ("sam512", &sam512.pixels, 1024, &e.sam512, sam512.resized_hw),
    ];
    for (j, (label, pixels, hw, entry, (rh, rw))) in runs.into_iter().enumerate() {
        let (ylim, xlim) = if label == "clip336" {
            (336, 336)
        } else {
            assert_eq!([rh, rw], entry.resized_hw);
            (
                (rh + m.sampling.margin).min(1024),
                (rw + m.sampling.margin).min(1024),
            )
        };
        let pos = sample_positions(ylim, xlim, n, entry.seed);
        let (mut max_abs, mut sum_abs) = (0f32, 0f64);
        for (&(c, y, x), &r) in pos.iter().zip(&reference[j * n..(j + 1) * n]) {
            let d = (pixels[c * hw * hw + y * hw + x] - r).abs();
            max_abs = max_abs.max(d);
            sum_abs += f64::from(d);
        }
        let sum: f64 = pixels.iter().map(|&v| f64::from(v)).sum();
        let sum_rel = (sum - entry.sum).abs() / entry.sum.abs();
        // Mean signed difference over the image region, in uint8 levels (padding is 0 in both).
        let level = if label == "clip336" {
            1.0 / 255.0 / 0.2613
        } else {
            1.0 / 57.12
        };
        let image_values = if label == "clip336" {
            3 * 336 * 336
        } else {
            3 * rh as usize * rw as usize
        };
        let bias_levels = (sum - entry.sum) / image_values as f64 / level;
        println!(
            "photo.jpg {label}: mean signed diff (ours - cv2 pipeline) {bias_levels:+.3} uint8 levels"
        );
        println!(
            "photo.jpg {label}: max abs err {max_abs:.4}, mean abs err {:.5} over {n} samples \
             (one uint8 level = {:.4}), sum rel err {sum_rel:.2e}",
            sum_abs / n as f64,
            if label == "clip336" {
                1.0 / 255.0 / 0.2613
            } else {
                1.0 / 57.12
            }
        );
        // Measured: about 4 uint8 levels at worst; bound at 8 levels of the channel with the
        // smallest std, so that only a real decoding/preprocessing bug can fail this.
        let level = if label == "clip336" {
            1.0 / 255.0 / 0.2613
        } else {
            1.0 / 57.12
        };
        assert!(max_abs <= 8.0 * level, "{label}: {max_abs}");
    }
}

#[test]
fn to_tensor_keeps_chw_layout() {
    let device = legion_backend::Device::flex();
    let image = RgbImage::from_fn(40, 25, |x, y| image::Rgb([x as u8 * 6, y as u8 * 9, 77]));
    let clip = clip_preprocess(&image, &ClipPreprocessConfig::tiny()).unwrap();
    let t = clip.to_tensor(&device);
    assert_eq!(t.dims(), [3, 28, 28]);
    let back = t.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(back, clip.pixels);

    let sam = sam_preprocess(&image, &SamPreprocessConfig::tiny()).unwrap();
    let t = sam.to_tensor(&device);
    assert_eq!(t.dims(), [3, 32, 32]);
    assert_eq!(t.into_data().try_to_vec::<f32>().unwrap(), sam.pixels);
}
