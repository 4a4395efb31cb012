//! Load + rasterise + preprocess throughput of the SynthScars pipeline.
//!
//! The same work as the reference Python path (`scripts/bench_data_pipeline.py` times it with
//! PIL + pycocotools + numpy + the reference processors, on the same images, and prints the
//! ratio): decode the image, rasterise every ref's polygons (pycocotools convention), CLIP 336
//! preprocessing and SAM 1024 preprocessing, for every record of a split.
//!
//! The dataset is `$LEGION_BENCH_DATA` (a SynthScars-layout root, split `train`) or, by default,
//! a synthetic one generated at 512 px into a temporary folder.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use legion_data::{OpenOptions, SampleConfig, SynthScarsSplit, preprocess};
use rayon::prelude::*;

fn dataset_root() -> (PathBuf, Option<tempfile::TempDir>) {
    if let Ok(root) = std::env::var("LEGION_BENCH_DATA") {
        return (PathBuf::from(root), None);
    }
    let dir = tempfile::tempdir().expect("temporary folder");
    let cfg = legion_data::synth::SynthConfig {
        seed: 7,
        train_count: 32,
        test_count: 0,
        image_size: 512,
        ..Default::default()
    };
    legion_data::synth::generate(dir.path(), &cfg).expect("generate benchmark data");
    (dir.path().to_path_buf(), Some(dir))
}

fn pipeline(c: &mut Criterion) {
    let (root, _guard) = dataset_root();
    let split = Arc::new(
        SynthScarsSplit::open(&root, "train", &OpenOptions::default()).expect("open split"),
    );
    let config = SampleConfig::legion_inference();
    let indices: Vec<usize> = (0..split.len()).collect();
    let mut group = c.benchmark_group("data_pipeline");
    group.sample_size(10);
    group.throughput(Throughput::Elements(indices.len() as u64));
    group.bench_function("load_rasterise_preprocess_parallel", |b| {
        b.iter(|| {
            let samples = split.load_many(&indices, &config);
            assert!(samples.iter().all(|s| s.is_ok()));
            samples
        })
    });
    // The same parallel work, each sample dropped as soon as it is made, as the Python pool
    // workers of `scripts/bench_data_pipeline.py` do (they return only shapes). `load_many`
    // above keeps all samples (~13 MB each with the 1024 SAM canvas), so it also measures
    // fresh-memory page faults.
    group.bench_function("load_rasterise_preprocess_parallel_discard", |b| {
        b.iter(|| {
            indices
                .par_iter()
                .map(|&i| split.load(i, &config).map(|s| s.sam.resized_hw))
                .filter(Result::is_ok)
                .count()
        })
    });
    group.bench_function("load_rasterise_preprocess_sequential", |b| {
        b.iter(|| {
            for &i in &indices {
                black_box(split.load(i, &config).expect("sample"));
            }
        })
    });
    group.finish();

    // Where one image's time goes, one stage after the other on the same records (each stage
    // is still parallel inside where the pipeline is: CLIP and SAM resampling rows).
    let images: Vec<_> = indices
        .iter()
        .map(|&i| split.decode_image(i).expect("decode"))
        .collect();
    let mut stages = c.benchmark_group("data_pipeline_stages");
    stages.sample_size(10);
    stages.throughput(Throughput::Elements(indices.len() as u64));
    stages.bench_function("decode", |b| {
        b.iter(|| {
            for &i in &indices {
                black_box(split.decode_image(i).expect("decode"));
            }
        })
    });
    stages.bench_function("rasterise", |b| {
        b.iter(|| {
            indices
                .iter()
                .map(|&i| split.training_masks(i).expect("masks").len())
                .sum::<usize>()
        })
    });
    stages.bench_function("clip_preprocess", |b| {
        b.iter(|| {
            for img in &images {
                black_box(preprocess::clip_preprocess(img, &config.clip).expect("clip"));
            }
        })
    });
    stages.bench_function("sam_preprocess", |b| {
        b.iter(|| {
            for img in &images {
                black_box(preprocess::sam_preprocess(img, &config.sam).expect("sam"));
            }
        })
    });
    stages.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
