//! SAM's image encoder: a plain ViT (ViTDet-style) with windowed attention, a few global
//! attention blocks, decomposed relative position bias, and a convolutional neck to 256 channels.
//!
//! Reference: `segment_anything/modeling/image_encoder.py` (`ImageEncoderViT`, `Block`,
//! `Attention`, `window_partition`, `window_unpartition`, `get_rel_pos`,
//! `add_decomposed_rel_pos`, `PatchEmbed`), Kirillov et al., arXiv 2304.02643. LEGION / GLaMM use
//! the ViT-H variant unchanged and frozen (their copy only adds an fp16 autocast around the neck).
//!
//! ```text
//! cargo test -p legion-model --test sam_parity image_encoder
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::common::{LayerNorm2d, LayerNorm2dConfig, MlpActivation, MlpBlock, MlpBlockConfig};
use super::postprocess::linear_resize_matrix;
use crate::cpu_inference::{is_plain_cpu, split_rows_over_threads};
use crate::layer_norm::{LayerNorm, LayerNormConfig};
use crate::linear;
use crate::matmul::{matmul, on_calling_thread};
use crate::precision::{cast_to, param_dtype};
use crate::softmax::softmax_last;

/// Configuration of [`ImageEncoderViT`] (the arguments of `ImageEncoderViT.__init__` as
/// `build_sam.py` sets them).
#[derive(Config, Debug)]
pub struct SamImageEncoderConfig {
    /// Side of the square input image (the pad target), 1024 for SAM.
    pub img_size: usize,
    /// Patch side (kernel and stride of the patch embedding).
    pub patch_size: usize,
    /// Token width.
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// Indexes of the blocks with global attention; all others use windowed attention.
    pub global_attn_indexes: Vec<usize>,
    /// Side of the attention windows (0 = every block global).
    #[config(default = 14)]
    pub window_size: usize,
    /// Channels of the neck output (the prompt embedding width).
    #[config(default = 256)]
    pub out_chans: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_chans: usize,
    /// MLP hidden width / `embed_dim`.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Whether `qkv` has a bias.
    #[config(default = true)]
    pub qkv_bias: bool,
    /// Absolute position embedding `[1, img/patch, img/patch, embed_dim]` added after the
    /// patch embedding.
    #[config(default = true)]
    pub use_abs_pos: bool,
    /// Decomposed relative position bias in every attention block.
    #[config(default = true)]
    pub use_rel_pos: bool,
    /// Epsilon of the blocks' LayerNorms (`build_sam.py` passes 1e-6, the class default is 1e-5).
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

impl SamImageEncoderConfig {
    /// SAM ViT-H (`sam_vit_h_4b8939.pth`), the encoder LEGION uses.
    pub fn vit_h() -> Self {
        Self {
            img_size: 1024,
            patch_size: 16,
            embed_dim: 1280,
            depth: 32,
            num_heads: 16,
            global_attn_indexes: vec![7, 15, 23, 31],
            window_size: 14,
            out_chans: 256,
            in_chans: 3,
            mlp_ratio: 4.0,
            qkv_bias: true,
            use_abs_pos: true,
            use_rel_pos: true,
            norm_eps: 1e-6,
        }
    }

    /// SAM ViT-L.
    pub fn vit_l() -> Self {
        Self {
            embed_dim: 1024,
            depth: 24,
            global_attn_indexes: vec![5, 11, 17, 23],
            ..Self::vit_h()
        }
    }

    /// SAM ViT-B.
    pub fn vit_b() -> Self {
        Self {
            embed_dim: 768,
            depth: 12,
            num_heads: 12,
            global_attn_indexes: vec![2, 5, 8, 11],
            ..Self::vit_h()
        }
    }

    /// A tiny encoder for tests: 64 px, patch 8 (an 8x8 grid), width 32, two blocks (the second
    /// global), 2 heads, window 3 (so windowed blocks pad 8 -> 9), 16 output channels. Matches
    /// `scripts/fixtures/sam.py`.
    pub fn tiny() -> Self {
        Self {
            img_size: 64,
            patch_size: 8,
            embed_dim: 32,
            depth: 2,
            num_heads: 2,
            global_attn_indexes: vec![1],
            window_size: 3,
            out_chans: 16,
            ..Self::vit_h()
        }
    }

    /// Side of the token grid for an `img_size` input.
    pub fn grid_size(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Builds the encoder with burn's default initialisation and zero position embeddings
    /// (weights are meant to be loaded).
    ///
    /// # Panics
    /// When `num_heads` does not divide `embed_dim`.
    pub fn init(&self, device: &Device) -> ImageEncoderViT {
        assert!(
            self.num_heads > 0 && self.embed_dim.is_multiple_of(self.num_heads),
            "SamImageEncoderConfig: num_heads {} must divide embed_dim {}",
            self.num_heads,
            self.embed_dim
        );
        let grid = self.grid_size();
        let head_dim = self.embed_dim / self.num_heads;
        let patch_embed = PatchEmbed {
            proj: Conv2dConfig::new([self.in_chans, self.embed_dim], [self.patch_size; 2])
                .with_stride([self.patch_size; 2])
                .init(device),
        };
        let pos_embed = self
            .use_abs_pos
            .then(|| Param::from_tensor(Tensor::zeros([1, grid, grid, self.embed_dim], device)));
        let mlp_dim = (self.embed_dim as f64 * self.mlp_ratio) as usize;
        let blocks = (0..self.depth)
            .map(|i| {
                let window_size = if self.global_attn_indexes.contains(&i) {
                    0
                } else {
                    self.window_size
                };
                // Relative position tables are sized for the attention extent: the window, or
                // the whole grid for global blocks.
                let extent = if window_size == 0 { grid } else { window_size };
                let rel_pos = |device: &Device| {
                    Param::from_tensor(Tensor::zeros([2 * extent - 1, head_dim], device))
                };
                ViTBlock {
                    norm1: LayerNormConfig::new(self.embed_dim)
                        .with_epsilon(self.norm_eps)
                        .init(device),
                    attn: ViTAttention {
                        qkv: LinearConfig::new(self.embed_dim, 3 * self.embed_dim)
                            .with_bias(self.qkv_bias)
                            .init(device),
                        proj: LinearConfig::new(self.embed_dim, self.embed_dim).init(device),
                        rel_pos_h: self.use_rel_pos.then(|| rel_pos(device)),
                        rel_pos_w: self.use_rel_pos.then(|| rel_pos(device)),
                        num_heads: self.num_heads,
                    },
                    norm2: LayerNormConfig::new(self.embed_dim)
                        .with_epsilon(self.norm_eps)
                        .init(device),
                    mlp: MlpBlockConfig::new(self.embed_dim, mlp_dim, MlpActivation::Gelu)
                        .init(device),
                    window_size,
                }
            })
            .collect();
        let neck = Neck {
            conv1: Conv2dConfig::new([self.embed_dim, self.out_chans], [1, 1])
                .with_bias(false)
                .init(device),
            norm1: LayerNorm2dConfig::new(self.out_chans).init(device),
            conv2: Conv2dConfig::new([self.out_chans, self.out_chans], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device),
            norm2: LayerNorm2dConfig::new(self.out_chans).init(device),
        };
        ImageEncoderViT {
            patch_embed,
            pos_embed,
            blocks,
            neck,
            img_size: self.img_size,
        }
    }
}

/// Non-overlapping patch embedding: a `patch x patch` convolution with stride `patch`.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    /// `in_chans -> embed_dim`, kernel = stride = patch.
    pub proj: Conv2d,
}

/// The neck: `Conv1x1 -> LayerNorm2d -> Conv3x3 -> LayerNorm2d`, no biases in the convolutions.
/// Checkpoint keys `neck.{0,1,2,3}` map to `neck.{conv1,norm1,conv2,norm2}`.
#[derive(Module, Debug)]
pub struct Neck {
    /// 1x1 projection `embed_dim -> out_chans`.
    pub conv1: Conv2d,
    /// Channel norm after `conv1`.
    pub norm1: LayerNorm2d,
    /// 3x3 convolution, padding 1.
    pub conv2: Conv2d,
    /// Channel norm after `conv2`.
    pub norm2: LayerNorm2d,
}

/// Multi-head self-attention over a 2-D token grid with decomposed relative position bias.
#[derive(Module, Debug)]
pub struct ViTAttention {
    /// Joint query/key/value projection, `dim -> 3 dim`, output laid out `[3, heads, head_dim]`.
    pub qkv: Linear,
    /// Output projection.
    pub proj: Linear,
    /// Relative position table along the height, `[2 extent - 1, head_dim]`.
    pub rel_pos_h: Option<Param<Tensor<2>>>,
    /// Relative position table along the width, `[2 extent - 1, head_dim]`.
    pub rel_pos_w: Option<Param<Tensor<2>>>,
    /// Number of heads.
    pub num_heads: usize,
}

/// Multiply-adds of `q kᵀ` from which inference attention is split over threads (SAM ViT-B/H:
/// 0.6-1.7 G for global attention, 0.3-0.5 G per windowed layer; the tiny test encoders stay
/// below).
const PARALLEL_ATTENTION_MACS: usize = 1 << 24;

impl ViTAttention {
    /// # Shapes
    /// - `x`: `[batch, height, width, dim]` -> `[batch, height, width, dim]`.
    ///
    /// # Panics
    /// When the last axis of `x` is not `dim`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.output_projection(self.attend(self.qkv_projection(x)))
    }

    /// Whether no weight of the two projections is trained (inference, or a frozen encoder as
    /// in LEGION's recipe): [`ViTBlock`] then projects only a window grid's real tokens.
    fn projections_frozen(&self) -> bool {
        let linear_frozen = |linear: &Linear| {
            !linear.weight.val().is_require_grad()
                && linear
                    .bias
                    .as_ref()
                    .is_none_or(|bias| !bias.val().is_require_grad())
        };
        linear_frozen(&self.qkv) && linear_frozen(&self.proj)
    }

    /// The joint query/key/value projection of every token.
    ///
    /// # Shapes
    /// - `x`: `[batch, height, width, dim]` -> `[batch, height, width, 3 dim]`.
    fn qkv_projection(&self, x: Tensor<4>) -> Tensor<4> {
        let [batch, height, width, dim] = x.dims();
        // Linear layers on `[B*HW, dim]`: burn runs 4-D inputs as one matmul per row block.
        let qkv = linear::forward(&self.qkv, x.reshape([batch * height * width, dim]));
        let width_out = qkv.dims()[1];
        qkv.reshape([batch, height, width, width_out])
    }

    /// The output projection of every token.
    ///
    /// # Shapes
    /// - `x`: `[batch, height, width, dim]` -> same shape.
    fn output_projection(&self, x: Tensor<4>) -> Tensor<4> {
        let [batch, height, width, dim] = x.dims();
        linear::forward(&self.proj, x.reshape([batch * height * width, dim]))
            .reshape([batch, height, width, dim])
    }

    /// Multi-head attention of projected queries, keys and values, before the output
    /// projection.
    ///
    /// # Shapes
    /// - `qkv`: `[batch, height, width, 3 dim]` -> `[batch, height, width, dim]`.
    fn attend(&self, qkv: Tensor<4>) -> Tensor<4> {
        let [batch, height, width, qkv_dim] = qkv.dims();
        let dim = qkv_dim / 3;
        let heads = self.num_heads;
        let head_dim = dim / heads;
        let tokens = height * width;
        // [B, HW, 3, heads, hd] -> [3, B, heads, HW, hd] -> [3, B*heads, HW, hd]
        let qkv = qkv
            .reshape([batch, tokens, 3, heads, head_dim])
            .permute([2, 0, 3, 1, 4])
            .reshape([3, batch * heads, tokens, head_dim]);
        let take = |i: usize| {
            qkv.clone()
                .slice_dim(0, i..i + 1)
                .reshape([batch * heads, tokens, head_dim])
        };
        let (q, k, v) = (take(0), take(1), take(2));
        let scale = (head_dim as f64).powf(-0.5);
        // Attention of a block of (window, head) pairs `[n, HW, hd]`.
        let attend = |q: Tensor<3>, k: Tensor<3>, v: Tensor<3>| {
            let mut attn = matmul(q.clone() * scale, k.swap_dims(1, 2));
            if let (Some(rel_h), Some(rel_w)) = (&self.rel_pos_h, &self.rel_pos_w) {
                attn = add_decomposed_rel_pos(
                    attn,
                    q,
                    rel_h.val(),
                    rel_w.val(),
                    [height, width],
                    [height, width],
                );
            }
            matmul(softmax_last(attn), v)
        };
        let pairs = batch * heads;
        let threads = rayon::current_num_threads();
        // Inference on the CPU backend runs blocks of pairs side by side: burn-flex's matmul and
        // softmax run on one thread in this workspace, and the pairs are independent (each
        // pair's numbers are the same as in one call). Small attentions stay in one call. A
        // block's products stay on its thread: the blocks already use every thread, and a
        // threaded product would cut and re-join the block's scores once more.
        let split = threads > 1
            && pairs > 1
            && pairs * tokens * tokens * head_dim >= PARALLEL_ATTENTION_MACS
            && is_plain_cpu(&q);
        let out = if split {
            split_rows_over_threads(pairs, |start, len| {
                on_calling_thread(|| {
                    attend(
                        q.clone().narrow(0, start, len),
                        k.clone().narrow(0, start, len),
                        v.clone().narrow(0, start, len),
                    )
                })
            })
        } else {
            attend(q, k, v)
        };
        out.reshape([batch, heads, height, width, head_dim])
            .permute([0, 2, 3, 1, 4])
            .reshape([batch, height, width, dim])
    }
}

/// A ViT block: pre-norm attention (windowed or global) and pre-norm GELU MLP, both residual.
#[derive(Module, Debug)]
pub struct ViTBlock {
    /// Norm before attention.
    pub norm1: LayerNorm,
    /// Self-attention.
    pub attn: ViTAttention,
    /// Norm before the MLP.
    pub norm2: LayerNorm,
    /// `dim -> mlp_ratio dim -> dim` with exact GELU.
    pub mlp: MlpBlock,
    /// Attention window side; 0 = global attention.
    pub window_size: usize,
}

impl ViTBlock {
    /// # Shapes
    /// - `x`: `[batch, height, width, dim]` -> same shape.
    ///
    /// # Panics
    /// When the last axis of `x` is not `dim`, or the grid does not match the relative position
    /// tables' interpolation (never for SAM's own sizes).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = x.clone();
        let x = self.norm1.forward(x);
        let x = if self.window_size > 0 && self.attn.projections_frozen() {
            // The reference pads the normed grid with zero tokens, projects every window's
            // tokens and drops the padded ones after the output projection. A zero token's
            // query/key/value is the projection's bias, and a padded token's output is never
            // kept: so project the real tokens only and pad their projections with the bias
            // (the same values bit for bit; 42% fewer projected tokens at 512 px, 16% at 1024).
            // Only where no projection weight is trained: their gradients would be summed in
            // another order.
            let [_, height, width, _] = x.dims();
            let qkv = self.attn.qkv_projection(x);
            let fill = self.attn.qkv.bias.as_ref().map(|bias| bias.val());
            let (windows, padded) = window_partition_filled(qkv, self.window_size, fill);
            let windows = self.attn.attend(windows);
            let x = window_unpartition(windows, self.window_size, padded, [height, width]);
            self.attn.output_projection(x)
        } else if self.window_size > 0 {
            let [_, height, width, _] = x.dims();
            let (windows, padded) = window_partition(x, self.window_size);
            let windows = self.attn.forward(windows);
            window_unpartition(windows, self.window_size, padded, [height, width])
        } else {
            self.attn.forward(x)
        };
        let x = shortcut + x;
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// SAM's ViT image encoder.
#[derive(Module, Debug)]
pub struct ImageEncoderViT {
    /// Patch embedding convolution.
    pub patch_embed: PatchEmbed,
    /// Absolute position embedding `[1, grid, grid, embed_dim]`.
    pub pos_embed: Option<Param<Tensor<4>>>,
    /// The transformer blocks.
    pub blocks: Vec<ViTBlock>,
    /// Convolutional neck to `out_chans`.
    pub neck: Neck,
    /// Expected input side (the absolute position embedding is fixed to it).
    pub img_size: usize,
}

impl ImageEncoderViT {
    /// Encodes a normalised, padded image batch.
    ///
    /// # Shapes
    /// - `images`: `[batch, in_chans, img_size, img_size]` (any multiple of the patch size when
    ///   `use_abs_pos` is off)
    /// - returns `[batch, out_chans, img_size / patch, img_size / patch]`.
    ///
    /// # Panics
    /// When the channel count is wrong, or the token grid differs from the absolute position
    /// embedding's (the reference has the same restriction; it does not resize `pos_embed`).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        // Computes in the weights' dtype (crate::precision).
        let images = cast_to(images, param_dtype(&self.patch_embed.proj.weight));
        // [B, C, h, w] -> [B, h, w, C]
        let mut x = self.patch_embed.proj.forward(images).permute([0, 2, 3, 1]);
        if let Some(pos_embed) = &self.pos_embed {
            let pos = pos_embed.val();
            let [_, gh, gw, _] = pos.dims();
            let [_, h, w, _] = x.dims();
            assert!(
                gh == h && gw == w,
                "ImageEncoderViT: token grid {h}x{w} differs from the position embedding's \
                 {gh}x{gw}; the input must be {0}x{0}",
                self.img_size
            );
            x = x + pos;
        }
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = x.permute([0, 3, 1, 2]);
        let x = self.neck.norm1.forward(self.neck.conv1.forward(x));
        self.neck.norm2.forward(self.neck.conv2.forward(x))
    }
}

/// Splits a token grid into non-overlapping `window x window` windows, zero-padding the bottom
/// and right edges to a multiple of `window` first.
///
/// # Shapes
/// - `x`: `[batch, height, width, channels]`
/// - returns `([batch * n_windows, window, window, channels], [padded_height, padded_width])`,
///   windows in row-major order per image.
pub fn window_partition(x: Tensor<4>, window: usize) -> (Tensor<4>, [usize; 2]) {
    window_partition_filled(x, window, None)
}

/// [`window_partition`], the padding tokens set to `fill` (`[channels]`) rather than zeros when
/// given.
///
/// # Shapes
/// - `x`: `[batch, height, width, channels]`, `fill`: `[channels]`
/// - returns as [`window_partition`].
fn window_partition_filled(
    x: Tensor<4>,
    window: usize,
    fill: Option<Tensor<1>>,
) -> (Tensor<4>, [usize; 2]) {
    let [batch, height, width, channels] = x.dims();
    let pad_h = (window - height % window) % window;
    let pad_w = (window - width % window) % window;
    let x = match fill {
        _ if pad_h == 0 && pad_w == 0 => x,
        None => x.pad([(0, pad_h), (0, pad_w), (0, 0)], 0.0),
        Some(fill) => {
            let fill = fill.reshape([1, 1, 1, channels]);
            let x = match pad_w {
                0 => x,
                _ => Tensor::cat(
                    vec![x, fill.clone().expand([batch, height, pad_w, channels])],
                    2,
                ),
            };
            match pad_h {
                0 => x,
                _ => Tensor::cat(
                    vec![x, fill.expand([batch, pad_h, width + pad_w, channels])],
                    1,
                ),
            }
        }
    };
    let (hp, wp) = (height + pad_h, width + pad_w);
    let windows = x
        .reshape([batch, hp / window, window, wp / window, window, channels])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([
            batch * (hp / window) * (wp / window),
            window,
            window,
            channels,
        ]);
    (windows, [hp, wp])
}

/// Inverse of [`window_partition`]: reassembles the windows and drops the padding.
///
/// # Shapes
/// - `windows`: `[batch * n_windows, window, window, channels]`
/// - returns `[batch, height, width, channels]`.
///
/// # Panics
/// When the window count does not match `padded`.
pub fn window_unpartition(
    windows: Tensor<4>,
    window: usize,
    padded: [usize; 2],
    original: [usize; 2],
) -> Tensor<4> {
    let [hp, wp] = padded;
    let [height, width] = original;
    let [n, _, _, channels] = windows.dims();
    let per_image = (hp / window) * (wp / window);
    assert!(
        per_image > 0 && n % per_image == 0,
        "window_unpartition: bad window count {n}"
    );
    let batch = n / per_image;
    let x = windows
        .reshape([batch, hp / window, wp / window, window, window, channels])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([batch, hp, wp, channels]);
    if hp > height || wp > width {
        x.slice([0..batch, 0..height, 0..width])
    } else {
        x
    }
}

/// Relative position embeddings for every (query, key) pair along one axis (`get_rel_pos`).
///
/// When the table length is not `2 max(q, k) - 1` it is first resized with linear
/// interpolation exactly as the reference does; with SAM's own sizes this never happens.
///
/// # Shapes
/// - `rel_pos`: `[len, channels]` -> `[q_size, k_size, channels]`.
pub fn get_rel_pos(q_size: usize, k_size: usize, rel_pos: Tensor<2>) -> Tensor<3> {
    let device = rel_pos.device();
    let [len, channels] = rel_pos.dims();
    let max_rel_dist = 2 * q_size.max(k_size) - 1;
    let table = if len != max_rel_dist {
        tracing::debug!(len, max_rel_dist, "interpolating a relative position table");
        let m = linear_resize_matrix(len, max_rel_dist);
        Tensor::<2>::from_data(TensorData::new(m, [max_rel_dist, len]), &device).matmul(rel_pos)
    } else {
        rel_pos
    };
    // Scale the coordinates of the shorter side when q and k differ, as the reference does
    // (in f64 like Python, truncated like `.long()` — all values are non-negative).
    let q_scale = (k_size as f64 / q_size as f64).max(1.0);
    let k_scale = (q_size as f64 / k_size as f64).max(1.0);
    let offset = (k_size as f64 - 1.0) * k_scale;
    let index: Vec<i64> = (0..q_size)
        .flat_map(|i| {
            (0..k_size).map(move |j| (i as f64 * q_scale - j as f64 * k_scale + offset) as i64)
        })
        .collect();
    let index = Tensor::<1, Int>::from_data(TensorData::new(index, [q_size * k_size]), &device);
    table.select(0, index).reshape([q_size, k_size, channels])
}

/// Adds the decomposed relative position bias (MViTv2) to attention logits:
/// `attn[b, (qh, qw), (kh, kw)] += <q[b, qh, qw], Rh[qh, kh]> + <q[b, qh, qw], Rw[qw, kw]>`.
///
/// # Shapes
/// - `attn`: `[batch, q_h * q_w, k_h * k_w]`
/// - `q`: `[batch, q_h * q_w, channels]`
/// - `rel_pos_h`, `rel_pos_w`: `[len, channels]`
/// - returns `[batch, q_h * q_w, k_h * k_w]`.
pub fn add_decomposed_rel_pos(
    attn: Tensor<3>,
    q: Tensor<3>,
    rel_pos_h: Tensor<2>,
    rel_pos_w: Tensor<2>,
    q_size: [usize; 2],
    k_size: [usize; 2],
) -> Tensor<3> {
    let [q_h, q_w] = q_size;
    let [k_h, k_w] = k_size;
    let rh = get_rel_pos(q_h, k_h, rel_pos_h); // [q_h, k_h, c]
    let rw = get_rel_pos(q_w, k_w, rel_pos_w); // [q_w, k_w, c]
    let [batch, _, channels] = q.dims();
    let r_q = q.reshape([batch, q_h, q_w, channels]);
    // rel_h[b, h, w, k] = sum_c r_q[b, h, w, c] * rh[h, k, c]: one matmul per query row h.
    let rel_h = r_q
        .clone()
        .permute([1, 0, 2, 3])
        .reshape([q_h, batch * q_w, channels])
        .matmul(rh.swap_dims(1, 2))
        .reshape([q_h, batch, q_w, k_h])
        .permute([1, 0, 2, 3]);
    // rel_w[b, h, w, k] = sum_c r_q[b, h, w, c] * rw[w, k, c]: one matmul per query column w.
    let rel_w = r_q
        .permute([2, 0, 1, 3])
        .reshape([q_w, batch * q_h, channels])
        .matmul(rw.swap_dims(1, 2))
        .reshape([q_w, batch, q_h, k_w])
        .permute([1, 2, 0, 3]);
    let attn = attn.reshape([batch, q_h, q_w, k_h, k_w])
        + rel_h.unsqueeze_dim::<5>(4)
        + rel_w.unsqueeze_dim::<5>(3);
    attn.reshape([batch, q_h * q_w, k_h * k_w])
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;

    /// Attention large enough to be split over threads (2 heads over a 32 x 32 grid, relative
    /// positions on) gives the single-call result bit for bit.
    #[test]
    fn attention_split_over_threads_is_bit_exact() {
        let device = Device::flex();
        let config = SamImageEncoderConfig {
            img_size: 256,
            global_attn_indexes: vec![0],
            depth: 1,
            ..SamImageEncoderConfig::tiny()
        };
        let mut encoder = config.init(&device);
        let attention = &mut encoder.blocks[0].attn;
        let table = |param: &Option<Param<Tensor<2>>>| {
            let dims = param.as_ref().unwrap().dims();
            Some(Param::from_tensor(Tensor::random(
                dims,
                Distribution::Normal(0.0, 0.5),
                &device,
            )))
        };
        attention.rel_pos_h = table(&attention.rel_pos_h);
        attention.rel_pos_w = table(&attention.rel_pos_w);
        let x = Tensor::<4>::random([1, 32, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let pool = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
        };
        let one = pool(1).install(|| attention.forward(x.clone()));
        let split = pool(2).install(|| attention.forward(x.clone()));
        assert_eq!((one - split).abs().max().into_scalar::<f32>(), 0.0);
    }

    /// A windowed block that pads (a 7 x 8 grid, windows of 3 -> 9 x 9) gives the same values
    /// bit for bit whether its projections are trained (the reference's order: pad with zero
    /// tokens, project every token) or frozen (project the real tokens, pad with the bias).
    #[test]
    fn frozen_windowed_block_projects_real_tokens_bit_exact() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let block = SamImageEncoderConfig::tiny().init(&device).blocks[0].clone();
        assert_eq!(block.window_size, 3);
        let bias = block.attn.qkv.bias.as_ref().expect("qkv bias").val();
        assert!(
            bias.abs().min().into_scalar::<f32>() > 0.0,
            "a bias to pad with"
        );
        let x = Tensor::<4>::random([2, 7, 8, 32], Distribution::Normal(0.0, 1.0), &device);
        assert!(!block.attn.projections_frozen());
        let trained = block.forward(x.clone());
        let block = block.no_grad();
        assert!(block.attn.projections_frozen());
        let frozen = block.forward(x);
        assert_eq!(trained.dims(), [2, 7, 8, 32]);
        assert_eq!((trained - frozen).abs().max().into_scalar::<f32>(), 0.0);
    }

    #[test]
    fn window_partition_round_trips_with_padding() {
        let device = Device::flex();
        let x = Tensor::<4>::random(
            [2, 5, 7, 3],
            burn::tensor::Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        let (windows, padded) = window_partition(x.clone(), 3);
        assert_eq!(padded, [6, 9]);
        assert_eq!(windows.dims(), [2 * 2 * 3, 3, 3, 3]);
        let back = window_unpartition(windows, 3, padded, [5, 7]);
        back.into_data().assert_eq(&x.into_data(), true);
    }

    #[test]
    fn linear_resize_matches_pytorch_rule() {
        // F.interpolate(torch.arange(3.).view(1,1,3), size=5, mode="linear"):
        // [0.0, 0.4, 1.0, 1.6, 2.0]
        let m = linear_resize_matrix(3, 5);
        let out: Vec<f32> = (0..5)
            .map(|i| (0..3).map(|j| m[i * 3 + j] * j as f32).sum())
            .collect();
        let expected = [0.0, 0.4, 1.0, 1.6, 2.0];
        for (a, b) in out.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn get_rel_pos_indexes_by_offset() {
        let device = Device::flex();
        // Table rows are their own index, so entry (i, j) must be i - j + (k - 1).
        let table: Vec<f32> = (0..7).map(|r| r as f32).collect();
        let rel = Tensor::<2>::from_data(TensorData::new(table, [7, 1]), &device);
        let out = get_rel_pos(4, 4, rel)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for i in 0..4 {
            for j in 0..4 {
                assert_eq!(out[i * 4 + j], (i + 3 - j) as f32);
            }
        }
    }
}
