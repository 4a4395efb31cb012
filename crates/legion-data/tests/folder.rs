//! The generic folder format converts to the SynthScars layout and reads back the same masks.

use std::path::Path;

use legion_data::folder::import_folder;
use legion_data::{
    BadInputPolicy, Labels, MissingPhrasePolicy, NoProgress, OpenOptions, SynthScarsSplit,
};

fn gray(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]))
        .save(path)
        .unwrap();
}

fn make_folder(root: &Path) {
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(root.join("masks")).unwrap();
    image::RgbImage::from_pixel(40, 30, image::Rgb([90, 120, 200]))
        .save(root.join("images/one.png"))
        .unwrap();
    image::RgbImage::from_pixel(20, 16, image::Rgb([10, 20, 30]))
        .save(root.join("images/two.png"))
        .unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
        .save(root.join("images/clean.png"))
        .unwrap();
    // one.png: a label map with two artifacts (an L-shape and a block).
    gray(&root.join("masks/one.png"), 40, 30, |x, y| {
        if (5..15).contains(&x) && (5..25).contains(&y)
            || (5..25).contains(&x) && (20..25).contains(&y)
        {
            1
        } else if (30..38).contains(&x) && (2..9).contains(&y) {
            2
        } else {
            0
        }
    });
    // two.png: one binary mask per artifact, 255 = artifact, with a hole.
    gray(&root.join("masks/two_1.png"), 20, 16, |x, y| {
        let inside = (2..12).contains(&x) && (2..12).contains(&y);
        let hole = (5..8).contains(&x) && (5..8).contains(&y);
        if inside && !hole { 255 } else { 0 }
    });
    std::fs::write(
        root.join("explanations.jsonl"),
        concat!(
            r#"{"image": "one.png", "summary": "two problems.", "content_type": "object", "artifacts": [{"phrase": "The handle", "explanation": "bends impossibly.", "category": "structure"}, {"phrase": "The shadow", "explanation": "points at the light."}]}"#,
            "\n",
            r#"{"image": "two.png", "artifacts": [{"phrase": "The ring", "explanation": "has a smeared texture."}]}"#,
            "\n",
            r#"{"image": "clean.png"}"#,
            "\n"
        ),
    )
    .unwrap();
}

#[test]
fn import_round_trips_masks_and_writes_labels() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    make_folder(src.path());
    let report = import_folder(src.path(), out.path(), "train", &NoProgress).unwrap();
    assert_eq!((report.images, report.artifacts), (3, 3));
    assert_eq!(
        report.filled_holes,
        vec![("two.png".to_string(), 0, 9)],
        "the 3x3 hole is filled and reported"
    );
    assert!(report.labels_written);

    let opts = OpenOptions {
        bad_input: BadInputPolicy::Error,
        missing_phrase: MissingPhrasePolicy::Error,
    };
    let split = SynthScarsSplit::open(out.path(), "train", &opts).unwrap();
    assert_eq!(split.len(), 3);
    let one = split
        .entries()
        .iter()
        .position(|e| e.record.img_file_name == "one.png")
        .unwrap();
    let masks = split.training_masks(one).unwrap();
    assert_eq!(masks.len(), 2);
    assert_eq!(
        masks[0].area(),
        10 * 20 + 10 * 5,
        "L-shape read back exactly"
    );
    assert_eq!(masks[1].area(), 8 * 7);
    let two = split
        .entries()
        .iter()
        .position(|e| e.record.img_file_name == "two.png")
        .unwrap();
    assert_eq!(split.training_masks(two).unwrap()[0].area(), 100);
    let clean = split
        .entries()
        .iter()
        .position(|e| e.record.img_file_name == "clean.png")
        .unwrap();
    assert!(split.entries()[clean].record.refs.is_empty());

    let labels = Labels::read(&out.path().join("labels.jsonl")).unwrap();
    let l = labels.get("one.png", "one").unwrap();
    assert_eq!(l.content_type, Some(legion_data::ContentType::Object));
    assert_eq!(
        l.categories,
        vec![Some(legion_data::ArtifactCategory::Structure), None]
    );
}

#[test]
fn bad_folders_fail_with_the_file_named() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    make_folder(src.path());
    std::fs::remove_file(src.path().join("masks/two_1.png")).unwrap();
    let err = import_folder(src.path(), out.path(), "train", &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("two_1.png") && err.contains("missing mask"),
        "{err}"
    );

    make_folder(src.path());
    gray(&src.path().join("masks/two_1.png"), 19, 16, |_, _| 0);
    let err = import_folder(src.path(), out.path(), "train", &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("16x19") && err.contains("16x20"), "{err}");

    make_folder(src.path());
    gray(&src.path().join("masks/one.png"), 40, 30, |x, _| {
        if x == 0 { 3 } else { 0 }
    });
    let err = import_folder(src.path(), out.path(), "train", &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("label 3") && err.contains("2 artifacts"),
        "{err}"
    );

    make_folder(src.path());
    let jsonl = src.path().join("explanations.jsonl");
    let mut text = std::fs::read_to_string(&jsonl).unwrap();
    text.push_str("{\"image\": \"x.png\", \"artifacts\": 5}\n");
    std::fs::write(&jsonl, text).unwrap();
    let err = import_folder(src.path(), out.path(), "train", &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 4"), "{err}");
}
