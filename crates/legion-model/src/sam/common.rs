//! Blocks shared by SAM's image encoder, two-way transformer and mask decoder: channel-wise
//! [`LayerNorm2d`], the two-layer [`MlpBlock`] and the n-layer ReLU [`Mlp`].
//!
//! Reference: `segment_anything/modeling/common.py` (`LayerNorm2d`, `MLPBlock`) and
//! `segment_anything/modeling/mask_decoder.py` (`MLP`), Kirillov et al., "Segment Anything",
//! arXiv 2304.02643.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor, TensorData};
use legion_kernels::elementwise::layer_norm_channels;

use crate::cpu_inference::{gelu, read_plain_f32};
use crate::linear;

/// Activation of an [`MlpBlock`]. The image encoder uses exact (erf) GELU, the two-way
/// transformer ReLU.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MlpActivation {
    /// `nn.GELU()` with `approximate="none"`.
    Gelu,
    /// `nn.ReLU()`.
    Relu,
}

impl MlpActivation {
    fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => gelu(x),
            Self::Relu => relu(x),
        }
    }
}

/// LayerNorm over the channel axis of an NCHW tensor (ConvNeXt / detectron2 `LayerNorm2d`).
///
/// The parameters keep PyTorch's names `weight`/`bias`: burn-store's `PyTorchToBurnAdapter`
/// renames `weight`/`bias` to `gamma`/`beta` only inside burn's own norm modules, so this
/// module's checkpoint keys load unchanged.
#[derive(Module, Debug)]
pub struct LayerNorm2d {
    /// Per-channel scale, `[channels]`.
    pub weight: Param<Tensor<1>>,
    /// Per-channel shift, `[channels]`.
    pub bias: Param<Tensor<1>>,
    /// Added to the variance before the square root (SAM uses 1e-6).
    pub eps: f64,
}

/// Configuration of a [`LayerNorm2d`].
#[derive(Config, Debug)]
pub struct LayerNorm2dConfig {
    /// Number of channels (axis 1 of the input).
    pub channels: usize,
    /// Variance epsilon.
    #[config(default = 1e-6)]
    pub eps: f64,
}

impl LayerNorm2dConfig {
    /// Builds the norm with weight 1 and bias 0.
    pub fn init(&self, device: &Device) -> LayerNorm2d {
        LayerNorm2d {
            weight: Param::from_tensor(Tensor::ones([self.channels], device)),
            bias: Param::from_tensor(Tensor::zeros([self.channels], device)),
            eps: self.eps,
        }
    }
}

impl LayerNorm2d {
    /// Normalises every pixel's channel vector: `(x - mean_c) / sqrt(var_c + eps) * w + b`,
    /// with the biased variance, as the reference does.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, height, width]` -> same shape.
    ///
    /// # Panics
    /// When axis 1 of `x` is not `channels`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [channels] = self.weight.dims();
        assert_eq!(
            x.dims()[1],
            channels,
            "LayerNorm2d: input has the wrong channel count"
        );
        if let Some(y) = self.forward_fused(&x) {
            return y;
        }
        let mean = x.clone().mean_dim(1);
        let centred = x - mean;
        let var = centred.clone().square().mean_dim(1);
        let normed = centred / (var + self.eps).sqrt();
        let weight = self.weight.val().reshape([1, channels, 1, 1]);
        let bias = self.bias.val().reshape([1, channels, 1, 1]);
        normed * weight + bias
    }

    /// [`Self::forward`] in one kernel (`legion_kernels::elementwise::layer_norm_channels`,
    /// three passes instead of burn's nine) for f32 tensors of the CPU backend without autodiff;
    /// `None` for any other input (training, other dtypes, the GPU backends).
    fn forward_fused(&self, x: &Tensor<4>) -> Option<Tensor<4>> {
        let weight = read_plain_f32(&self.weight.val(), <[f32]>::to_vec)?;
        let bias = read_plain_f32(&self.bias.val(), <[f32]>::to_vec)?;
        let [batch, channels, height, width] = x.dims();
        // The input is read in place: no copy of the feature map before the kernel.
        let out = read_plain_f32(x, |values| {
            layer_norm_channels(
                values,
                batch,
                channels,
                height * width,
                &weight,
                &bias,
                self.eps as f32,
            )
        })?;
        Some(Tensor::from_data(
            TensorData::new(out, [batch, channels, height, width]),
            &x.device(),
        ))
    }
}

/// Two linear layers with an activation between them (`MLPBlock`: `lin2(act(lin1(x)))`).
#[derive(Module, Debug)]
pub struct MlpBlock {
    /// `embedding_dim -> mlp_dim`.
    pub lin1: Linear,
    /// `mlp_dim -> embedding_dim`.
    pub lin2: Linear,
    /// Activation between the layers.
    #[module(skip)]
    pub activation: MlpActivation,
}

/// Configuration of an [`MlpBlock`].
#[derive(Config, Debug)]
pub struct MlpBlockConfig {
    /// Input and output width.
    pub embedding_dim: usize,
    /// Hidden width.
    pub mlp_dim: usize,
    /// Activation between the two layers.
    pub activation: MlpActivation,
}

impl MlpBlockConfig {
    /// Builds the block with burn's default initialisation (weights are meant to be loaded).
    pub fn init(&self, device: &Device) -> MlpBlock {
        MlpBlock {
            lin1: LinearConfig::new(self.embedding_dim, self.mlp_dim).init(device),
            lin2: LinearConfig::new(self.mlp_dim, self.embedding_dim).init(device),
            activation: self.activation,
        }
    }
}

impl MlpBlock {
    /// # Shapes
    /// - `x`: `[..., embedding_dim]` -> `[..., embedding_dim]`.
    ///
    /// # Panics
    /// When the last axis of `x` is not `embedding_dim`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mut dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        // burn's `linear` runs one matmul per leading block for inputs above 3-D; SAM's
        // `[B, H, W, C]` activations are ~3x faster as one `[B*H*W, C]` matmul.
        let flat: Tensor<2> = x.reshape([rows, dims[D - 1]]);
        let out = linear::forward(
            &self.lin2,
            self.activation.apply(linear::forward(&self.lin1, flat)),
        );
        dims[D - 1] = out.dims()[1];
        out.reshape(dims)
    }
}

/// `num_layers` linear layers with ReLU between them and an optional final sigmoid (the mask
/// decoder's hypernetwork and IoU heads, `MLP` in `mask_decoder.py`).
#[derive(Module, Debug)]
pub struct Mlp {
    /// The layers, `input -> hidden -> ... -> output`.
    pub layers: Vec<Linear>,
    /// Whether a sigmoid follows the last layer.
    pub sigmoid_output: bool,
}

/// Configuration of an [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Input width.
    pub input_dim: usize,
    /// Width of every hidden layer.
    pub hidden_dim: usize,
    /// Output width.
    pub output_dim: usize,
    /// Number of linear layers (at least 1).
    pub num_layers: usize,
    /// Whether a sigmoid follows the last layer.
    #[config(default = false)]
    pub sigmoid_output: bool,
}

impl MlpConfig {
    /// Builds the MLP with burn's default initialisation.
    pub fn init(&self, device: &Device) -> Mlp {
        let n = self.num_layers.max(1);
        let layers = (0..n)
            .map(|i| {
                let d_in = if i == 0 {
                    self.input_dim
                } else {
                    self.hidden_dim
                };
                let d_out = if i + 1 == n {
                    self.output_dim
                } else {
                    self.hidden_dim
                };
                LinearConfig::new(d_in, d_out).init(device)
            })
            .collect();
        Mlp {
            layers,
            sigmoid_output: self.sigmoid_output,
        }
    }
}

impl Mlp {
    /// # Shapes
    /// - `x`: `[..., input_dim]` -> `[..., output_dim]`.
    ///
    /// # Panics
    /// When the last axis of `x` is not `input_dim`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let last = self.layers.len().saturating_sub(1);
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            x = linear::forward(layer, x);
            if i < last {
                x = relu(x);
            }
        }
        if self.sigmoid_output { sigmoid(x) } else { x }
    }
}
