//! The synthetic SynthScars-layout generator (`legion_data::synth`): determinism, layout, images,
//! phrase grounding, labels, counts and coverage. No fixture: the data is generated here.
//!
//! Set `LEGION_SYNTH_OUT=<dir>` to also write the default generation to `<dir>` (the shipped
//! `data/synthscars-tiny` is made this way until the CLI's `legion data synth` exists).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use legion_data::record::read_annotations;
use legion_data::synth::{SynthConfig, generate, named_kind};
use legion_data::{ArtifactCategory, ContentType, Grounding, Labels, Record, SplitLayout};

fn small() -> SynthConfig {
    SynthConfig::new()
        .with_seed(11)
        .with_train_count(24)
        .with_test_count(12)
}

/// Every file under `root`, relative path -> bytes.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn records(root: &Path, split: &str) -> (SplitLayout, Vec<Record>) {
    let layout = SplitLayout::find(root, split).unwrap();
    let records = read_annotations(&layout.annotations)
        .unwrap()
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (layout, records)
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_differs() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let cfg = small();
    generate(a.path(), &cfg).unwrap();
    generate(b.path(), &cfg).unwrap();
    generate(c.path(), &cfg.clone().with_seed(12)).unwrap();
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert_eq!(
        fa.len(),
        24 + 12 + 2 + 2,
        "images, annotations, labels, README"
    );
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (path, bytes) in &fa {
        assert!(
            fb[path] == *bytes,
            "{} differs between runs",
            path.display()
        );
    }
    let differing = fa.iter().filter(|(p, bytes)| fc[*p] != **bytes).count();
    assert!(
        differing >= 24 + 12 + 2,
        "only {differing} files differ for another seed"
    );

    // Regenerating over a larger earlier generation leaves exactly the new files.
    generate(a.path(), &cfg.clone().with_train_count(20)).unwrap();
    let (layout, recs) = records(a.path(), "train");
    assert_eq!(recs.len(), 20);
    assert_eq!(std::fs::read_dir(&layout.images).unwrap().count(), 20);
    // A smaller train split does not change the test split.
    let fa2 = files(a.path());
    for (path, bytes) in &fb {
        if path.starts_with("test") {
            assert!(fa2[path] == *bytes, "{} changed", path.display());
        }
    }
}

#[test]
fn layout_images_phrases_labels_and_counts_are_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cfg = SynthConfig::new()
        .with_seed(5)
        .with_train_count(80)
        .with_test_count(40);
    let report = generate(root, &cfg).unwrap();
    let labels = Labels::read(&root.join("labels.jsonl")).unwrap();
    assert_eq!(labels.len(), 120);
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains(&cfg.cli_flags()), "{readme}");

    let mut categories = BTreeSet::new();
    let mut contents = BTreeSet::new();
    let mut overshoots = 0;
    let mut periods = 0;
    let mut multi = 0;
    let mut areas = Vec::new();
    for (split, count, split_report) in [
        ("train", 80, &report.splits[0]),
        ("test", 40, &report.splits[1]),
    ] {
        let (layout, recs) = records(root, split);
        assert_eq!(recs.len(), count);
        assert_eq!(split_report.images, count);
        let clean = recs.iter().filter(|r| r.refs.is_empty()).count();
        assert_eq!(clean, (count as f64 * 0.1).round() as usize, "{split}");
        assert_eq!(split_report.clean_images, clean);
        // The images with artifacts are spread evenly over the kinds (a shuffled round-robin).
        let mut per_kind: BTreeMap<Option<ArtifactCategory>, usize> = BTreeMap::new();
        for r in recs.iter().filter(|r| !r.refs.is_empty()) {
            *per_kind.entry(named_kind(&r.refs[0].sentence)).or_default() += 1;
        }
        assert_eq!(per_kind.len(), 3, "{split}: {per_kind:?}");
        let (lo, hi) = (per_kind.values().min(), per_kind.values().max());
        assert!(hi.unwrap() - lo.unwrap() <= 1, "{split}: {per_kind:?}");
        assert_eq!(
            split_report.refs,
            recs.iter().map(|r| r.refs.len()).sum::<usize>()
        );
        let ids: BTreeSet<&str> = recs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), count, "unique ids");
        for r in &recs {
            let img = image::open(layout.image_path(&r.img_file_name)).unwrap();
            assert_eq!((img.width(), img.height()), (64, 64), "{}", r.img_file_name);
            assert!(r.refs.len() <= cfg.max_artifacts);
            assert!(
                r.caption
                    .starts_with("Upon examining the image. I have found: ")
            );

            let g = Grounding::of(r);
            assert!(g.dropped.is_empty(), "{}: {:?}", r.id, g.dropped);
            assert_eq!(g.spans.len(), r.refs.len());
            if r.refs.is_empty() {
                assert!(r.caption.contains("no artifacts"), "{}", r.caption);
            } else {
                let bridge = "\nTo elaborate, I have found the following artifacts. ";
                let at = g.caption.find(bridge).expect("elaboration present");
                // Every phrase is grounded in the elaboration, followed by its explanation.
                for (span, k) in g.spans.iter().zip(g.ordered_refs()) {
                    assert!(span.start > at, "{}: phrase in the summary", r.id);
                    let after = &g.caption[span.end..];
                    assert!(after.starts_with(&format!(":{}", r.refs[k].explanation)));
                }
                assert_eq!(g.ordered_refs(), (0..r.refs.len()).collect::<Vec<_>>());
            }

            let l = labels.get(&r.img_file_name, &r.id).expect("labelled");
            contents.insert(l.content_type.expect("content type"));
            assert_eq!(l.categories.len(), r.refs.len(), "{}", r.id);
            // One kind per image, and every phrase names it in the generator's vocabulary.
            let image_kind = l.categories.first().copied().flatten();
            for (c, a) in l.categories.iter().zip(&r.refs) {
                assert_eq!(*c, image_kind, "{}: two kinds in one image", r.id);
                assert_eq!(named_kind(&a.sentence), *c, "{}: `{}`", r.id, a.sentence);
                categories.insert(c.expect("category"));
                assert!(a.bbox.is_none());
                assert!(!a.explanation.is_empty());
                periods += usize::from(a.sentence.ends_with('.'));
                multi += usize::from(a.segmentation.len() > 1);
                for poly in &a.segmentation {
                    assert!(poly.len() >= 6 && poly.len() % 2 == 0);
                    for &v in poly {
                        assert!((-1e-6..=64.0 + 1e-6).contains(&v), "{}: {v}", r.id);
                        overshoots += usize::from(v > 64.0);
                    }
                    areas.push(shoelace(poly));
                }
            }
        }
    }
    assert_eq!(categories, ArtifactCategory::ALL.into_iter().collect());
    assert_eq!(named_kind("The wing of the bird"), None);
    assert_eq!(
        named_kind("garbled WING."),
        Some(ArtifactCategory::Distortion)
    );
    assert_eq!(contents, ContentType::ALL.into_iter().collect());
    assert!(overshoots > 0, "some coordinates overshoot the border");
    assert!(periods > 0, "some phrases end with a period");
    assert!(multi > 0, "some refs have two polygons");
    areas.sort_by(f64::total_cmp);
    let (p10, p90, max) = (
        areas[areas.len() / 10],
        areas[areas.len() * 9 / 10],
        areas[areas.len() - 1],
    );
    // Polygon areas from tens of pixels (sized to show at the tiny CLIP's 32 px) to over 6% of
    // the 4096-pixel image (with one kind per image, seed 5's 120 images have fewer whole-part
    // distortions).
    assert!(
        p10 < 80.0 && p90 > 150.0 && max > 250.0,
        "polygon areas p10 {p10} p90 {p90} max {max}"
    );
    let fraction = report.splits[0].mean_artifact_fraction;
    assert!(
        (0.03..0.3).contains(&fraction),
        "artifact fraction {fraction}"
    );
}

fn shoelace(flat: &[f64]) -> f64 {
    let n = flat.len() / 2;
    let mut s = 0.0;
    for i in 0..n {
        let (x0, y0) = (flat[2 * i], flat[2 * i + 1]);
        let (x1, y1) = (
            flat[(2 * i + 2) % flat.len()],
            flat[(2 * i + 3) % flat.len()],
        );
        s += x0 * y1 - x1 * y0;
    }
    s.abs() / 2.0
}

#[test]
fn default_generation_fits_the_shipped_budget() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::env::var_os("LEGION_SYNTH_OUT").map(PathBuf::from);
    let root = out.as_deref().unwrap_or(dir.path());
    let cfg = SynthConfig::default();
    assert_eq!(
        (cfg.train_count, cfg.test_count, cfg.image_size),
        (160, 40, 64)
    );
    let report = generate(root, &cfg).unwrap();
    let on_disk: u64 = files(root).values().map(|b| b.len() as u64).sum();
    assert_eq!(on_disk, report.bytes_written);
    assert!(on_disk < 3_000_000, "{on_disk} bytes");
}

#[test]
fn bad_configurations_are_rejected_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for (cfg, field) in [
        (small().with_image_size(8), "image_size"),
        (small().with_clean_fraction(1.5), "clean_fraction"),
        (small().with_max_artifacts(0), "max_artifacts"),
    ] {
        let err = generate(dir.path(), &cfg).unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
}

#[test]
fn other_image_sizes_keep_the_invariants() {
    for size in [32u32, 128] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = small().with_image_size(size).with_test_count(4);
        let report = generate(dir.path(), &cfg).unwrap();
        assert!(report.splits[0].refs > 0);
        let (layout, recs) = records(dir.path(), "train");
        for r in &recs {
            let img = image::open(layout.image_path(&r.img_file_name)).unwrap();
            assert_eq!((img.width(), img.height()), (size, size));
            assert!(Grounding::of(r).dropped.is_empty(), "{}", r.id);
            for v in r.refs.iter().flat_map(|a| a.segmentation.iter().flatten()) {
                assert!((0.0..=f64::from(size) + 1e-6).contains(v), "{v}");
            }
        }
    }
}
