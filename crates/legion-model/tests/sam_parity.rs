//! Parity of legion-model's SAM with the `segment_anything` package on a tiny random SAM.
//!
//! Fixtures: made by `scripts/fixtures/sam.py` (`/work/venv/bin/python scripts/fixtures/sam.py`)
//! into `tests/fixtures/sam/`: the weights in the original SAM checkpoint naming
//! (`sam_tiny.safetensors`, loaded through the real strict loader) and the inputs/outputs of
//! every component as `.npy`. Every comparison prints its max abs error (`--nocapture`) and
//! must stay within 1e-4.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use legion_backend::test_device;
use legion_model::sam::{
    SAM_REMAP, Sam, SamConfig, SamImageEncoderConfig, SamPrompts, postprocess_masks,
    resize_bilinear, resize_bilinear_matmul,
};
use legion_model::weights::{Allowances, WeightsError, load_safetensors};

const TOLERANCE: f32 = 1e-4;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam")
}

fn weights_path() -> PathBuf {
    fixture_dir().join("sam_tiny.safetensors")
}

fn read_npy(name: &str) -> npyz::NpyFile<std::io::BufReader<std::fs::File>> {
    let path = fixture_dir().join(format!("{name}.npy"));
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fixtures/sam.py)", path.display()));
    npyz::NpyFile::new(std::io::BufReader::new(file)).expect("valid npy")
}

fn npy<const D: usize>(name: &str, device: &Device) -> Tensor<D> {
    let npy = read_npy(name);
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    assert_eq!(shape.len(), D, "{name}: rank");
    let data: Vec<f32> = npy.into_vec().expect("f32 data");
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn npy_int<const D: usize>(name: &str, device: &Device) -> Tensor<D, Int> {
    let npy = read_npy(name);
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let data: Vec<i64> = npy.into_vec().expect("i64 data");
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// Max abs difference, after checking the shapes agree.
fn max_abs_error<const D: usize>(got: Tensor<D>, want: Tensor<D>) -> f32 {
    assert_eq!(got.dims(), want.dims(), "shape mismatch");
    let got = got.into_data().try_to_vec::<f32>().expect("f32");
    let want = want.into_data().try_to_vec::<f32>().expect("f32");
    got.iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn check<const D: usize>(what: &str, got: Tensor<D>, want: Tensor<D>) -> f32 {
    let want_scale = want.clone().abs().max().into_scalar::<f32>();
    let err = max_abs_error(got, want);
    println!("sam parity {what}: max abs error {err:.3e} (max |ref| {want_scale:.3})");
    assert!(
        err <= TOLERANCE,
        "{what}: max abs error {err} > {TOLERANCE}"
    );
    err
}

fn load_tiny(device: &Device) -> Sam {
    Sam::load(&SamConfig::tiny(), &weights_path(), device).expect("tiny SAM loads strictly")
}

#[test]
fn image_encoder_matches_reference() {
    let device = test_device();
    let sam = load_tiny(&device);
    let out = sam.image_encoder.forward(npy("encoder_in", &device));
    check("image_encoder", out, npy("encoder_out", &device));
}

#[test]
fn image_encoder_interpolates_rel_pos_like_reference() {
    // No absolute position embedding, 40 px input: windows pad 5 -> 6 and the global block's
    // 15-row relative tables are linearly resized to 9 rows.
    let device = test_device();
    let config = SamImageEncoderConfig::tiny().with_use_abs_pos(false);
    let mut remaps = SAM_REMAP.to_vec();
    remaps.push((r"^image_encoder\.", ""));
    let allow = Allowances {
        missing: Vec::new(),
        unexpected: vec![
            regex_lite::Regex::new(r"^(prompt_encoder|mask_decoder)\.").unwrap(),
            regex_lite::Regex::new(r"^pos_embed$").unwrap(),
        ],
    };
    let encoder = load_safetensors(config.init(&device), &weights_path(), &remaps, &allow)
        .expect("encoder loads");
    let out = encoder.forward(npy("encoder_nopos_in", &device));
    check(
        "image_encoder rel-pos interpolation",
        out,
        npy("encoder_nopos_out", &device),
    );
}

#[test]
fn prompt_encoder_matches_reference() {
    let device = test_device();
    let pe = load_tiny(&device).prompt_encoder;

    check(
        "prompt_encoder dense_pe",
        pe.get_dense_pe(),
        npy("dense_pe", &device),
    );

    let points = Some((
        npy("points_coords", &device),
        npy_int("points_labels", &device),
    ));
    let (sparse, dense) = pe.forward(SamPrompts {
        points,
        ..SamPrompts::default()
    });
    check(
        "prompt_encoder points (+padding point)",
        sparse,
        npy("points_sparse", &device),
    );
    check(
        "prompt_encoder no-mask dense",
        dense,
        npy("no_mask_dense_2", &device),
    );

    let points = Some((npy("pb_coords", &device), npy_int("pb_labels", &device)));
    let boxes = Some(npy("pb_boxes", &device));
    let (sparse, _) = pe.forward(SamPrompts {
        points,
        boxes,
        ..SamPrompts::default()
    });
    check(
        "prompt_encoder points+boxes",
        sparse,
        npy("pb_sparse", &device),
    );

    let boxes = Some(npy("pb_boxes", &device));
    let text_embeds = Some(npy("bt_text", &device));
    let (sparse, _) = pe.forward(SamPrompts {
        boxes,
        text_embeds,
        ..SamPrompts::default()
    });
    check(
        "prompt_encoder boxes+text (GLaMM)",
        sparse,
        npy("bt_sparse", &device),
    );

    let masks = Some(npy("mask_in", &device));
    let (sparse, dense) = pe.forward(SamPrompts {
        masks,
        ..SamPrompts::default()
    });
    assert_eq!(
        sparse.dims(),
        [2, 0, 16],
        "a mask-only prompt has no sparse tokens"
    );
    check(
        "prompt_encoder mask downscaling",
        dense,
        npy("mask_dense", &device),
    );
}

#[test]
fn two_way_transformer_matches_reference() {
    let device = test_device();
    let sam = load_tiny(&device);
    let (queries, keys) = sam.mask_decoder.transformer.forward(
        npy("tr_image", &device),
        npy("tr_pe", &device),
        npy("tr_points", &device),
    );
    check(
        "two_way_transformer queries",
        queries,
        npy("tr_queries", &device),
    );
    check("two_way_transformer keys", keys, npy("tr_keys", &device));
}

#[test]
fn mask_decoder_matches_reference() {
    let device = test_device();
    let sam = load_tiny(&device);
    let points = Some((
        npy("points_coords", &device),
        npy_int("points_labels", &device),
    ));
    let (sparse, _) = sam.prompt_encoder.forward(SamPrompts {
        points,
        ..SamPrompts::default()
    });
    let dense: Tensor<4> = npy("mask_dense", &device);
    for (multimask, tag) in [(false, "single"), (true, "multi")] {
        let (masks, iou) = sam.mask_decoder.forward(
            npy("encoder_out", &device),
            sam.prompt_encoder.get_dense_pe(),
            sparse.clone(),
            dense.clone(),
            multimask,
        );
        check(
            &format!("mask_decoder {tag} masks"),
            masks,
            npy(&format!("dec_{tag}_masks"), &device),
        );
        check(
            &format!("mask_decoder {tag} iou"),
            iou,
            npy(&format!("dec_{tag}_iou"), &device),
        );
    }
}

#[test]
fn postprocess_matches_reference() {
    let device = test_device();
    let out = postprocess_masks(npy("post_in", &device), 64, [48, 64], [37, 50]).unwrap();
    check("postprocess_masks", out, npy("post_out", &device));
    assert!(postprocess_masks(npy("post_in", &device), 64, [65, 64], [37, 50]).is_err());
    assert!(postprocess_masks(npy("post_in", &device), 64, [48, 64], [0, 50]).is_err());
}

/// Values and input gradients of SAM's bilinear resizing (`scripts/fixtures/bilinear.py`):
/// a resize alone (rows up, columns down) and the whole `postprocess_masks` (up, crop, up),
/// as `d sum(out * w) / dx` on an autodiff device, for both forms: what `resize_bilinear`
/// picks on `device` (burn's `interpolate` on the CPU) and the matmul form the CubeCL
/// backends use (they have no bilinear `interpolate` backward).
fn check_bilinear_values_and_gradients(device: &Device) {
    let matmul_postprocess = |x: Tensor<4>| {
        let [batch, channels, _, _] = x.dims();
        let x = resize_bilinear_matmul(x, [64, 64]).slice([0..batch, 0..channels, 0..40, 0..64]);
        resize_bilinear_matmul(x, [50, 80])
    };
    let cases: [(&str, &str, &dyn Fn(Tensor<4>) -> Tensor<4>); 4] = [
        ("bilinear", "resize_bilinear", &|x| {
            resize_bilinear(x, [13, 4])
        }),
        ("bilinear", "matmul form", &|x| {
            resize_bilinear_matmul(x, [13, 4])
        }),
        ("postprocess", "postprocess_masks", &|x| {
            postprocess_masks(x, 64, [40, 64], [50, 80]).unwrap()
        }),
        ("postprocess", "matmul form", &matmul_postprocess),
    ];
    for (name, form, resize) in cases {
        let x = npy::<4>(&format!("{name}_x"), device).require_grad();
        let out = resize(x.clone());
        let weight = npy::<4>(&format!("{name}_w"), device);
        let grads = (out.clone() * weight).sum().backward();
        let grad = x.grad(&grads).expect("the input requires grad");
        check(
            &format!("{name} {form} values"),
            out,
            npy(&format!("{name}_out"), device),
        );
        check(
            &format!("{name} {form} input gradient"),
            grad,
            npy(&format!("{name}_grad"), device),
        );
    }
}

#[test]
fn bilinear_resize_matches_pytorch_values_and_gradients() {
    check_bilinear_values_and_gradients(&test_device().autodiff());
}

#[test]
fn legion_text_prompt_path_matches_reference() {
    // image -> encoder -> [SEG] text prompts -> decoder (single mask) -> postprocess.
    let device = test_device();
    let sam = load_tiny(&device);
    let embedding = sam.image_encoder.forward(npy("encoder_in", &device));
    let seg: Tensor<2> = npy("legion_seg", &device);

    let (sparse, dense) = sam.prompt_encoder.forward(SamPrompts::text(seg.clone()));
    let (low_res, _) = sam.mask_decoder.forward(
        embedding.clone(),
        sam.prompt_encoder.get_dense_pe(),
        sparse,
        dense,
        false,
    );
    check(
        "legion low-res masks",
        low_res,
        npy("legion_low_res", &device),
    );

    let masks = sam
        .segment_with_text(embedding, seg, [40, 64], [50, 80])
        .unwrap();
    let err = check(
        "legion composed masks",
        masks.clone(),
        npy("legion_masks", &device),
    );
    // Binarised masks (logit > 0, the evaluation rule) must agree pixel for pixel unless a
    // reference logit sits within the error of 0.
    let got = masks.into_data().try_to_vec::<f32>().unwrap();
    let want: Tensor<3> = npy("legion_masks", &device);
    let want = want.into_data().try_to_vec::<f32>().unwrap();
    let differing = got
        .iter()
        .zip(&want)
        .filter(|(g, w)| (**g > 0.0) != (**w > 0.0) && w.abs() > err)
        .count();
    println!(
        "sam parity legion binarised masks: {differing} differing pixels of {}",
        want.len()
    );
    assert_eq!(differing, 0);
}

/// Rewrites a safetensors file: every key gets `prefix`, and one extra F32 tensor `extra` of
/// shape [1] is appended (to stand for the rest of a combined checkpoint).
fn rewrite_safetensors(src: &Path, dst: &Path, prefix: &str, extra: &str) {
    let bytes = std::fs::read(src).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let mut data = bytes[8 + header_len..].to_vec();
    let mut renamed = serde_json::Map::new();
    for (key, value) in header {
        if key == "__metadata__" {
            renamed.insert(key, value);
        } else {
            renamed.insert(format!("{prefix}{key}"), value);
        }
    }
    let start = data.len();
    data.extend_from_slice(&1.5f32.to_le_bytes());
    renamed.insert(
        extra.to_string(),
        serde_json::json!({"dtype": "F32", "shape": [1], "data_offsets": [start, start + 4]}),
    );
    let mut header = serde_json::to_vec(&renamed).unwrap();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    std::fs::write(dst, out).unwrap();
}

#[test]
fn glamm_checkpoint_naming_loads() {
    let device = test_device();
    let dst = std::env::temp_dir().join(format!(
        "legion_sam_glamm_{}.safetensors",
        std::process::id()
    ));
    rewrite_safetensors(
        &weights_path(),
        &dst,
        "model.grounding_encoder.",
        "model.text_hidden_fcs.0.0.bias",
    );
    let loaded = Sam::load_glamm(&SamConfig::tiny(), &dst, &device);
    let _ = std::fs::remove_file(&dst);
    let sam = loaded.expect("GLaMM-named SAM loads");
    assert_eq!(
        legion_model::sam::glamm_sam_remap().len(),
        SAM_REMAP.len() + 1
    );
    let out = sam.image_encoder.forward(npy("encoder_in", &device));
    check(
        "image_encoder via GLaMM naming",
        out,
        npy("encoder_out", &device),
    );
}

#[test]
fn strict_loading_rejects_foreign_and_missing_tensors() {
    let device = test_device();
    // An original-naming file with an extra tensor: unexpected.
    let dst = std::env::temp_dir().join(format!(
        "legion_sam_extra_{}.safetensors",
        std::process::id()
    ));
    rewrite_safetensors(&weights_path(), &dst, "", "mask_decoder.extra_head.weight");
    let extra = Sam::load(&SamConfig::tiny(), &dst, &device);
    // A prefixed file loaded with the original table: everything missing and unexpected.
    rewrite_safetensors(
        &weights_path(),
        &dst,
        "model.grounding_encoder.",
        "lm_head.weight",
    );
    let prefixed = Sam::load(&SamConfig::tiny(), &dst, &device);
    let _ = std::fs::remove_file(&dst);
    // A config whose windowed block has 4x4 windows: the 5-row relative tables of the file
    // have the wrong shape (7 rows expected).
    let mut config = SamConfig::tiny();
    config.image_encoder = config.image_encoder.with_window_size(4);
    let wrong_shape = Sam::load(&config, &weights_path(), &device);
    match wrong_shape {
        Err(WeightsError::Mismatch { errors, .. }) => {
            println!("sam strict loading shape errors: {errors:?}");
            assert!(
                errors.iter().any(|e| e.contains("blocks.0.attn.rel_pos_h")),
                "{errors:?}"
            );
        }
        other => panic!("expected a shape mismatch, got {:?}", other.map(|_| ())),
    }
    match extra {
        Err(WeightsError::Mismatch {
            missing,
            unexpected,
            ..
        }) => {
            assert!(missing.is_empty(), "{missing:?}");
            assert_eq!(
                unexpected,
                vec!["mask_decoder.extra_head.weight".to_string()]
            );
        }
        other => panic!("expected a mismatch, got {:?}", other.map(|_| ())),
    }
    match prefixed {
        Err(WeightsError::Mismatch {
            missing,
            unexpected,
            ..
        }) => {
            assert!(
                missing
                    .iter()
                    .any(|m| m == "image_encoder.neck.conv1.weight"),
                "{missing:?}"
            );
            assert!(!unexpected.is_empty());
        }
        other => panic!("expected a mismatch, got {:?}", other.map(|_| ())),
    }
}

/// Tensor and element counts of a full-size preset against the reference's
/// (`param_counts.json`, from `sam_model_registry` in `scripts/fixtures/sam.py`).
fn check_preset_counts(variant: &str, config: SamConfig) {
    use burn::module::Module;
    use burn::store::ModuleSnapshot;
    let counts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture_dir().join("param_counts.json")).unwrap())
            .unwrap();
    let want = &counts[variant];
    let device = Device::flex();
    let sam = config.init(&device);
    let tensors = sam.collect(None, None, false).len();
    println!(
        "sam {variant}: {tensors} tensors, {} elements, image encoder {}",
        sam.num_params(),
        sam.image_encoder.num_params()
    );
    assert_eq!(tensors as u64, want["tensors"].as_u64().unwrap());
    assert_eq!(sam.num_params() as u64, want["elements"].as_u64().unwrap());
    assert_eq!(
        sam.image_encoder.num_params() as u64,
        want["image_encoder_elements"].as_u64().unwrap()
    );
}

#[test]
fn vit_b_preset_has_reference_structure() {
    check_preset_counts("vit_b", SamConfig::vit_b());
}

#[test]
#[ignore = "allocates the 641M-parameter ViT-H (2.6 GB); run with --ignored"]
fn vit_h_preset_has_reference_structure() {
    check_preset_counts("vit_h", SamConfig::vit_h());
}
