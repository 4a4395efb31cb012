//! Parity of the global image encoder side (CLIP vision tower, mm_projector, LegionForCls head)
//! with the PyTorch reference (transformers `CLIPVisionModel`, `nn.Sequential` heads).
//!
//! Fixtures under `tests/fixtures/clip/` are made by `scripts/fixtures/clip.py`
//! (`/work/venv/bin/python scripts/fixtures/clip.py` from the repository root); its docstring
//! lists every file. Weights go through `weights::load_safetensors` with the crate's remap tables.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use legion_backend::test_device;
use legion_model::clip_vision::{
    ClipCheckpointLayout, ClipVisionConfig, ClipVisionError, HF_CLIP_REMAP, load_clip_vision,
};
use legion_model::detection_head::{DetectionHead, DetectionHeadConfig, load_detection_head};
use legion_model::projector::{MlpProjectorConfig, load_projector};
use legion_model::weights::{Allowances, WeightsError, load_safetensors};

const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clip")
        .join(name)
}

fn read_npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<f32>().unwrap())
}

fn tensor<const D: usize>(name: &str, device: &Device) -> Tensor<D> {
    let (shape, values) = read_npy(name);
    assert_eq!(shape.len(), D, "{name} rank");
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Max |a - b| after checking the shapes agree.
fn max_abs_diff<const D: usize>(what: &str, got: Tensor<D>, want: Tensor<D>) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let err = (got - want).abs().max().into_scalar::<f32>();
    eprintln!("{what}: max abs error {err:.3e}");
    err
}

/// The tiny HF tower of the fixture: image 42, patch 14, hidden 32, 3 layers, 4 heads.
fn hf_tiny_config() -> ClipVisionConfig {
    ClipVisionConfig::tiny()
}

/// The tower inside the GLaMM-layout fixture: image 28, patch 14, hidden 16, 2 layers, 2 heads.
fn glamm_tiny_config() -> ClipVisionConfig {
    ClipVisionConfig::new(28, 14, 16, 2, 2, 32)
}

#[test]
fn hf_clip_vision_matches_transformers() {
    let device = test_device();
    let model = load_clip_vision(
        hf_tiny_config().init(&device),
        &fixture("clip_vision_hf.safetensors"),
        ClipCheckpointLayout::HfClip,
    )
    .unwrap();
    let pixels = tensor::<4>("clip_hf_pixels.npy", &device);
    let reference = tensor::<4>("clip_hf_hidden_states.npy", &device); // [L+1, B, N+1, C]
    let [num_states, batch, tokens, hidden] = reference.dims();
    assert_eq!(num_states, model.num_layers() + 1);
    let reference_state = |i: usize| {
        reference
            .clone()
            .narrow(0, i, 1)
            .reshape([batch, tokens, hidden])
    };

    // Every hidden state, from one pass.
    let states = model.forward_hidden_states(pixels.clone()).unwrap();
    assert_eq!(states.len(), num_states);
    for (i, state) in states.into_iter().enumerate() {
        let err = max_abs_diff(&format!("hidden_states[{i}]"), state, reference_state(i));
        assert!(err <= TOLERANCE, "hidden_states[{i}]: {err}");
    }

    // LEGION's features: hidden_states[-2], patches and CLS, computing only the layers needed.
    let features = model.forward_features(pixels.clone(), -2).unwrap();
    let layer = reference_state(num_states - 2);
    let err = max_abs_diff(
        "hidden_states[-2] patches",
        features.patches,
        layer.clone().narrow(1, 1, tokens - 1),
    );
    assert!(err <= TOLERANCE);
    let err = max_abs_diff(
        "hidden_states[-2] CLS",
        features.cls,
        layer.narrow(1, 0, 1).reshape([batch, hidden]),
    );
    assert!(err <= TOLERANCE);

    // Positive and negative indices agree.
    for select in [0isize, 1, 3] {
        let a = model.forward_layer(pixels.clone(), select).unwrap();
        let b = model
            .forward_layer(pixels.clone(), select - num_states as isize)
            .unwrap();
        assert_eq!(
            max_abs_diff(&format!("layer {select} vs negative"), a, b),
            0.0
        );
    }

    // Full forward: last hidden state and the post_layernorm-pooled CLS.
    let out = model.forward(pixels).unwrap();
    let err = max_abs_diff(
        "last_hidden_state",
        out.last_hidden_state,
        reference_state(num_states - 1),
    );
    assert!(err <= TOLERANCE);
    let err = max_abs_diff(
        "pooler_output",
        out.pooled,
        tensor::<2>("clip_hf_pooled.npy", &device),
    );
    assert!(err <= TOLERANCE);
}

#[test]
fn glamm_layout_tower_projector_and_head_match_pytorch() {
    let device = test_device();
    let path = fixture("legion_cls_glamm.safetensors");
    let clip = load_clip_vision(
        glamm_tiny_config().init(&device),
        &path,
        ClipCheckpointLayout::Glamm,
    )
    .unwrap();
    let projector = load_projector(MlpProjectorConfig::tiny().init(&device), &path).unwrap();
    let head = load_detection_head(DetectionHeadConfig::tiny().init(&device), &path).unwrap();

    let features = clip
        .forward_features(tensor::<4>("glamm_pixels.npy", &device), -2)
        .unwrap();
    let err = max_abs_diff(
        "glamm patches",
        features.patches.clone(),
        tensor::<3>("glamm_features.npy", &device),
    );
    assert!(err <= TOLERANCE);
    let err = max_abs_diff(
        "glamm CLS",
        features.cls.clone(),
        tensor::<2>("glamm_cls.npy", &device),
    );
    assert!(err <= TOLERANCE);

    // End to end from our own features, so errors would compound, not hide.
    let projected = projector.forward(features.patches);
    let err = max_abs_diff(
        "mm_projector",
        projected,
        tensor::<3>("glamm_projected.npy", &device),
    );
    assert!(err <= TOLERANCE);
    let logits = head.forward(features.cls);
    let want = tensor::<2>("glamm_logits.npy", &device);
    let err = max_abs_diff("prediction_head logits", logits.clone(), want.clone());
    assert!(err <= TOLERANCE);
    assert_eq!(
        DetectionHead::predict(logits)
            .into_data()
            .try_to_vec_as::<i64>()
            .unwrap(),
        DetectionHead::predict(want)
            .into_data()
            .try_to_vec_as::<i64>()
            .unwrap()
    );
}

/// Casts every float parameter, as a bf16 checkpoint loads (burn-store keeps the file's dtype).
struct CastParams(FloatDType);

impl ModuleMapper for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

#[test]
fn bf16_weights_run_on_f32_pixels_like_llava() {
    // On the CPU whatever LEGION_TEST_DEVICE says: WGSL has no bf16 (wgpu cannot run this).
    // LLaVA's CLIPVisionTower casts images to the tower's dtype and features back.
    let device = Device::flex();
    let model = load_clip_vision(
        hf_tiny_config().init(&device),
        &fixture("clip_vision_hf.safetensors"),
        ClipCheckpointLayout::HfClip,
    )
    .unwrap()
    .map(&mut CastParams(FloatDType::BF16));
    let pixels = tensor::<4>("clip_hf_pixels.npy", &device);
    let features = model.forward_features(pixels, -2).unwrap();
    assert_eq!(features.patches.dtype(), burn::tensor::DType::F32);
    let reference = tensor::<4>("clip_hf_hidden_states.npy", &device);
    let [num_states, batch, tokens, hidden] = reference.dims();
    let layer = reference
        .narrow(0, num_states - 2, 1)
        .reshape([batch, tokens, hidden]);
    let want = layer.narrow(1, 1, tokens - 1);
    let scale = want.clone().abs().max().into_scalar::<f32>();
    let err = max_abs_diff(
        "bf16 tower, hidden_states[-2] patches",
        features.patches,
        want,
    );
    // bf16 keeps 8 mantissa bits: a few percent of the activation range after 2 layers.
    eprintln!(
        "  relative to max |activation| {scale:.3}: {:.3e}",
        err / scale
    );
    assert!(err / scale <= 5e-2, "bf16 error {err} vs scale {scale}");
}

#[test]
fn missing_and_extra_tensors_fail_listing_both() {
    let device = test_device();
    // The fixture's 1-layer tower: image 4, patch 2, hidden 8, 2 heads, intermediate 16.
    let model = ClipVisionConfig::new(4, 2, 8, 1, 2, 16).init(&device);
    let path = fixture("clip_vision_corrupt.safetensors");
    let err = load_safetensors(model, &path, HF_CLIP_REMAP, &Allowances::default()).unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    match err {
        WeightsError::Mismatch {
            missing,
            unexpected,
            errors,
            ..
        } => {
            assert_eq!(missing, vec!["layers.0.mlp.fc2.bias".to_string()]);
            assert_eq!(unexpected, vec!["layers.0.mlp.fc3.weight".to_string()]);
            assert!(errors.is_empty(), "{errors:?}");
        }
        other => panic!("expected a mismatch, got {other}"),
    }
    assert!(
        message.contains("layers.0.mlp.fc2.bias") && message.contains("layers.0.mlp.fc3.weight")
    );
}

#[test]
fn wrong_layout_or_config_is_an_error() {
    let device = test_device();
    // A GLaMM file read as HF: every tower tensor missing.
    let err = load_clip_vision(
        glamm_tiny_config().init(&device),
        &fixture("legion_cls_glamm.safetensors"),
        ClipCheckpointLayout::HfClip,
    )
    .unwrap_err();
    match err {
        WeightsError::Mismatch { missing, .. } => {
            assert!(missing.iter().any(|m| m == "pre_layernorm.gamma"))
        }
        other => panic!("expected a mismatch, got {other}"),
    }
    // Right layout, wrong width: shape errors, not a silent load.
    let err = load_clip_vision(
        ClipVisionConfig::new(28, 14, 24, 2, 2, 32).init(&device),
        &fixture("legion_cls_glamm.safetensors"),
        ClipCheckpointLayout::Glamm,
    )
    .unwrap_err();
    match err {
        WeightsError::Mismatch { errors, .. } => assert!(!errors.is_empty()),
        other => panic!("expected a mismatch, got {other}"),
    }
}

#[test]
fn shapes_at_random_configs() {
    let device = test_device();
    device.seed(11);
    // (image, patch, hidden, layers, heads, intermediate, batch)
    for (image, patch, hidden, layers, heads, inter, batch) in [
        (28, 14, 16, 2, 2, 32, 1),
        (30, 6, 24, 3, 3, 40, 3),
        (8, 4, 12, 1, 4, 8, 2),
    ] {
        let config = ClipVisionConfig::new(image, patch, hidden, layers, heads, inter);
        let model = config.init(&device);
        let pixels = Tensor::<4>::random(
            [batch, 3, image, image],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let n = config.num_patches();
        let states = model.forward_hidden_states(pixels.clone()).unwrap();
        assert_eq!(states.len(), layers + 1);
        assert!(states.iter().all(|s| s.dims() == [batch, n + 1, hidden]));
        let features = model.forward_features(pixels.clone(), -2).unwrap();
        assert_eq!(features.patches.dims(), [batch, n, hidden]);
        assert_eq!(features.cls.dims(), [batch, hidden]);
        // The selected layer equals the matching full hidden state (early stop is exact).
        let diff = max_abs_diff(
            "early stop",
            model.forward_layer(pixels.clone(), -2).unwrap(),
            states[layers - 1].clone(),
        );
        assert_eq!(diff, 0.0);
        let out = model.forward(pixels.clone()).unwrap();
        assert_eq!(out.pooled.dims(), [batch, hidden]);

        let projector = MlpProjectorConfig::new(hidden, 2 * hidden + 1).init(&device);
        assert_eq!(
            projector.forward(features.patches).dims(),
            [batch, n, 2 * hidden + 1]
        );
        let head = DetectionHeadConfig::new(hidden, 2 * hidden).init(&device);
        assert_eq!(head.forward(features.cls).dims(), [batch, 2]);

        // Bad input is an error, not a panic.
        let wrong = Tensor::<4>::zeros([batch, 3, image + patch, image + patch], &device);
        assert!(matches!(
            model.forward_features(wrong, -2),
            Err(ClipVisionError::InputShape { .. })
        ));
        assert!(matches!(
            model.forward_features(pixels, layers as isize + 1),
            Err(ClipVisionError::SelectLayer { .. })
        ));
    }
}

#[test]
fn presets_match_the_reference_sizes() {
    let clip = ClipVisionConfig::clip_vit_l_336();
    assert_eq!(clip.num_patches(), 576);
    assert_eq!(
        (
            clip.hidden_size,
            clip.num_layers,
            clip.num_heads,
            clip.intermediate_size
        ),
        (1024, 24, 16, 4096)
    );
    assert_eq!(clip.layer_norm_eps, 1e-5);
    let projector = MlpProjectorConfig::llava_mlp2x_gelu();
    assert_eq!((projector.input_size, projector.hidden_size), (1024, 4096));
    let head = DetectionHeadConfig::legion_cls();
    assert_eq!(
        (head.input_size, head.hidden_size, head.num_classes),
        (1024, 2048, 2)
    );
}
