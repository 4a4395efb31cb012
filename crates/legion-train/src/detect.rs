//! `task = "detect"`: training LEGION's image-level real/fake head (`LegionForCls`: CLIP hidden
//! layer -2 CLS -> Linear -> ReLU -> Linear 2) with cross-entropy, labels real = 1, fake = 0.
//!
//! Data layout (UniversalFakeDetect / CNNDetection): every image under a folder named
//! `0_real` is real, under `1_fake` fake, at any depth below `<root>/<split>/` (e.g.
//! `<root>/train/progan/car/1_fake/x.png`); the group of an image is its first folder below
//! the split. The recipe's optimiser, schedule, clipping, checkpoints, exact resume and NaN
//! guard are the segmentation run's; the tower is frozen unless `trainable.full`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;
use serde::Serialize;

use legion_data::image_io::decode_rgb;
use legion_data::preprocess::{ClipPreprocessConfig, clip_preprocess};
use legion_model::bundle::DetectorBundle;
use legion_model::detection_head::{DetectionHeadConfig, FAKE_LABEL, REAL_LABEL};
use legion_model::legion::{LegionClsConfig, LegionForCls};

use crate::TrainError;
use crate::checkpoint::{TrainerState, latest_checkpoint, load_checkpoint, save_checkpoint};
use crate::config::TrainConfig;
use crate::grads::clip_global_norm;
use crate::rng::EpochSampler;
use crate::schedule::warmup_decay_lr;
use crate::trainable::count_trainable;
use crate::trainer::{StepRecord, TrainObserver, TrainSummary};

/// One labelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImage {
    /// File.
    pub path: PathBuf,
    /// [`REAL_LABEL`] or [`FAKE_LABEL`].
    pub label: i64,
    /// First folder below the split (the generator), or `""`.
    pub group: String,
}

/// Lists the images of `<root>/<split>/` by their `0_real` / `1_fake` folders, sorted.
///
/// # Errors
/// [`TrainError::Io`] when the folder cannot be read or holds no labelled image.
pub fn list_labelled_images(root: &Path, split: &str) -> Result<Vec<LabelledImage>, TrainError> {
    let base = root.join(split);
    let mut found = Vec::new();
    let mut stack = vec![base.clone()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| TrainError::Io {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        for entry in entries {
            let path = entry
                .map_err(|e| TrainError::Io {
                    path: dir.clone(),
                    message: e.to_string(),
                })?
                .path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let is_image = path.extension().is_some_and(|e| {
                ["png", "jpg", "jpeg", "webp"]
                    .contains(&e.to_string_lossy().to_lowercase().as_str())
            });
            let label = match dir.file_name().and_then(|n| n.to_str()) {
                Some("0_real") => REAL_LABEL,
                Some("1_fake") => FAKE_LABEL,
                _ => continue,
            };
            if is_image {
                let group = path
                    .strip_prefix(&base)
                    .ok()
                    .and_then(|rel| rel.components().next())
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .filter(|g| g != "0_real" && g != "1_fake")
                    .unwrap_or_default();
                found.push(LabelledImage { path, label, group });
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    if found.is_empty() {
        return Err(TrainError::Io {
            path: base,
            message: "no image under a 0_real/ or 1_fake/ folder".into(),
        });
    }
    Ok(found)
}

/// The classifier config of a run's preset.
///
/// # Errors
/// [`TrainError::Config`] for an unknown preset.
pub fn detector_config(preset: &str) -> Result<LegionClsConfig, TrainError> {
    if preset == "legion-7b" {
        return Ok(LegionClsConfig::legion_cls());
    }
    // The head on the preset's CLIP tower, hidden width twice the tower's (as LEGION's).
    let clip = crate::trainer::preset_config(preset)?.clip;
    let width = clip.hidden_size;
    Ok(LegionClsConfig::new(
        clip,
        DetectionHeadConfig::new(width, 2 * width),
    ))
}

/// Accuracy of a detector on a split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectEval {
    /// Images.
    pub images: usize,
    /// Accuracy x100.
    pub accuracy: f64,
    /// Mean of the real and fake accuracies x100.
    pub balanced_accuracy: f64,
}

fn clip_batch(
    images: &[LabelledImage],
    config: &ClipPreprocessConfig,
    device: &Device,
) -> Result<(Tensor<4>, Tensor<1, Int>), TrainError> {
    let inputs: Vec<_> = images
        .par_iter()
        .map(|item| {
            let rgb = decode_rgb(&item.path).map_err(|e| TrainError::Io {
                path: item.path.clone(),
                message: e.to_string(),
            })?;
            clip_preprocess(&rgb, config).map_err(|e| TrainError::Io {
                path: item.path.clone(),
                message: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    let pixels = Tensor::stack(inputs.iter().map(|c| c.to_tensor(device)).collect(), 0);
    let labels: Vec<i64> = images.iter().map(|i| i.label).collect();
    let n = labels.len();
    Ok((
        pixels,
        Tensor::from_data(TensorData::new(labels, [n]), device),
    ))
}

/// Evaluates `model` (plain device) on `images`.
///
/// # Errors
/// [`TrainError`] when an image cannot be read.
pub fn evaluate_detector(
    model: &LegionForCls,
    images: &[LabelledImage],
    clip: &ClipPreprocessConfig,
) -> Result<DetectEval, TrainError> {
    let device = model.prediction_head.fc1.weight.device();
    let (mut correct, mut real_ok, mut real_n, mut fake_ok, mut fake_n) = (0, 0, 0, 0, 0);
    for chunk in images.chunks(32) {
        let (pixels, _) = clip_batch(chunk, clip, &device)?;
        let logits = model.forward(pixels)?;
        let predicted: Vec<i64> = logits
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .expect("int predictions");
        for (item, p) in chunk.iter().zip(predicted) {
            let ok = usize::from(p == item.label);
            correct += ok;
            if item.label == REAL_LABEL {
                real_ok += ok;
                real_n += 1;
            } else {
                fake_ok += ok;
                fake_n += 1;
            }
        }
    }
    let rate = |ok: usize, n: usize| {
        if n == 0 {
            0.0
        } else {
            100.0 * ok as f64 / n as f64
        }
    };
    let classes = usize::from(real_n > 0) + usize::from(fake_n > 0);
    Ok(DetectEval {
        images: images.len(),
        accuracy: rate(correct, images.len()),
        balanced_accuracy: (rate(real_ok, real_n) + rate(fake_ok, fake_n)) / classes.max(1) as f64,
    })
}

/// Trains the real/fake head; the final model is a [`DetectorBundle`] in `<out>/final`.
///
/// # Errors
/// As [`crate::train`].
pub fn train_detector(
    config: &TrainConfig,
    resume: bool,
    observer: &dyn TrainObserver,
) -> Result<TrainSummary, TrainError> {
    let out_dir = config.run.out_dir.clone();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| TrainError::Io {
            path: path.clone(),
            message: e.to_string(),
        }
    };
    std::fs::create_dir_all(&out_dir).map_err(io(&out_dir))?;
    let config_toml = config.to_toml();
    let device = config.run.devices[0]
        .parse::<legion_backend::DeviceSpec>()?
        .device()?;
    let autodiff = device.clone().autodiff();
    let cls_config = match &config.model.init {
        Some(init) => DetectorBundle::load(init, &device)?.config,
        None => detector_config(&config.model.preset)?,
    };
    let size = cls_config.clip.image_size as u32;
    let clip = ClipPreprocessConfig::new(size, size);
    let train_images = list_labelled_images(&config.data.root, &config.data.train_split)?;
    let val_images = list_labelled_images(&config.data.root, &config.data.val_split)?;

    autodiff.seed(config.run.seed);
    let mut model = match &config.model.init {
        Some(init) => DetectorBundle::load(init, &autodiff)?.model,
        None => cls_config.init(&autodiff)?,
    };
    if !config.trainable.full {
        model.vision_tower = model.vision_tower.no_grad();
    }
    let mut optim = crate::trainer::optimizer(config);
    let checkpoints = out_dir.join("checkpoints");
    let mut state = TrainerState {
        config_toml: config_toml.clone(),
        ..TrainerState::default()
    };
    if resume && let Some(dir) = latest_checkpoint(&checkpoints)? {
        let (m, o, s) = load_checkpoint(&dir, model, optim)?;
        if !config.resumable_from(&s.config_toml) {
            return Err(TrainError::Config {
                source_name: dir.join("train_config.toml").display().to_string(),
                message: "the checkpoint was written with another config".into(),
            });
        }
        (model, optim, state) = (m, o, s);
        observer.on_message(&format!(
            "resumed from {} (step {})",
            dir.display(),
            state.step
        ));
    }
    let before = if config.run.evaluate && state.step == 0 {
        Some(evaluate_detector(&model.valid(), &val_images, &clip)?)
    } else {
        None
    };
    if let Some(b) = &before {
        observer.on_message(&format!("untrained: accuracy {:.2}", b.accuracy));
    }
    let loss_fn = CrossEntropyLossConfig::new().init(&autodiff);
    let mut sampler = EpochSampler::new(train_images.len(), config.run.seed);
    let per_step = config.run.batch_size as u64;
    let mut metrics = crate::trainer::MetricsLog::open(&out_dir, state.step)?;
    let session = Instant::now();
    let first_step = state.step;
    observer.on_start(first_step, config.run.steps);
    let mut last_checkpoint = "(none)".to_string();
    while state.step < config.run.steps {
        let started = Instant::now();
        let lr = warmup_decay_lr(
            config.optim.lr,
            state.step,
            config.optim.warmup_steps,
            config.decay_steps(),
        );
        let batch: Vec<LabelledImage> = (0..per_step)
            .map(|i| train_images[sampler.item(state.step * per_step + i)].clone())
            .collect();
        let (pixels, labels) = clip_batch(&batch, &clip, &autodiff)?;
        let logits = model.forward(pixels)?;
        let loss = loss_fn.forward(logits, labels);
        let loss_value = loss.clone().into_scalar::<f64>();
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let grad_norm = clip_global_norm(&model, &mut grads, config.optim.grad_clip);
        let finite = loss_value.is_finite() && grad_norm.is_finite();
        if finite {
            model = optim.step(lr, model, grads);
            state.bad_steps_in_a_row = 0;
        } else {
            state.skipped_steps += 1;
            state.bad_steps_in_a_row += 1;
            if state.bad_steps_in_a_row >= config.run.max_bad_steps {
                return Err(TrainError::Diverged {
                    step: state.step + 1,
                    count: state.bad_steps_in_a_row,
                    detail: format!("loss {loss_value}, gradient norm {grad_norm}"),
                    last_checkpoint,
                });
            }
        }
        state.step += 1;
        let seconds = started.elapsed().as_secs_f64();
        state.elapsed_seconds += seconds;
        let record = StepRecord {
            step: state.step,
            total_steps: config.run.steps,
            loss: loss_value,
            ce: loss_value,
            bce: 0.0,
            dice: 0.0,
            lr,
            grad_norm,
            skipped: !finite,
            seconds,
        };
        metrics.write(&serde_json::json!({"train": &record}))?;
        observer.on_step(&record);
        if config.checkpoint_due(state.step) {
            let path = save_checkpoint(
                &checkpoints,
                &model,
                &optim,
                &state,
                config.run.keep_checkpoints,
            )?;
            last_checkpoint = path.display().to_string();
        }
    }
    crate::curve::write_curves(&metrics.path, &out_dir)?;
    let parameters = count_trainable(&model);
    let trained = model.valid();
    let after = if config.run.evaluate {
        Some(evaluate_detector(&trained, &val_images, &clip)?)
    } else {
        None
    };
    if let (Some(b), Some(a)) = (&before, &after) {
        observer.on_message(&format!(
            "held-out accuracy: untrained {:.2}, trained {:.2} (balanced {:.2}; {} images)",
            b.accuracy, a.accuracy, a.balanced_accuracy, a.images
        ));
    }
    let final_dir = out_dir.join("final");
    DetectorBundle {
        config: cls_config,
        model: trained,
        source: "legion train (task detect)".into(),
    }
    .save(&final_dir)?;
    let session_seconds = session.elapsed().as_secs_f64();
    let summary = TrainSummary {
        out_dir: out_dir.clone(),
        final_model: final_dir,
        steps: state.step,
        skipped_steps: state.skipped_steps,
        dropped_samples: 0,
        train_seconds: state.elapsed_seconds,
        steps_per_second: (state.step - first_step) as f64 / session_seconds.max(1e-9),
        parameters,
        before: None,
        after: None,
        detect_before: before,
        detect_after: after,
    };
    let path = out_dir.join("summary.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&summary).expect("serialisable"),
    )
    .map_err(io(&path))?;
    Ok(summary)
}
