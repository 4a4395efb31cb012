//! LEGION's loss terms against PyTorch (`scripts/fixtures/losses.py`): token CE, mask BCE and
//! Dice with GLaMM's per-image weighting, the weighted total, and the gradient w.r.t. the
//! mask logits.
//!
//! ```text
//! /work/venv/bin/python scripts/fixtures/losses.py
//! cargo test -p legion-train --test losses
//! ```

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use legion_backend::test_device;
use legion_train::loss::{LossWeights, Normalisers, legion_loss, supervised_tokens};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/losses")
}

fn npy_f32(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture_dir().join(name)).expect("fixture exists");
    let npy = npyz::NpyFile::new(&bytes[..]).expect("valid npy");
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<f32>().expect("f32 npy"))
}

fn npy_i64(name: &str) -> (Vec<usize>, Vec<i64>) {
    let bytes = std::fs::read(fixture_dir().join(name)).expect("fixture exists");
    let npy = npyz::NpyFile::new(&bytes[..]).expect("valid npy");
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<i64>().expect("i64 npy"))
}

fn tensor3(name: &str, device: &Device) -> Tensor<3> {
    let (shape, data) = npy_f32(name);
    Tensor::from_data(
        TensorData::new(data, [shape[0], shape[1], shape[2]]),
        device,
    )
}

#[test]
fn loss_terms_and_mask_gradient_match_pytorch() {
    let device = test_device().autodiff();
    let logits = tensor3("logits.npy", &device);
    let (shape, labels) = npy_i64("labels.npy");
    let tokens = supervised_tokens(&labels, shape[1]);
    let labels =
        Tensor::<2, Int>::from_data(TensorData::new(labels, [shape[0], shape[1]]), &device);
    let pred0 = tensor3("pred0.npy", &device).require_grad();
    let pred1 = tensor3("pred1.npy", &device);
    let gt0 = tensor3("gt0.npy", &device);
    let gt1 = tensor3("gt1.npy", &device);
    let masks = gt0.dims()[0] + gt1.dims()[0];
    let terms = legion_loss(
        logits,
        labels,
        vec![(pred0.clone(), gt0), (pred1, gt1)],
        Normalisers {
            tokens: tokens as f64,
            masks: masks as f64,
        },
        LossWeights {
            ce: 1.0,
            bce: 0.4,
            dice: 0.2,
        },
    );
    let (_, expected) = npy_f32("expected.npy");
    let got = [
        terms.ce.clone().into_scalar::<f32>(),
        terms.bce.clone().into_scalar::<f32>(),
        terms.dice.clone().into_scalar::<f32>(),
        terms.total.clone().into_scalar::<f32>(),
    ];
    for (name, (g, e)) in ["ce", "bce", "dice", "total"]
        .iter()
        .zip(got.iter().zip(&expected))
    {
        assert!(
            (g - e).abs() <= 1e-5 * e.abs().max(1.0),
            "{name}: {g} vs PyTorch {e}"
        );
    }
    let grads = terms.total.backward();
    let grad = pred0.grad(&grads).expect("pred0 requires grad");
    let grad: Vec<f32> = grad.into_data().try_into_vec_as::<f32>().unwrap();
    let (_, expected_grad) = npy_f32("grad_pred0.npy");
    let worst = grad
        .iter()
        .zip(&expected_grad)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-6, "max |grad - PyTorch| = {worst}");
}
