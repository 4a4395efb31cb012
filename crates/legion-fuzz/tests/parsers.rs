//! Every parser of outside data, fuzzed within a time budget (see `legion_fuzz` for the budget,
//! seeds and replay). Each target must return `Ok` or an error for every input, never panic;
//! where a property holds for all inputs (RLE round trip, mask sizes), it is asserted too.
//!
//! Seeds are the committed fixtures the other tests use (shipped data, checkpoints, configs) and
//! small files made here.

use std::path::{Path, PathBuf};

use legion_data::mask::Mask;
use legion_data::raster;
use legion_data::rle::Rle;
use legion_fuzz::{Budget, Rng, Stats, fuzz_bytes, fuzz_values};
use legion_model::weights::{CheckpointFormat, CheckpointSource, TopLevelKey};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: impl AsRef<Path>) -> Vec<u8> {
    let path = workspace().join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn report(target: &str, stats: &Stats) {
    eprintln!(
        "fuzz {target}: {} inputs, {} accepted",
        stats.iterations, stats.accepted
    );
    assert!(stats.iterations > 0);
}

const JSON_TOKENS: &[&[u8]] = &[
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"\"",
    b",",
    b":",
    b"NaN",
    b"-Infinity",
    b"1e309",
    b"-0",
    b"18446744073709551616",
    b"\"segmentation\"",
    b"\"refs\"",
    b"\"bbox\"",
    b"[[",
    b"]]",
    b"\\u0000",
    b"\"img_file_name\"",
    b"\"caption\"",
];

#[test]
fn annotation_json_reader() {
    let mut text = read("data/synthscars-tiny/train/annotations/train.json");
    // Keep the seed small: the first few records are every field type the reader sees.
    if let Some(cut) = text
        .windows(3)
        .enumerate()
        .filter(|(_, w)| *w == b"},{" || *w == b"}, ")
        .map(|(i, _)| i)
        .nth(3)
    {
        text.truncate(cut + 1);
        text.push(b']');
    }
    let seeds = vec![
        text,
        br#"[{"a": {"caption": "x", "img_file_name": "a.png", "refs": [{"sentence": "s", "explanation": "e", "bbox": [1, 2, 3, 4], "segmentation": [[1.5, 2, 10, 2, 10, 9]]}]}}]"#.to_vec(),
    ];
    let location = legion_data::Location::file("fuzz.json");
    let stats = fuzz_bytes(
        "annotation_json",
        &Budget::from_env(),
        &seeds,
        JSON_TOKENS,
        |bytes| legion_data::record::parse_annotations(bytes, &location).is_ok(),
    );
    report("annotation_json", &stats);
}

/// A polygon of 0-20 awkward coordinates (NaN, infinities, huge, degenerate, on and off the
/// image) on an image of 0-48 x 0-48 pixels.
#[derive(Debug)]
struct PolygonCase {
    polys: Vec<Vec<f64>>,
    height: usize,
    width: usize,
}

fn polygon_case(rng: &mut Rng) -> PolygonCase {
    let (height, width) = (rng.below(49), rng.below(49));
    let scale = (height.max(width) as f64).max(1.0);
    let polys = (0..1 + rng.below(3))
        .map(|_| {
            let n = rng.below(21);
            if rng.one_in(3) {
                // Degenerate: every point equal, or all on one line.
                let (x, y) = (rng.awkward_f64(scale), rng.awkward_f64(scale));
                let slope = f64::from(u8::from(rng.one_in(2)));
                (0..n)
                    .map(|i| {
                        if i % 2 == 0 {
                            x
                        } else {
                            y + (i / 2) as f64 * slope
                        }
                    })
                    .collect()
            } else {
                (0..n).map(|_| rng.awkward_f64(scale)).collect()
            }
        })
        .collect();
    PolygonCase {
        polys,
        height,
        width,
    }
}

#[test]
fn polygon_rasterisers_on_nan_huge_and_degenerate_polygons() {
    let stats = fuzz_values(
        "polygon_raster",
        &Budget::from_env(),
        polygon_case,
        |case| {
            let (h, w) = (case.height, case.width);
            let mut accepted = false;
            if let Ok(mask) = raster::coco_polygons(&case.polys, h, w) {
                assert_eq!((mask.height(), mask.width()), (h, w));
                accepted = true;
            }
            if let Ok(mask) = raster::cv2_fill_poly(&case.polys, h, w) {
                assert_eq!((mask.height(), mask.width()), (h, w));
            }
            if let Some(poly) = case.polys.first() {
                let _ = raster::validate_coco_polygon(poly, h, w);
                if let Ok(rle) = raster::coco_polygon_rle(poly, h, w) {
                    assert_eq!(rle.to_mask(), raster::coco_polygon(poly, h, w).unwrap());
                }
                if poly.len() >= 4 {
                    let _ = raster::coco_bbox([poly[0], poly[1], poly[2], poly[3]], h, w);
                }
            }
            accepted
        },
    );
    report("polygon_raster", &stats);
}

/// A random mask made of runs, so that both long and single-pixel runs occur.
#[derive(Debug)]
struct MaskCase {
    height: usize,
    width: usize,
    data: Vec<u8>,
}

fn mask_case(rng: &mut Rng) -> MaskCase {
    let (height, width) = (rng.below(40), rng.below(40));
    let mut data = Vec::with_capacity(height * width);
    let mut value = u8::from(rng.one_in(2));
    while data.len() < height * width {
        let longest = if rng.one_in(2) { 3 } else { 200 };
        let run = 1 + rng.below(longest);
        data.extend(std::iter::repeat_n(
            value,
            run.min(height * width - data.len()),
        ));
        value ^= 1;
    }
    MaskCase {
        height,
        width,
        data,
    }
}

#[test]
fn coco_rle_encode_decode_round_trip() {
    let stats = fuzz_values("rle_round_trip", &Budget::from_env(), mask_case, |case| {
        let mask = Mask::from_raw(case.height, case.width, case.data.clone()).unwrap();
        let rle = Rle::from_mask(&mask).unwrap();
        assert_eq!(rle.to_mask(), mask);
        assert_eq!(rle.area(), mask.area() as u64);
        let text = rle.to_coco_string();
        let back = Rle::from_coco_string(case.height, case.width, &text).unwrap();
        assert_eq!(back.to_mask(), mask, "{text}");
        let counts = Rle::from_counts(case.height, case.width, rle.counts().to_vec()).unwrap();
        assert_eq!(counts.to_mask(), mask);
        true
    });
    report("rle_round_trip", &stats);
}

#[test]
fn coco_rle_strings_from_outside() {
    let seeds = vec![
        b"0".to_vec(),
        b"PPYo0c0Ya0".to_vec(),
        b"51c0N2N1O0000O100O1N2Nf0".to_vec(),
        b"`_1>b0".to_vec(),
    ];
    let stats = fuzz_bytes(
        "rle_string",
        &Budget::from_env(),
        &seeds,
        &[b"0", b"\x7f", b"~~~~~~"],
        |bytes| {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return false;
            };
            let size = bytes.len() % 17;
            match Rle::from_coco_string(size, 16 - size % 16, text) {
                Ok(rle) => {
                    let mask = rle.to_mask();
                    assert_eq!(mask.as_slice().len(), rle.height() * rle.width());
                    true
                }
                Err(_) => false,
            }
        },
    );
    report("rle_string", &stats);
}

fn png_bytes(image: image::DynamicImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

#[test]
fn prediction_mask_png_reader() {
    let binary = image::GrayImage::from_fn(24, 16, |x, y| {
        image::Luma([if (x + y) % 5 < 2 { 255 } else { 0 }])
    });
    let scores = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(24, 16, |x, y| {
        image::Luma([(x * 2000 + y * 300) as u16])
    });
    let rgb = image::RgbImage::from_fn(8, 8, |x, _| image::Rgb([x as u8 * 30, 0, 0]));
    let seeds = vec![
        png_bytes(binary.into()),
        png_bytes(scores.into()),
        png_bytes(rgb.into()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mask.png");
    let stats = fuzz_bytes(
        "prediction_png",
        &Budget::from_env(),
        &seeds,
        &[b"IDAT", b"IEND", b"IHDR", b"\x00\x00\x00\x00"],
        |bytes| {
            std::fs::write(&path, bytes).unwrap();
            legion_eval::predictions::read_prediction_png(&path).is_ok()
        },
    );
    report("prediction_png", &stats);
}

/// Fuzzes reading a one-file checkpoint of `format`, mutating `seeds` (files under the
/// workspace) with format `tokens`.
fn fuzz_checkpoint(target: &str, format: CheckpointFormat, seeds: &[&str], tokens: &[&[u8]]) {
    let seeds: Vec<Vec<u8>> = seeds.iter().map(read).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(match format {
        CheckpointFormat::Safetensors => "model.safetensors",
        CheckpointFormat::Pytorch => "model.pth",
    });
    let stats = fuzz_bytes(target, &Budget::from_env(), &seeds, tokens, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        CheckpointSource::single_file(&path, format)
            .read_shard(0, &TopLevelKey::Auto)
            .is_ok()
    });
    report(target, &stats);
}

#[test]
fn safetensors_header_parser() {
    fuzz_checkpoint(
        "safetensors",
        CheckpointFormat::Safetensors,
        &[
            "crates/legion-model/tests/fixtures/checkpoints/micro_clip_lora/adapter_model.safetensors",
            "crates/legion-model/tests/fixtures/checkpoints/micro_clip_bf16.safetensors",
        ],
        &[
            b"\"dtype\"",
            b"\"shape\"",
            b"\"data_offsets\"",
            b"\"F32\"",
            b"\"BF16\"",
            b"\"I64\"",
            b"[0, 18446744073709551615]",
            b"[4294967296, 4294967296]",
            b"\"__metadata__\"",
            b"{}",
            b"\xff\xff\xff\xff\xff\xff\xff\x7f",
        ],
    );
}

/// The legacy format is a bare pickle stream (plus magic and sys-info pickles), so mutants
/// reach the unpickler instead of stopping at a zip CRC; the zip seed covers the container.
#[test]
fn pytorch_pickle_reader() {
    fuzz_checkpoint(
        "pytorch_pickle",
        CheckpointFormat::Pytorch,
        &[
            "crates/legion-model/tests/fixtures/checkpoints/micro_clip_legacy.pth",
            "crates/legion-model/tests/fixtures/checkpoints/micro_clip_single/pytorch_model.bin",
        ],
        &[
            b"cos\nsystem\n",
            b"c__builtin__\neval\n",
            b"R",
            b"\x93",
            b"\x85",
            b"(",
            b"t",
            b".",
            b"\x80\x02",
            b"ctorch._utils\n_rebuild_tensor_v2\n",
            b"J\xff\xff\xff\x7f",
            b"\x8a\x08",
            b"q\x00",
            b"h\x00",
            b"}",
            b"]",
            b"PK\x03\x04",
        ],
    );
}

#[test]
fn toml_training_configs() {
    let seeds: Vec<Vec<u8>> = ["configs/tiny.toml", "configs/finetune.toml"]
        .iter()
        .map(read)
        .collect();
    let tokens: &[&[u8]] = &[
        b"=",
        b"[",
        b"]",
        b"[[",
        b"\"",
        b"'''",
        b"nan",
        b"inf",
        b"-1",
        b"1e400",
        b"0",
        b"9223372036854775808",
        b"true",
        b"{}",
        b"\n[model]\n",
        b"\n[data]\n",
        b"#",
    ];
    let stats = fuzz_bytes(
        "toml_config",
        &Budget::from_env(),
        &seeds,
        tokens,
        |bytes| {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return false;
            };
            legion_train::config::TrainConfig::from_toml(text, "fuzz.toml", &[]).is_ok()
        },
    );
    report("toml_config", &stats);
}
