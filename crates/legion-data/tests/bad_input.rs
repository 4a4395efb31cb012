//! Every bad-input case of the data crate gives an error naming file, record and field, and the
//! skip policy reports it and goes on. Datasets are built in temporary folders by the test itself.

use std::path::Path;

use legion_data::check::{CheckOptions, check};
use legion_data::{
    BadInputPolicy, DataError, MissingPhrasePolicy, NoProgress, OpenOptions, SampleConfig,
    SynthScarsSplit,
};

fn write_png(path: &Path, w: u32, h: u32) {
    let img =
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 128]));
    img.save(path).unwrap();
}

fn record(id: &str, file: &str, refs: &str) -> String {
    format!(
        r#"{{"{id}": {{"caption": "Upon examining the image. I have found: a cat.\nTo elaborate, I have found the following artifacts. The cat:has two tails", "img_file_name": "{file}", "refs": [{refs}]}}}}"#
    )
}

const GOOD_REF: &str = r#"{"sentence": "The cat", "explanation": "has two tails", "bbox": null, "segmentation": [[2.0, 2.0, 20.0, 2.0, 20.0, 12.0, 2.0, 12.0]]}"#;

/// Builds `root/train` with the given records; images named in `pngs` are written 32x24.
fn dataset(records: &[String], pngs: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("train/images")).unwrap();
    std::fs::create_dir_all(root.join("train/annotations")).unwrap();
    for p in pngs {
        write_png(&root.join("train/images").join(p), 32, 24);
    }
    std::fs::write(
        root.join("train/annotations/train.json"),
        format!("[{}]", records.join(",\n")),
    )
    .unwrap();
    dir
}

fn open(root: &Path, bad: BadInputPolicy) -> Result<SynthScarsSplit, DataError> {
    SynthScarsSplit::open(
        root,
        "train",
        &OpenOptions {
            bad_input: bad,
            missing_phrase: MissingPhrasePolicy::SkipRef,
        },
    )
}

#[test]
fn good_record_loads_with_masks_in_seg_order() {
    let dir = dataset(&[record("a", "a.png", GOOD_REF)], &["a.png"]);
    let split = open(dir.path(), BadInputPolicy::Error).unwrap();
    let masks = split.training_masks(0).unwrap();
    assert_eq!(masks.len(), 1);
    assert_eq!((masks[0].height(), masks[0].width()), (24, 32));
    assert_eq!(
        masks[0].area(),
        18 * 10,
        "axis-aligned rectangle on integer corners"
    );
    assert!(
        split.entries()[0]
            .grounding
            .tagged_answer()
            .contains("<p> The cat </p> [SEG]")
    );
}

fn first_error(records: &[String], pngs: &[&str]) -> String {
    let dir = dataset(records, pngs);
    let err = open(dir.path(), BadInputPolicy::Error)
        .unwrap_err()
        .to_string();
    // Skip policy: the same problem is reported, not fatal.
    let split = open(dir.path(), BadInputPolicy::Skip).unwrap();
    assert_eq!(
        split.len() + split.problems().iter().filter(|p| p.record_dropped).count(),
        records.len()
    );
    assert!(
        !split.problems().is_empty(),
        "skip policy must report the problem: {err}"
    );
    err
}

#[test]
fn missing_image_names_file_and_record() {
    let err = first_error(&[record("rec7", "nope.png", GOOD_REF)], &[]);
    assert!(
        err.contains("nope.png") && err.contains("record `rec7`"),
        "{err}"
    );
}

#[test]
fn corrupt_jpeg_names_file_and_record() {
    let dir = dataset(&[record("bad", "bad.jpg", GOOD_REF)], &[]);
    // A JPEG header followed by garbage: the header may parse, the body cannot.
    let mut bytes = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0,
    ];
    bytes.extend(std::iter::repeat_n(0x5Au8, 200));
    std::fs::write(dir.path().join("train/images/bad.jpg"), bytes).unwrap();
    let report = check(dir.path(), &CheckOptions::default(), &NoProgress).unwrap();
    let problem = &report.splits[0].problems[0];
    assert!(problem.record_dropped);
    assert!(
        problem.location.to_string().contains("bad.jpg"),
        "{}",
        problem.location
    );
    assert_eq!(problem.location.record.as_deref(), Some("bad"));
    assert_eq!(report.error_count(), 1);
}

/// The issue's case: the first third of a valid JPEG used to pass `data check` (the decoder
/// filled the missing rows with grey). Now `check` reports it and drops the record.
#[test]
fn jpeg_cut_to_its_first_third_fails_check_and_loading() {
    let dir = dataset(
        &[
            record("cut", "cut.jpg", GOOD_REF),
            record("ok", "ok.png", GOOD_REF),
        ],
        &["ok.png"],
    );
    let jpeg = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/damaged/photo.jpg"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("train/images/cut.jpg"),
        &jpeg[..jpeg.len() / 3],
    )
    .unwrap();
    let report = check(dir.path(), &CheckOptions::default(), &NoProgress).unwrap();
    assert_eq!(report.error_count(), 1);
    let problem = &report.splits[0].problems[0];
    assert!(problem.record_dropped);
    assert_eq!(problem.location.record.as_deref(), Some("cut"));
    let text = format!("{}: {}", problem.location, problem.message);
    assert!(
        text.contains("cut.jpg") && text.contains("truncated"),
        "{text}"
    );
    // Cut inside the entropy-coded data, the header is intact: opening succeeds and loading
    // the sample for training is an error naming file and record.
    std::fs::write(
        dir.path().join("train/images/cut.jpg"),
        &jpeg[..jpeg.len() - 16],
    )
    .unwrap();
    let split = open(dir.path(), BadInputPolicy::Error).unwrap();
    let err = split
        .load(0, &SampleConfig::legion_training())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cut.jpg") && err.contains("record `cut`"),
        "{err}"
    );
}

#[test]
fn truncated_png_is_found_by_decoding() {
    let dir = dataset(&[record("t", "t.png", GOOD_REF)], &["t.png"]);
    let path = dir.path().join("train/images/t.png");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let split = open(dir.path(), BadInputPolicy::Error).unwrap(); // header is intact
    let err = split
        .load(0, &SampleConfig::legion_training())
        .unwrap_err()
        .to_string();
    assert!(err.contains("t.png") && err.contains("record `t`"), "{err}");
}

#[test]
fn malformed_json_gives_line_and_column() {
    let dir = dataset(&[], &[]);
    std::fs::write(
        dir.path().join("train/annotations/train.json"),
        "[\n  {\"a\": {\"caption\": \"x\",,}}\n]",
    )
    .unwrap();
    match open(dir.path(), BadInputPolicy::Skip).unwrap_err() {
        DataError::Json {
            line,
            column,
            location,
            ..
        } => {
            assert_eq!(line, 2);
            assert!(column > 0);
            assert!(location.file.ends_with("train/annotations/train.json"));
        }
        other => panic!("expected a JSON error, got {other}"),
    }
}

#[test]
fn odd_coordinates_nan_and_far_points_name_the_field() {
    let odd = r#"{"sentence": "The cat", "segmentation": [[1, 2, 3, 4, 5]]}"#;
    let err = first_error(&[record("o", "o.png", odd)], &["o.png"]);
    assert!(
        err.contains("record `o`")
            && err.contains("refs[0].segmentation[0]")
            && err.contains("odd"),
        "{err}"
    );

    let nan = r#"{"sentence": "The cat", "segmentation": [[1, 2, NaN, 4, 5, 6]]}"#;
    let err = first_error(&[record("n", "n.png", nan)], &["n.png"]);
    assert!(err.contains("refs[0].segmentation[0][2]"), "{err}");

    let far = r#"{"sentence": "The cat", "segmentation": [[1, 2, 3, 4, 50000, 6]]}"#;
    let err = first_error(&[record("f", "f.png", far)], &["f.png"]);
    assert!(
        err.contains("record `f`") && err.contains("refs[0].segmentation[0]"),
        "{err}"
    );
}

#[test]
fn zero_refs_is_valid_and_reported_by_check() {
    let dir = dataset(
        &[record("empty", "e.png", ""), record("a", "a.png", GOOD_REF)],
        &["e.png", "a.png"],
    );
    let split = open(dir.path(), BadInputPolicy::Error).unwrap();
    assert_eq!(split.len(), 2);
    let report = check(dir.path(), &CheckOptions::default(), &NoProgress).unwrap();
    assert_eq!(report.splits[0].zero_ref_records, 1);
    assert_eq!(report.error_count(), 0);
    // The training view skips it, as the reference loader does; evaluation keeps it.
    let split = std::sync::Arc::new(split);
    let train =
        legion_data::SynthScarsDataset::training(split.clone(), SampleConfig::legion_training());
    let all = legion_data::SynthScarsDataset::all(split, SampleConfig::legion_training());
    assert_eq!((train.indices().len(), all.indices().len()), (1, 2));
}

#[test]
fn duplicate_ids_and_missing_phrases_follow_their_policies() {
    let dir = dataset(
        &[
            record("d", "a.png", GOOD_REF),
            record("d", "b.png", GOOD_REF),
        ],
        &["a.png", "b.png"],
    );
    let err = open(dir.path(), BadInputPolicy::Error)
        .unwrap_err()
        .to_string();
    assert!(err.contains("duplicate record id `d`"), "{err}");

    let absent = r#"{"sentence": "The dog", "segmentation": [[1, 2, 9, 2, 9, 9]]}"#;
    let dir = dataset(
        &[record("m", "m.png", &format!("{GOOD_REF}, {absent}"))],
        &["m.png"],
    );
    let opts = |p| OpenOptions {
        bad_input: BadInputPolicy::Error,
        missing_phrase: p,
    };
    let skip_ref =
        SynthScarsSplit::open(dir.path(), "train", &opts(MissingPhrasePolicy::SkipRef)).unwrap();
    assert_eq!(
        (skip_ref.len(), skip_ref.entries()[0].grounding.spans.len()),
        (1, 1)
    );
    assert!(
        skip_ref.problems()[0]
            .location
            .to_string()
            .contains("refs[1].sentence")
    );
    let skip_record =
        SynthScarsSplit::open(dir.path(), "train", &opts(MissingPhrasePolicy::SkipRecord)).unwrap();
    assert_eq!(skip_record.len(), 0);
    let err = SynthScarsSplit::open(dir.path(), "train", &opts(MissingPhrasePolicy::Error))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("The dog") && err.contains("does not occur"),
        "{err}"
    );
}
