//! The composed LEGION model (arXiv 2503.15264): CLIP vision tower -> `mm_projector` -> LLM with
//! the image tokens spliced in for `<image>`, `[SEG]` hidden states -> `text_hidden_fcs` -> SAM
//! prompts -> one mask per `[SEG]`.
//!
//! Reference (read, not copied): opendatalab/LEGION `model/Legion.py` (`LegionForCausalLM`:
//! `model_forward`, `_create_seg_token_mask`, `_process_hidden_states`,
//! `_generate_and_postprocess_masks`, `evaluate`) and groundingLMM
//! `model/llava/llava_with_region_arch.py` (`prepare_inputs_labels_for_multimodal`). What this
//! module reproduces, exactly:
//! - **Splice.** Each row's single `IMAGE_TOKEN_INDEX` (-200) is replaced by the projected patch
//!   tokens (CLIP hidden state -2, CLS dropped: 576 for ViT-L/14-336). Labels get
//!   `IGNORE_INDEX` there; the attention mask gets `num_image_tokens - 1` ones prepended (the
//!   reference prepends them on the left, which equals inserting them at the image since the
//!   image precedes any right padding). GLaMM's `mm_use_im_start_end` branches all give this
//!   same sequence. Position ids are `0..T'` for every row (HF default, right padding).
//! - **`[SEG]` positions.** Row position `p` of the spliced sequence is a `[SEG]` position when
//!   the token at `p + 1` is `[SEG]`: the hidden state whose next-token output is `[SEG]`
//!   (reference: `input_ids[:, 1:] == seg` padded with 575 leading zeros; here computed on the
//!   spliced ids, which is the same for one image before the `[SEG]`s and works for any number
//!   of image tokens). The LLM's final-norm hidden state there goes through
//!   [`seg_projector::TextHiddenFcs`].
//! - **Masks.** Per image, SAM's image embedding (computed once, without gradient as the
//!   reference's `torch.no_grad`), all its `[SEG]` embeddings as one prompt batch (sparse = the
//!   embedding, dense = no-mask), `multimask_output=False`, post-processed to the original
//!   size (the GT mask size in training).
//!
//! Weights: [`Legion::load_glamm`] reads a GLaMM/LEGION combined safetensors file through
//! [`glamm_legion_remaps`]; merged GLaMM/LEGION checkpoints have no CLIP weights
//! (`merge_lora_weights.py` drops `vision_tower`), so CLIP can come from a separate HF file.
//!
//! ```text
//! /work/venv/bin/python scripts/fixtures/legion.py
//! cargo test -p legion-model --test legion_parity
//! ```

pub mod analyze;
pub mod config;
pub mod convert;
pub mod export;
pub mod native;
pub mod parse;
pub mod seg_projector;

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

pub use analyze::{Analysis, Artifact};
pub use config::{LegionClsConfig, LegionConfig, LegionParamCount};
pub use convert::{ConvertReport, ConvertRequest, convert_glamm_to_native};
pub use export::{
    ExportOptions, ExportReport, GLAMM_LEGION_EXPORT_REMAP, export_glamm_safetensors,
};
pub use native::{
    NATIVE_CONFIG_FILE, NATIVE_WEIGHTS_FILE, NativeFiles, load_native, save_native,
    write_native_tensors,
};
pub use seg_projector::{TextHiddenFcs, TextHiddenFcsConfig};

use crate::clip_vision::{
    ClipCheckpointLayout, ClipVisionError, ClipVisionTransformer, clip_tower_remap,
    glamm_clip_prefix,
};
use crate::detection_head::DetectionHead;
use crate::generation::GenerationError;
use crate::llama::Llama;
use crate::precision::cast_to;
use crate::projector::MlpProjector;
use crate::sam::{Sam, SamError, SamPrompts, postprocess_masks};
use crate::tokenizer::{IGNORE_INDEX, IMAGE_TOKEN_INDEX, PaddedBatch, TokenizerError};
use crate::weights::{
    self, AdapterReport, Allowances, KeyRemap, LoadOptions, LoadReport, PeftAdapter, RemapTable,
    WeightsError,
};

/// What a GLaMM / LEGION load may leave out: [`GLAMM_LEGION_IGNORED`], the user's patterns,
/// and the vision tower when CLIP comes from its own file.
fn glamm_allowances(clip: &ClipWeights<'_>, user: &Allowances) -> Allowances {
    let mut allow = Allowances {
        missing: Vec::new(),
        unexpected: crate::weights::compile_patterns(GLAMM_LEGION_IGNORED),
    }
    .extend(user.clone());
    if matches!(clip, ClipWeights::HfFile(_)) {
        let tower = crate::weights::compile_patterns(&[r"^vision_tower\."]);
        allow.missing.extend(tower.iter().cloned());
        allow.unexpected.extend(tower);
    }
    allow
}

/// Errors of the composed model.
#[derive(Debug, thiserror::Error)]
pub enum LegionError {
    /// The component configurations do not fit together.
    #[error("invalid LEGION config: {0}")]
    Config(String),
    /// A field of a component configuration has a value no model can be built from.
    #[error("invalid LEGION config: {0}")]
    InvalidConfig(#[from] crate::config_check::InvalidConfig),
    /// Loading weights failed.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The CLIP tower rejected its input.
    #[error(transparent)]
    Clip(#[from] ClipVisionError),
    /// SAM rejected its input.
    #[error(transparent)]
    Sam(#[from] SamError),
    /// Generation failed.
    #[error(transparent)]
    Generation(#[from] GenerationError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Inputs with inconsistent shapes or ids.
    #[error("invalid LEGION input: {0}")]
    Input(String),
    /// An output tensor (`what`) could not be read back from the device.
    #[error("reading the {what} back from the device: {source}")]
    Readback {
        what: &'static str,
        #[source]
        source: Box<burn::tensor::DataError>,
    },
}

/// Key remaps from the GLaMM / LEGION combined state dict (`LegionForCausalLM.state_dict()`,
/// or the same wrapped by PEFT with `base_model.model.`) to [`Legion`] field paths, in order.
///
/// | reference key | burn path |
/// |---|---|
/// | `model.vision_tower.vision_tower.vision_model.*` | `vision_tower.*` (HF CLIP renames) |
/// | `model.mm_projector.{0,2}.*` | `mm_projector.{fc1,fc2}.*` |
/// | `model.{embed_tokens,layers,norm}.*`, `lm_head.*` | `llm.*` |
/// | `model.grounding_encoder.*` | `grounding_encoder.*` (SAM `Sequential` renames) |
/// | `model.text_hidden_fcs.0.{0,2}.*` | `text_hidden_fcs.{fc1,fc2}.*` |
pub fn glamm_legion_remaps() -> Vec<KeyRemap> {
    let mut remaps: Vec<KeyRemap> = clip_tower_remap!(
        glamm_clip_prefix!(), "vision_tower.", r"vision_tower\.";
        [(r"^base_model\.model\.", "")];
        [
            (r"^model\.mm_projector\.0\.", "mm_projector.fc1."),
            (r"^model\.mm_projector\.2\.", "mm_projector.fc2.")
        ]
    )
    .to_vec();
    remaps.extend_from_slice(seg_projector::GLAMM_TEXT_HIDDEN_FCS_REMAP);
    remaps.push((r"^model\.grounding_encoder\.", "grounding_encoder."));
    // SAM's rules match after any `.`, so they apply under the `grounding_encoder.` prefix.
    remaps.extend_from_slice(crate::sam::SAM_REMAP);
    remaps.push((r"^model\.(embed_tokens|layers|norm)\.", "llm.$1."));
    remaps.push((r"^lm_head\.", "llm.lm_head."));
    remaps
}

/// File tensors (after [`glamm_legion_remaps`]) that [`Legion::load_glamm`] ignores: GLaMM's
/// `region_encoder` (kept in LEGION checkpoints, unused by the artifact task), and two buffers
/// that transformers < 4.31 saved (GLaMM pins one of early 2023): the CLIP `position_ids` and
/// each LLaMA layer's `rotary_emb.inv_freq` (RoPE frequencies, recomputed here).
pub const GLAMM_LEGION_IGNORED: &[&str] = &[
    r"^model\.region_encoder\.",
    r"^vision_tower\.embeddings\.position_ids$",
    r"^llm\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$",
];

/// Where [`Legion::load_glamm`] takes the CLIP weights from.
#[derive(Debug, Clone, Copy)]
pub enum ClipWeights<'a> {
    /// From the combined file (`model.vision_tower.vision_tower.vision_model.*`): DeepSpeed
    /// `zero_to_fp32` dumps, PEFT state dicts.
    InCheckpoint,
    /// From a separate HF CLIP safetensors file (`openai/clip-vit-large-patch14-336`), as merged
    /// GLaMM/LEGION checkpoints need; vision-tower tensors in the combined file are ignored.
    HfFile(&'a Path),
}

/// The LEGION model (`LegionForCausalLM`), with the reference's component names.
#[derive(Module, Debug)]
pub struct Legion {
    /// Global image encoder (CLIP).
    pub vision_tower: ClipVisionTransformer,
    /// CLIP features -> LLM embeddings.
    pub mm_projector: MlpProjector,
    /// The LLM.
    pub llm: Llama,
    /// SAM.
    pub grounding_encoder: Sam,
    /// `[SEG]` hidden states -> SAM prompts.
    pub text_hidden_fcs: TextHiddenFcs,
    /// CLIP hidden state index fed to the projector (-2).
    pub select_layer: isize,
}

/// The LLM input of a batch after the image splice.
#[derive(Debug, Clone)]
pub struct MultimodalInputs {
    /// `[B, T', hidden]` with `T' = T + num_image_tokens - 1`.
    pub embeds: Tensor<3>,
    /// `[B, T']`, 1 = real token.
    pub attention_mask: Tensor<2, Int>,
    /// `[B, T']` targets with [`IGNORE_INDEX`] on the image tokens, when labels were given.
    pub labels: Option<Tensor<2, Int>>,
    /// Per row, the spliced ids (image positions hold [`IMAGE_TOKEN_INDEX`]), length `T'`.
    pub expanded_ids: Vec<Vec<i64>>,
}

/// The images of a training or inference batch (the tensors of `legion_data`'s `LegionBatch`).
#[derive(Debug, Clone)]
pub struct LegionImages {
    /// CLIP input `[B, 3, S, S]` (CLIP-normalised).
    pub clip_pixels: Tensor<4>,
    /// SAM input `[B, 3, img_size, img_size]` (normalised, padded bottom/right).
    pub sam_pixels: Tensor<4>,
    /// Per image, `(h, w)` after the longest-side resize, before padding.
    pub sam_resized_hw: Vec<(usize, usize)>,
    /// Per image, `(h, w)` of the original image (the GT mask size).
    pub original_hw: Vec<(usize, usize)>,
}

/// Output of [`Legion::forward_train`].
#[derive(Debug, Clone)]
pub struct LegionTrainOutput {
    /// `[B, T', vocab]` next-token logits over the spliced sequence.
    pub logits: Tensor<3>,
    /// `[B, T']` spliced labels (for [`causal_lm_loss`]).
    pub labels: Tensor<2, Int>,
    /// `[B, T']` spliced attention mask.
    pub attention_mask: Tensor<2, Int>,
    /// Per row, the spliced positions whose hidden state was read (next token = `[SEG]`).
    pub seg_positions: Vec<Vec<usize>>,
    /// Per row, `[n_seg, out_dim]` `text_hidden_fcs` outputs (SAM prompts).
    pub seg_embeddings: Vec<Tensor<2>>,
    /// Per row, `[n_seg, H_orig, W_orig]` mask logits at the original size.
    pub pred_masks: Vec<Tensor<3>>,
}

impl Legion {
    /// Number of image tokens spliced in for `<image>`.
    pub fn num_image_tokens(&self) -> usize {
        let [positions, _] = self
            .vision_tower
            .embeddings
            .position_embedding
            .weight
            .dims();
        positions - 1
    }

    fn vocab_size(&self) -> usize {
        self.llm.embed_tokens.weight.dims()[0]
    }

    /// Loads a GLaMM / LEGION combined checkpoint strictly (every model tensor must be
    /// present; only [`GLAMM_LEGION_IGNORED`] may be left over), CLIP from where `clip` says.
    /// Any layout [`weights::CheckpointSource::resolve`] accepts (single file, HF folder,
    /// sharded with index, `.bin`).
    ///
    /// # Errors
    /// [`LegionError::Weights`] listing every missing / unexpected tensor and shape error.
    pub fn load_glamm(self, path: &Path, clip: ClipWeights<'_>) -> Result<Self, LegionError> {
        self.load_glamm_with(path, clip, &Allowances::strict(), &LoadOptions::default())
            .map(|(model, _)| model)
    }

    /// [`Legion::load_glamm`] with user allowances on top of [`GLAMM_LEGION_IGNORED`]
    /// (`--allow-missing` / `--allow-unexpected`) and load options (dtype, progress).
    ///
    /// # Errors
    /// As [`Legion::load_glamm`].
    pub fn load_glamm_with(
        mut self,
        path: &Path,
        clip: ClipWeights<'_>,
        allow: &Allowances,
        options: &LoadOptions<'_>,
    ) -> Result<(Self, LoadReport), LegionError> {
        let allow = glamm_allowances(&clip, allow);
        let (loaded, mut report) =
            weights::load_weights(self, path, &glamm_legion_remaps(), &allow, options)?;
        self = loaded;
        if let ClipWeights::HfFile(clip_path) = clip {
            // Same dtype policy as the rest; the tower's tensors count as loaded (from the
            // CLIP file), not as "left at their initial values".
            let layout = ClipCheckpointLayout::HfClip;
            let (tower, clip_report) = weights::load_weights(
                self.vision_tower,
                clip_path,
                layout.remaps(),
                &layout.allowances(),
                options,
            )?;
            self.vision_tower = tower;
            report.absorb(clip_report, "vision_tower.");
        }
        Ok((self, report))
    }

    /// Merges a PEFT LoRA adapter trained on the GLaMM / LEGION model (keys
    /// `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`, ...) into the loaded
    /// weights (see [`weights::peft`]).
    ///
    /// # Errors
    /// [`LegionError::Weights`] when the adapter is unreadable or any of its tensors does not
    /// fit the model.
    pub fn merge_peft_adapter(
        self,
        adapter: &Path,
        options: &LoadOptions<'_>,
    ) -> Result<(Self, AdapterReport), LegionError> {
        let adapter = PeftAdapter::open(adapter)?;
        let remaps = RemapTable::new(&glamm_legion_remaps())?;
        Ok(weights::merge_peft_adapter(
            self, &adapter, &remaps, options,
        )?)
    }

    /// Projected image tokens (LLaVA `encode_images`): CLIP hidden state `select_layer`, CLS
    /// dropped, through `mm_projector`.
    ///
    /// # Shapes
    /// `clip_pixels` `[B, 3, S, S]` -> `[B, num_image_tokens, hidden]`.
    ///
    /// # Errors
    /// [`LegionError::Clip`] on a wrong input shape.
    pub fn encode_images(&self, clip_pixels: Tensor<4>) -> Result<Tensor<3>, LegionError> {
        let features = self
            .vision_tower
            .forward_features(clip_pixels, self.select_layer)?;
        Ok(self.mm_projector.forward(features.patches))
    }

    /// `prepare_inputs_labels_for_multimodal` for LEGION's case: every row holds exactly one
    /// [`IMAGE_TOKEN_INDEX`], replaced by that row's image tokens.
    ///
    /// # Shapes
    /// - `image_features`: `[B, N, hidden]`
    /// - `input_ids`, `attention_mask`, `labels`: row-major `[B, T]`
    ///
    /// # Errors
    /// [`LegionError::Input`] when lengths disagree, a row has no or several image tokens, or
    /// an id is outside the vocabulary.
    pub fn prepare_multimodal(
        &self,
        image_features: Tensor<3>,
        input_ids: &[i64],
        attention_mask: &[i64],
        labels: Option<&[i64]>,
        seq: usize,
    ) -> Result<MultimodalInputs, LegionError> {
        let [batch, num_image_tokens, hidden] = image_features.dims();
        let input_err = |m: String| LegionError::Input(m);
        if seq == 0 || input_ids.len() != batch * seq || attention_mask.len() != batch * seq {
            return Err(input_err(format!(
                "{} ids and {} mask values for {batch} images of {seq} tokens",
                input_ids.len(),
                attention_mask.len()
            )));
        }
        if labels.is_some_and(|l| l.len() != batch * seq) {
            return Err(input_err("labels and ids differ in length".into()));
        }
        let vocab = self.vocab_size() as i64;
        let mut image_at = Vec::with_capacity(batch);
        let mut embed_ids = Vec::with_capacity(batch * seq);
        for row in 0..batch {
            let ids = &input_ids[row * seq..(row + 1) * seq];
            let images: Vec<usize> = (0..seq).filter(|&t| ids[t] == IMAGE_TOKEN_INDEX).collect();
            if images.len() != 1 {
                return Err(input_err(format!(
                    "row {row} has {} image tokens ({IMAGE_TOKEN_INDEX}); LEGION needs exactly one",
                    images.len()
                )));
            }
            if let Some(&bad) = ids
                .iter()
                .find(|&&id| id != IMAGE_TOKEN_INDEX && !(0..vocab).contains(&id))
            {
                return Err(input_err(format!(
                    "row {row}: token id {bad} is outside the vocabulary of {vocab}"
                )));
            }
            image_at.push(images[0]);
            // The placeholder's embedding is discarded; any valid id will do.
            embed_ids.extend(ids.iter().map(|&id| id.max(0)));
        }
        let device = image_features.device();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(embed_ids, [batch, seq]), &device);
        let text = self.llm.embed(ids);
        // The LLM computes in its weights' dtype (crate::precision).
        let image_features = cast_to(image_features, text.dtype());
        let expanded_len = seq + num_image_tokens - 1;

        let mut rows = Vec::with_capacity(batch);
        let mut mask = Vec::with_capacity(batch * expanded_len);
        let mut new_labels = Vec::with_capacity(batch * expanded_len);
        let mut expanded_ids = Vec::with_capacity(batch);
        for (row, &at) in image_at.iter().enumerate() {
            let text_row = text.clone().narrow(0, row, 1);
            let mut parts = Vec::with_capacity(3);
            if at > 0 {
                parts.push(text_row.clone().narrow(1, 0, at));
            }
            parts.push(image_features.clone().narrow(0, row, 1));
            if at + 1 < seq {
                parts.push(text_row.narrow(1, at + 1, seq - at - 1));
            }
            rows.push(Tensor::cat(parts, 1));

            mask.extend(std::iter::repeat_n(1i64, num_image_tokens - 1));
            mask.extend_from_slice(&attention_mask[row * seq..(row + 1) * seq]);
            let splice = |values: &[i64], fill: i64| {
                let mut out = Vec::with_capacity(expanded_len);
                out.extend_from_slice(&values[..at]);
                out.extend(std::iter::repeat_n(fill, num_image_tokens));
                out.extend_from_slice(&values[at + 1..]);
                out
            };
            let ids_row = &input_ids[row * seq..(row + 1) * seq];
            expanded_ids.push(splice(ids_row, IMAGE_TOKEN_INDEX));
            if let Some(labels) = labels {
                new_labels.extend(splice(&labels[row * seq..(row + 1) * seq], IGNORE_INDEX));
            }
        }
        let embeds = Tensor::cat(rows, 0);
        debug_assert_eq!(embeds.dims(), [batch, expanded_len, hidden]);
        let shape = [batch, expanded_len];
        Ok(MultimodalInputs {
            embeds,
            attention_mask: Tensor::from_data(TensorData::new(mask, shape), &device),
            labels: labels.map(|_| Tensor::from_data(TensorData::new(new_labels, shape), &device)),
            expanded_ids,
        })
    }

    /// Teacher-forced training forward (`model_forward` without the losses).
    ///
    /// `tokens` is the right-padded batch of [`crate::tokenizer::LegionTokenizer::collate`]
    /// (one image placeholder per row); `seg_token_id` the `[SEG]` id. Rows may hold any number
    /// of `[SEG]`, including none (their masks are `[0, H, W]`, SAM is not run for them).
    ///
    /// # Shapes
    /// - `images`: see [`LegionImages`], batch `B` = `tokens.batch`
    /// - output: see [`LegionTrainOutput`]
    ///
    /// # Errors
    /// [`LegionError::Input`] on inconsistent batch sizes or ids, [`LegionError::Clip`] /
    /// [`LegionError::Sam`] on wrong image shapes or sizes.
    pub fn forward_train(
        &self,
        images: &LegionImages,
        tokens: &PaddedBatch,
        seg_token_id: u32,
    ) -> Result<LegionTrainOutput, LegionError> {
        let batch = tokens.batch;
        self.check_images(images, batch)?;
        let features = self.encode_images(images.clip_pixels.clone())?;
        let inputs = self.prepare_multimodal(
            features,
            &tokens.input_ids,
            &tokens.attention_mask,
            Some(&tokens.labels),
            tokens.seq,
        )?;
        let out = self.llm.forward_embeds(
            inputs.embeds,
            Some(inputs.attention_mask.clone()),
            None,
            None,
        );
        let seg_positions: Vec<Vec<usize>> = inputs
            .expanded_ids
            .iter()
            .map(|ids| seg_positions(ids, seg_token_id))
            .collect();
        let mut seg_embeddings = Vec::with_capacity(batch);
        let mut pred_masks = Vec::with_capacity(batch);
        for (row, positions) in seg_positions.iter().enumerate() {
            let hidden = gather_rows(out.last_hidden_state.clone(), row, positions);
            let (embeddings, masks) = self.segment_image(
                images.sam_pixels.clone().narrow(0, row, 1),
                hidden,
                images.sam_resized_hw[row],
                images.original_hw[row],
            )?;
            seg_embeddings.push(embeddings);
            pred_masks.push(masks.logits);
        }
        Ok(LegionTrainOutput {
            logits: out.logits,
            // Labels were given, so the splice returned them.
            labels: inputs.labels.expect("labels were passed"),
            attention_mask: inputs.attention_mask,
            seg_positions,
            seg_embeddings,
            pred_masks,
        })
    }

    pub(crate) fn check_images(
        &self,
        images: &LegionImages,
        batch: usize,
    ) -> Result<(), LegionError> {
        let clip_batch = images.clip_pixels.dims()[0];
        let sam_dims = images.sam_pixels.dims();
        let img = self.grounding_encoder.img_size();
        if clip_batch != batch
            || sam_dims[0] != batch
            || images.sam_resized_hw.len() != batch
            || images.original_hw.len() != batch
        {
            return Err(LegionError::Input(format!(
                "batch of {batch} token rows but {clip_batch} CLIP images, {} SAM images, {} \
                 resized sizes, {} original sizes",
                sam_dims[0],
                images.sam_resized_hw.len(),
                images.original_hw.len()
            )));
        }
        if sam_dims[1..] != [3, img, img] {
            return Err(LegionError::Input(format!(
                "SAM input is {sam_dims:?}, expected [{batch}, 3, {img}, {img}]"
            )));
        }
        Ok(())
    }

    /// `text_hidden_fcs` and SAM for one image: `hidden` `[n, H]` (`[SEG]` hidden states) ->
    /// (`[n, out_dim]` prompts, masks at the original size). `n = 0` runs nothing.
    pub(crate) fn segment_image(
        &self,
        sam_pixels: Tensor<4>,
        hidden: Tensor<2>,
        resized_hw: (usize, usize),
        original_hw: (usize, usize),
    ) -> Result<(Tensor<2>, SegmentedMasks), LegionError> {
        let [n, _] = hidden.dims();
        let device = hidden.device();
        let out_dim = self.grounding_encoder.prompt_encoder.embed_dim;
        let (oh, ow) = original_hw;
        if n == 0 {
            return Ok((
                Tensor::zeros([0, out_dim], &device),
                SegmentedMasks {
                    logits: Tensor::zeros([0, oh, ow], &device),
                    iou_predictions: Tensor::zeros([0], &device),
                },
            ));
        }
        let embeddings = self.text_hidden_fcs.forward(hidden);
        let sam = &self.grounding_encoder;
        // Frozen and run under `torch.no_grad()` in the reference: a frozen encoder runs on the
        // plain backend (no autodiff graph at all; `detach` after a tracked forward would leave
        // the encoder's graph nodes behind, which made long runs slow down step after step).
        // Only a run that trains the encoder itself (small configs, `--full`) tracks it.
        // "Trains" is graph participation, not `is_require_grad`: under mixed precision the
        // weights here are half-precision casts of the f32 parameters (non-leaf tensors).
        let image_embedding = if sam.image_encoder.patch_embed.proj.weight.is_tracked() {
            sam.image_encoder.forward(sam_pixels)
        } else if sam_pixels.is_autodiff() {
            sam.image_encoder
                .valid()
                .forward(sam_pixels.inner())
                .autodiff()
        } else {
            sam.image_encoder.forward(sam_pixels)
        };
        let (sparse, dense) = sam
            .prompt_encoder
            .forward(SamPrompts::text(embeddings.clone()));
        let (low_res, iou) = sam.mask_decoder.forward(
            image_embedding,
            sam.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            false,
        );
        let masks = postprocess_masks(
            low_res,
            sam.img_size(),
            [resized_hw.0, resized_hw.1],
            [oh, ow],
        )?;
        Ok((
            embeddings,
            SegmentedMasks {
                logits: masks.reshape([n, oh, ow]),
                iou_predictions: iou.reshape([n]),
            },
        ))
    }
}

/// SAM's output for the `[SEG]` prompts of one image.
#[derive(Debug, Clone)]
pub(crate) struct SegmentedMasks {
    /// `[n, H_orig, W_orig]` logits.
    pub logits: Tensor<3>,
    /// `[n]` SAM IoU predictions of the single-mask output.
    pub iou_predictions: Tensor<1>,
}

/// Positions `p` of `ids` whose next token is `seg_token_id` (the hidden state at `p`
/// produces `[SEG]`).
pub fn seg_positions(ids: &[i64], seg_token_id: u32) -> Vec<usize> {
    ids.windows(2)
        .enumerate()
        .filter(|(_, w)| w[1] == seg_token_id as i64)
        .map(|(p, _)| p)
        .collect()
}

/// Rows `positions` of batch row `row` of `[B, T, H]` -> `[n, H]`.
fn gather_rows(states: Tensor<3>, row: usize, positions: &[usize]) -> Tensor<2> {
    let [_, seq, hidden] = states.dims();
    let device = states.device();
    let row_states = states.narrow(0, row, 1).reshape([seq, hidden]);
    if positions.is_empty() {
        return Tensor::zeros([0, hidden], &device);
    }
    let index: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
    let n = index.len();
    row_states.select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(index, [n]), &device),
    )
}

/// Token cross-entropy as LLaVA's `LlavaLlamaForCausalLM.forward`: logits at `t` predict the
/// label at `t + 1`, mean over the labels that are not [`IGNORE_INDEX`].
///
/// Differs from PyTorch only when no label is valid: PyTorch returns NaN (0 / 0), this returns 0.
///
/// # Shapes
/// `logits` `[B, T, V]`, `labels` `[B, T]` -> `[1]`.
///
/// # Panics
/// If the shapes disagree or a valid label is `>= V` (backend-dependent gather error).
pub fn causal_lm_loss(logits: Tensor<3>, labels: Tensor<2, Int>) -> Tensor<1> {
    let (sum, count) = causal_lm_loss_sum(logits, labels);
    sum / count.clamp_min(1.0)
}

/// The parts of [`causal_lm_loss`]: the summed negative log-likelihood of the supervised
/// labels and their number (both `[1]`), for losses normalised over more than one batch.
///
/// # Shapes
/// `logits` `[B, T, V]`, `labels` `[B, T]` -> (`[1]`, `[1]`).
///
/// # Panics
/// As [`causal_lm_loss`].
pub fn causal_lm_loss_sum(logits: Tensor<3>, labels: Tensor<2, Int>) -> (Tensor<1>, Tensor<1>) {
    let [batch, seq, vocab] = logits.dims();
    assert_eq!(labels.dims(), [batch, seq], "labels must be [B, T]");
    let device = logits.device();
    if seq < 2 {
        return (Tensor::zeros([1], &device), Tensor::zeros([1], &device));
    }
    let n = batch * (seq - 1);
    let log_probs = log_softmax(logits.narrow(1, 0, seq - 1).reshape([n, vocab]), 1);
    let targets = labels.narrow(1, 1, seq - 1).reshape([n, 1]);
    let valid = targets.clone().not_equal_elem(IGNORE_INDEX).float();
    let picked = log_probs.gather(1, targets.clamp_min(0));
    let count = valid.clone().sum();
    ((picked * valid).sum().neg(), count)
}

/// `LegionForCls`: real/fake classification from the CLIP CLS token of hidden layer -2.
#[derive(Module, Debug)]
pub struct LegionForCls {
    /// CLIP vision tower.
    pub vision_tower: ClipVisionTransformer,
    /// `prediction_head`.
    pub prediction_head: DetectionHead,
    /// CLIP hidden state whose CLS is classified (-2).
    pub select_layer: isize,
}

/// Key remaps from a `LegionForCls` state dict (GLaMM naming) to [`LegionForCls`] paths.
pub const LEGION_CLS_REMAP: &[KeyRemap] = clip_tower_remap!(
    glamm_clip_prefix!(), "vision_tower.", r"vision_tower\.";
    [(r"^base_model\.model\.", "")];
    [
        (r"^prediction_head\.0\.", "prediction_head.fc1."),
        (r"^prediction_head\.2\.", "prediction_head.fc2.")
    ]
);

impl LegionForCls {
    /// Class logits (index 0 fake, 1 real).
    ///
    /// # Shapes
    /// `clip_pixels` `[B, 3, S, S]` -> `[B, 2]`.
    ///
    /// # Errors
    /// [`LegionError::Clip`] on a wrong input shape.
    pub fn forward(&self, clip_pixels: Tensor<4>) -> Result<Tensor<2>, LegionError> {
        let features = self
            .vision_tower
            .forward_features(clip_pixels, self.select_layer)?;
        Ok(self.prediction_head.forward(features.cls))
    }

    /// Loads the tower and head from a `LegionForCls` state dict; the LLM, projector and SAM
    /// tensors of the file (`model.*`, `lm_head.*`) are ignored.
    ///
    /// # Errors
    /// [`LegionError::Weights`] listing every missing / unexpected tensor.
    pub fn load_glamm(self, path: &Path) -> Result<Self, LegionError> {
        let allow = Allowances {
            missing: Vec::new(),
            unexpected: crate::weights::compile_patterns(&[
                r"^(model|lm_head)\.",
                r"^vision_tower\.embeddings\.position_ids$",
            ]),
        };
        Ok(weights::load_safetensors(
            self,
            path,
            LEGION_CLS_REMAP,
            &allow,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn apply(key: &str) -> String {
        glamm_legion_remaps()
            .iter()
            .fold(key.to_string(), |k, (from, to)| {
                regex_lite::Regex::new(from)
                    .unwrap()
                    .replace_all(&k, *to)
                    .into_owned()
            })
    }

    #[test]
    fn remaps_map_every_component() {
        for (from, to) in [
            (
                "model.vision_tower.vision_tower.vision_model.encoder.layers.3.mlp.fc1.weight",
                "vision_tower.layers.3.mlp.fc1.weight",
            ),
            (
                "model.vision_tower.vision_tower.vision_model.pre_layrnorm.bias",
                "vision_tower.pre_layernorm.bias",
            ),
            ("model.mm_projector.2.bias", "mm_projector.fc2.bias"),
            (
                "model.layers.31.self_attn.q_proj.weight",
                "llm.layers.31.self_attn.q_proj.weight",
            ),
            ("model.embed_tokens.weight", "llm.embed_tokens.weight"),
            ("model.norm.weight", "llm.norm.weight"),
            ("lm_head.weight", "llm.lm_head.weight"),
            ("base_model.model.lm_head.weight", "llm.lm_head.weight"),
            (
                "model.grounding_encoder.image_encoder.neck.2.weight",
                "grounding_encoder.image_encoder.neck.conv2.weight",
            ),
            (
                "model.grounding_encoder.mask_decoder.output_upscaling.3.bias",
                "grounding_encoder.mask_decoder.output_upscaling.conv_transpose2.bias",
            ),
            (
                "model.grounding_encoder.image_encoder.blocks.0.attn.qkv.weight",
                "grounding_encoder.image_encoder.blocks.0.attn.qkv.weight",
            ),
            (
                "model.text_hidden_fcs.0.0.weight",
                "text_hidden_fcs.fc1.weight",
            ),
            ("model.text_hidden_fcs.0.2.bias", "text_hidden_fcs.fc2.bias"),
            (
                "model.region_encoder.mlvl_fuse.0.weight",
                "model.region_encoder.mlvl_fuse.0.weight",
            ),
        ] {
            assert_eq!(apply(from), to, "{from}");
        }
    }

    #[test]
    fn presets_are_consistent() {
        for (name, config) in [
            ("fixture", LegionConfig::fixture()),
            ("tiny", LegionConfig::tiny()),
            ("small", LegionConfig::small()),
            ("legion-7b", LegionConfig::legion_7b()),
        ] {
            config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let small = LegionConfig::small().init(&Device::flex()).unwrap();
        assert_eq!(small.num_image_tokens(), 64);
    }

    #[test]
    fn seg_positions_point_before_each_seg() {
        assert_eq!(seg_positions(&[1, 5, 9, 7, 9, 2], 9), vec![1, 3]);
        assert!(seg_positions(&[9], 9).is_empty());
        assert!(seg_positions(&[1, 2, 3], 9).is_empty());
    }

    #[test]
    fn causal_lm_loss_ignores_masked_labels() {
        let device = Device::flex();
        // Uniform logits over 4 tokens: every valid target costs ln 4.
        let logits = Tensor::<3>::zeros([1, 3, 4], &device);
        let labels = Tensor::<2, Int>::from_data([[7, IGNORE_INDEX, 2]], &device);
        let loss = causal_lm_loss(logits, labels).into_scalar::<f32>();
        assert!((loss - 4f32.ln()).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn splice_replaces_the_placeholder() {
        let device = Device::flex();
        let model = LegionConfig::tiny().init(&device).unwrap();
        let n = model.num_image_tokens();
        assert_eq!(n, 16);
        let features = Tensor::<3>::ones([2, n, 64], &device);
        let ids = [1, IMAGE_TOKEN_INDEX, 5, 6, 1, 4, IMAGE_TOKEN_INDEX, 0];
        let mask = [1, 1, 1, 1, 1, 1, 1, 0];
        let labels = [
            IGNORE_INDEX,
            IGNORE_INDEX,
            5,
            6,
            IGNORE_INDEX,
            4,
            IGNORE_INDEX,
            IGNORE_INDEX,
        ];
        let out = model
            .prepare_multimodal(features, &ids, &mask, Some(&labels), 4)
            .unwrap();
        assert_eq!(out.embeds.dims(), [2, 4 + n - 1, 64]);
        let mask: Vec<i64> = out
            .attention_mask
            .into_data()
            .try_into_vec_as::<i64>()
            .unwrap();
        assert_eq!(mask.iter().filter(|&&m| m == 0).count(), 1);
        assert_eq!(mask[2 * (n + 3) - 1], 0);
        let labels: Vec<i64> = out
            .labels
            .unwrap()
            .into_data()
            .try_into_vec_as::<i64>()
            .unwrap();
        assert_eq!(&labels[n + 1..n + 3], &[5, 6]);
        assert_eq!(
            out.expanded_ids[1][2..2 + n],
            vec![IMAGE_TOKEN_INDEX; n][..]
        );
        // Exactly one image per row.
        let bad = model.prepare_multimodal(
            Tensor::<3>::ones([1, n, 64], &device),
            &[1, 2, 3],
            &[1, 1, 1],
            None,
            3,
        );
        assert!(matches!(bad, Err(LegionError::Input(_))));
    }
}
