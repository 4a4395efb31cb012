//! Strict decoding: truncated, bit-flipped and zero-length JPEG / PNG / WebP files are errors
//! naming the file, never images with invented pixels, and never a panic.
//!
//! Fixtures: `tests/fixtures/damaged/`, written by `scripts/fixtures/damaged_images.py` (Pillow),
//! whose `manifest.json` also records which truncated files Pillow refuses.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use legion_data::image_io::{decode_image, decode_rgb, decode_rgb_bytes};

const FILES: [&str; 4] = ["photo.jpg", "photo.png", "lossy.webp", "lossless.webp"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/damaged")
        .join(name)
}

fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("manifest.json")).unwrap()).unwrap()
}

/// Decodes `bytes` saved as `dir/name`; a panic is turned into a test failure naming the case.
fn decode_saved(dir: &Path, name: &str, bytes: &[u8], case: &str) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| decode_rgb(&path)))
        .unwrap_or_else(|_| panic!("{name}, {case}: the decoder panicked"));
    match decoded {
        Ok(_) => Ok(()),
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(&path.display().to_string()),
                "{name}, {case}: the error does not name the file: {message}"
            );
            Err(message)
        }
    }
}

#[test]
fn intact_fixtures_decode_from_file_and_memory() {
    for name in FILES {
        let rgb = decode_rgb(fixture(name)).unwrap();
        assert_eq!(rgb.dimensions(), (48, 40), "{name}");
        let bytes = std::fs::read(fixture(name)).unwrap();
        let from_memory = decode_rgb_bytes(&bytes, Path::new(name)).unwrap();
        assert_eq!(from_memory, rgb, "{name}");
        assert_eq!(decode_image(fixture(name)).unwrap().width(), 48);
    }
}

#[test]
fn every_truncation_is_an_error_naming_the_file_including_all_pillow_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest();
    for name in FILES {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let entry = &manifest[name];
        assert_eq!(entry["len"].as_u64(), Some(bytes.len() as u64), "{name}");
        for cut in entry["cuts"].as_array().unwrap() {
            let len = cut["len"].as_u64().unwrap() as usize;
            let case = format!("cut to {len} of {} bytes", bytes.len());
            let result = decode_saved(dir.path(), name, &bytes[..len], &case);
            // Pillow accepts a PNG cut inside its IEND trailer (the pixels are complete); this
            // decoder refuses every cut file, so it refuses a superset of what Pillow refuses.
            assert!(
                result.is_err(),
                "{name}, {case}: decoded (Pillow: {})",
                cut["pillow"]
            );
        }
    }
}

#[test]
fn the_issue_case_a_jpeg_cut_to_its_first_third_is_refused_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("photo.jpg")).unwrap();
    let message =
        decode_saved(dir.path(), "third.jpg", &bytes[..bytes.len() / 3], "1/3").unwrap_err();
    assert!(
        message.contains("truncated or corrupt"),
        "not reported as truncated: {message}"
    );
}

#[test]
fn zero_length_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in FILES {
        let message = decode_saved(dir.path(), name, &[], "empty").unwrap_err();
        assert!(message.contains("empty"), "{name}: {message}");
        assert!(decode_rgb_bytes(&[], Path::new(name)).is_err());
    }
}

/// Flips every bit of every fixture, one at a time. None may panic; every error names the file.
/// PNG (CRC on every chunk, IEND required) must refuse every flipped file. JPEG and WebP carry no
/// checksum over their entropy-coded data, so some flips decode to other plausible pixels there
/// (as with libjpeg / libwebp); for them the test requires that a flip in the structure (start
/// and end markers / RIFF and VP8 headers) is found and reports the share of all flips found.
#[test]
fn single_bit_flips_never_panic_and_checksummed_or_structural_damage_is_found() {
    for name in FILES {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let mut refused = 0usize;
        let mut accepted_at = Vec::new();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            // In memory: ~90,000 decodes; the file path is the same code after the read.
            let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
                decode_rgb_bytes(&flipped, Path::new(name))
            }))
            .unwrap_or_else(|_| panic!("{name}, bit {bit} flipped: the decoder panicked"));
            match decoded {
                Err(e) => {
                    assert!(e.to_string().contains(name), "{name}: {e}");
                    refused += 1;
                }
                Ok(_) => accepted_at.push(bit / 8),
            }
        }
        let total = bytes.len() * 8;
        eprintln!("{name}: {refused} of {total} single-bit flips refused");
        match name {
            "photo.png" => assert_eq!(
                refused, total,
                "{name}: flips at bytes {accepted_at:?} were not found"
            ),
            "photo.jpg" => {
                // The start and end markers are structure: any flip there is refused.
                let end = bytes.len() - 2;
                for structural in [0, 1, end, end + 1] {
                    assert!(
                        !accepted_at.contains(&structural),
                        "{name}: byte {structural}"
                    );
                }
            }
            _ => {
                // "RIFF" and "WEBP" tags and the chunk type ("VP8 " / "VP8L").
                for structural in (0..4).chain(8..16) {
                    assert!(
                        !accepted_at.contains(&structural),
                        "{name}: byte {structural}"
                    );
                }
            }
        }
    }
}
