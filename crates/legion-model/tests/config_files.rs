//! Config files a user writes or edits: every field of a LEGION / detector config set to a bad
//! value is refused by `validate()` naming the field, or still builds (no panic from a
//! `config.json`); `legion debug forward` reads every checkpoint layout `legion convert` reads
//! and SAM configs in segment-anything's build parameters or burn's JSON without its defaults.
//!
//! Fixtures: `tests/fixtures/checkpoints/` (`scripts/fixtures/checkpoints.py`) and
//! `tests/fixtures/clip/` (`scripts/fixtures/clip.py`).

use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::tensor::Device;
use legion_model::debug::{DebugComponent, debug_forward, read_npy_f32, sam_config_from_json};
use legion_model::legion::{LegionClsConfig, LegionConfig};
use legion_model::sam::SamConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// JSON pointers of every number (and every element of a number list) under `value`.
fn number_leaves(value: &Value, pointer: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                number_leaves(child, &format!("{pointer}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                number_leaves(child, &format!("{pointer}/{i}"), out);
            }
        }
        Value::Number(_) => out.push(pointer.to_string()),
        _ => {}
    }
}

/// Sets every number of `base` in turn to 0, -1 and 10^6 (floats also to 1e300 and -0.5) and
/// checks each edited config: refused when parsed or validated, the message naming the field
/// for a zero; otherwise `init` builds it without panicking. Returns (edits, refused).
fn every_field_bad<C: Serialize + DeserializeOwned>(
    base: &C,
    validate: impl Fn(&C) -> Result<(), String>,
    init: impl Fn(&C),
) -> (usize, usize) {
    let json = serde_json::to_value(base).unwrap();
    let mut leaves = Vec::new();
    number_leaves(&json, "", &mut leaves);
    let (mut edits, mut refused) = (0, 0);
    for pointer in &leaves {
        let is_float = json.pointer(pointer).unwrap().is_f64();
        let mut values = vec![
            serde_json::json!(0),
            serde_json::json!(-1),
            serde_json::json!(1_000_000),
        ];
        if is_float {
            values.extend([serde_json::json!(1e300), serde_json::json!(-0.5)]);
        }
        for value in values {
            let mut edited = json.clone();
            *edited.pointer_mut(pointer).unwrap() = value.clone();
            edits += 1;
            let Ok(config) = serde_json::from_value::<C>(edited) else {
                refused += 1;
                continue;
            };
            match validate(&config) {
                Err(message) => {
                    refused += 1;
                    // The field a zero breaks is named (path segments joined by `.`, list
                    // elements as `[i]` or the list's name).
                    let name = pointer
                        .rsplit('/')
                        .find(|s| s.parse::<usize>().is_err())
                        .unwrap();
                    if value == 0 {
                        assert!(
                            message.contains(name),
                            "{pointer} = 0: `{message}` does not name `{name}`"
                        );
                    }
                }
                Ok(()) if value == serde_json::json!(1_000_000) || value == 1e300 => {
                    // Accepted huge sizes are legal but would allocate gigabytes: not built.
                }
                Ok(()) => {
                    let built =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init(&config)));
                    assert!(
                        built.is_ok(),
                        "{pointer} = {value}: validated but init panicked"
                    );
                }
            }
        }
    }
    (edits, refused)
}

#[test]
fn every_field_of_a_model_config_is_checked_before_init() {
    let device = Device::flex();
    let legion = every_field_bad(
        &LegionConfig::fixture(),
        |c| c.validate().map_err(|e| e.to_string()),
        |c| drop(c.init(&device).unwrap()),
    );
    let detector = every_field_bad(
        &LegionClsConfig::preset("fixture").unwrap(),
        |c| c.validate().map_err(|e| e.to_string()),
        |c| drop(c.init(&device).unwrap()),
    );
    for (name, (edits, refused)) in [("LegionConfig", legion), ("LegionClsConfig", detector)] {
        println!("{name}: {refused} of {edits} edits refused");
        assert!(refused > edits / 2, "{name}: {refused} of {edits}");
    }
}

#[test]
fn presets_validate_and_the_table_names_each_once() {
    let names: Vec<&str> = LegionConfig::PRESETS.iter().map(|(n, _)| *n).collect();
    for name in &names {
        LegionConfig::preset(name).unwrap().validate().unwrap();
        LegionClsConfig::preset(name).unwrap().validate().unwrap();
        assert_eq!(names.iter().filter(|n| *n == name).count(), 1);
    }
    assert!(LegionConfig::preset("huge").is_none());
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("legion-config-files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn sam_config_json_takes_build_parameters_and_omitted_defaults() {
    let dir = temp_dir("sam");
    let path = dir.join("config.json");
    let as_json = |c: &SamConfig| serde_json::to_value(c).unwrap();

    // segment-anything's `build_sam_vit_b` parameters.
    std::fs::write(
        &path,
        r#"{"encoder_embed_dim": 768, "encoder_depth": 12, "encoder_num_heads": 12,
            "encoder_global_attn_indexes": [2, 5, 8, 11]}"#,
    )
    .unwrap();
    assert_eq!(
        as_json(&sam_config_from_json(&path).unwrap()),
        as_json(&SamConfig::vit_b())
    );

    // burn's JSON with every defaulted field left out.
    let mut json = as_json(&SamConfig::vit_h());
    for (section, fields) in [
        (
            "/image_encoder",
            &[
                "window_size",
                "out_chans",
                "in_chans",
                "mlp_ratio",
                "qkv_bias",
                "use_abs_pos",
                "use_rel_pos",
                "norm_eps",
            ][..],
        ),
        (
            "/mask_decoder",
            &[
                "num_multimask_outputs",
                "iou_head_depth",
                "iou_head_hidden_dim",
            ][..],
        ),
        (
            "/mask_decoder/transformer",
            &["attention_downsample_rate", "norm_eps"][..],
        ),
    ] {
        let object = json.pointer_mut(section).unwrap().as_object_mut().unwrap();
        for field in fields {
            object.remove(*field).unwrap();
        }
    }
    std::fs::write(&path, json.to_string()).unwrap();
    assert_eq!(
        as_json(&sam_config_from_json(&path).unwrap()),
        as_json(&SamConfig::vit_h())
    );

    // A non-default value is kept; the full JSON still reads.
    SamConfig::tiny().save(&path).unwrap();
    assert_eq!(
        as_json(&sam_config_from_json(&path).unwrap()),
        as_json(&SamConfig::tiny())
    );

    // Unknown names, missing required fields and impossible values are named.
    for (text, expected) in [
        (
            r#"{"encoder_embed_dim": 768, "encoder_depth": 12, "encoder_heads": 12}"#,
            "encoder_heads",
        ),
        (
            r#"{"encoder_embed_dim": 768, "encoder_depth": 12, "encoder_global_attn_indexes": []}"#,
            "encoder_num_heads",
        ),
        (
            r#"{"encoder_embed_dim": 768, "encoder_depth": 12, "encoder_num_heads": 12,
             "encoder_global_attn_indexes": [2, 12]}"#,
            "global_attn_indexes",
        ),
        (
            r#"{"encoder_embed_dim": 770, "encoder_depth": 12, "encoder_num_heads": 12,
             "encoder_global_attn_indexes": [2]}"#,
            "embed_dim",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let e = sam_config_from_json(&path).unwrap_err().to_string();
        assert!(e.contains(expected), "{text}: {e}");
    }
}

#[test]
fn debug_forward_reads_a_sharded_bin_checkpoint_like_a_single_file() {
    let pixels = fixtures().join("clip/clip_hf_pixels.npy");
    let config = fixtures().join("checkpoints/clip_sharded_safetensors/config.json");
    let run = |dir: &Path| {
        std::fs::copy(&config, dir.join("config.json")).unwrap();
        let out = dir.join("out.npy");
        debug_forward(
            DebugComponent::ClipVision,
            dir,
            &[pixels.clone()],
            &out,
            &Device::flex(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        read_npy_f32(&out).unwrap()
    };
    let single = temp_dir("single");
    std::fs::copy(
        fixtures().join("clip/clip_vision_hf.safetensors"),
        single.join("model.safetensors"),
    )
    .unwrap();
    let want = run(&single);
    for layout in ["clip_sharded_bin", "clip_sharded_safetensors"] {
        let dir = temp_dir(layout);
        for entry in std::fs::read_dir(fixtures().join("checkpoints").join(layout)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
        let got = run(&dir);
        assert_eq!(got.shape, want.shape, "{layout}");
        let diff = got
            .data
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{layout}: max abs difference to the single file {diff:.3e}");
        assert!(diff <= 1e-6, "{layout}: {diff}");
    }
}
