//! LEGION inference: greedy generation with the image spliced into the prompt, one SAM mask per
//! generated `[SEG]`, and the parsed answer.
//!
//! Reference: `LegionForCausalLM.evaluate` (`model/Legion.py`) and `scripts/loc_exp/infer.py`.
//! LEGION's config sets `use_cache = False`, so HF `generate` re-runs the whole sequence each
//! step and `hidden_states[-1]` of the last step holds the final-norm state of every position
//! but the last token; the `[SEG]` mask `output_ids[:, 1:] == seg` (after 575 leading zeros)
//! selects, for each generated `[SEG]`, the state at the position *before* it — the state whose
//! logits produced `[SEG]`. Here generation uses the KV cache (same math) and
//! [`crate::generation::GenerationOutput::hidden_states`] returns exactly those states. The
//! k-th `[SEG]` pairs with the k-th `<p>...</p>` phrase.

use std::time::Instant;

use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

use super::parse::parse_answer;
use super::{Legion, LegionError, LegionImages};
use crate::generation::{FinishReason, GenerationConfig, generate_from_embeds};
use crate::tokenizer::{LEGION_QUESTION, LegionTokenizer, legion_inference_prompt};

/// One `[SEG]` of an answer: its phrase, explanation and mask.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The k-th `<p>...</p>` phrase for the k-th `[SEG]` (`None` when the answer has fewer
    /// phrases than `[SEG]` tokens).
    pub phrase: Option<String>,
    /// The phrase's explanation ([`super::parse::explanations`]); `None` with `phrase`.
    pub explanation: Option<String>,
    /// Mask logits at the original image size, `[H, W]`; the mask is `logits > 0`.
    pub mask_logits: Tensor<2>,
    /// Mean sigmoid probability over the mask's pixels (`logits > 0`); 0 for an empty mask.
    pub score: f32,
    /// SAM's IoU prediction for this mask (its single-mask output token).
    pub iou_prediction: f32,
    /// Number of mask pixels (`logits > 0`).
    pub area: usize,
}

impl Artifact {
    /// The binary mask `logits > 0`, `[H, W]`.
    pub fn binary_mask(&self) -> Tensor<2, burn::tensor::Bool> {
        self.mask_logits.clone().greater_elem(0.0)
    }
}

/// LEGION's analysis of one image.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The answer after `"ASSISTANT: "` (tags kept; the final `</s>` is not decoded).
    pub text: String,
    /// Tags and `[SEG]` removed, whitespace collapsed (`infer.py`'s `cleaned_str`).
    pub clean_text: String,
    /// All `<p>...</p>` phrases in order.
    pub phrases: Vec<String>,
    /// One entry per generated `[SEG]`, in order.
    pub artifacts: Vec<Artifact>,
    /// The generated token ids (including a final EOS).
    pub generated_tokens: Vec<u32>,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
}

impl Legion {
    /// Analyses a batch of images with LEGION's question ([`LEGION_QUESTION`]).
    ///
    /// # Shapes
    /// `images`: see [`LegionImages`] (any batch size `B`; all rows share the prompt).
    ///
    /// # Errors
    /// As [`Legion::analyze_with_question`].
    pub fn analyze(
        &self,
        images: &LegionImages,
        tokenizer: &LegionTokenizer,
        config: &GenerationConfig,
    ) -> Result<Vec<Analysis>, LegionError> {
        self.analyze_with_question(images, tokenizer, LEGION_QUESTION, config)
    }

    /// Generates an answer to `question` for every image (`llava_v1` prompt with the image
    /// prefix, [`legion_inference_prompt`]), then segments every generated `[SEG]` at the
    /// original size. `config.return_hidden_states` is forced on.
    ///
    /// # Errors
    /// [`LegionError::Input`] on inconsistent batch sizes, [`LegionError::Tokenizer`] when the
    /// prompt cannot be encoded or the output decoded (e.g. the LLM's vocabulary is larger than
    /// the tokenizer's), [`LegionError::Generation`], [`LegionError::Clip`],
    /// [`LegionError::Sam`].
    pub fn analyze_with_question(
        &self,
        images: &LegionImages,
        tokenizer: &LegionTokenizer,
        question: &str,
        config: &GenerationConfig,
    ) -> Result<Vec<Analysis>, LegionError> {
        let batch = images.clip_pixels.dims()[0];
        self.check_images(images, batch)?;
        let prompt_ids = tokenizer.tokenize_with_image(&legion_inference_prompt(question))?;
        let seq = prompt_ids.len();
        let ids: Vec<i64> = (0..batch)
            .flat_map(|_| prompt_ids.iter().copied())
            .collect();
        let mask = vec![1i64; batch * seq];
        let started = Instant::now();
        let features = self.encode_images(images.clip_pixels.clone())?;
        // The dims read nothing back: on an asynchronous backend (wgpu, cuda) this time is
        // queued work, and the wait shows up in the next stage.
        tracing::info!(
            batch,
            seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
            "CLIP vision tower + projector"
        );
        let inputs = self.prepare_multimodal(features, &ids, &mask, None, seq)?;
        let mut config = config.clone();
        config.return_hidden_states = true;
        let generated =
            generate_from_embeds(&self.llm, inputs.embeds, inputs.attention_mask, &config)?;
        // `return_hidden_states` was set above, so the states are there.
        let hidden_states = generated
            .hidden_states
            .expect("hidden states were requested");
        let seg = tokenizer.special().seg;

        let mut analyses = Vec::with_capacity(batch);
        for (row, tokens) in generated.tokens.iter().enumerate() {
            let seg_steps: Vec<usize> = (0..tokens.len()).filter(|&k| tokens[k] == seg).collect();
            let hidden = select_steps(hidden_states[row].clone(), &seg_steps);
            let started = Instant::now();
            let (_, masks) = self.segment_image(
                images.sam_pixels.clone().narrow(0, row, 1),
                hidden,
                images.sam_resized_hw[row],
                images.original_hw[row],
            )?;
            tracing::info!(
                row,
                masks = seg_steps.len(),
                seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
                "SAM image encoder + mask decoder"
            );
            let finish_reason = generated.finish_reasons[row];
            let answer_tokens = match finish_reason {
                FinishReason::Eos => &tokens[..tokens.len() - 1],
                _ => &tokens[..],
            };
            // The reference decodes prompt + answer and keeps the text after the last
            // "ASSISTANT: "; decoding the answer alone gives the same text whenever that split
            // works, and stays correct when the answer starts with a special token (then the
            // decoded prompt ends "ASSISTANT:<p>" and the reference's split finds nothing).
            let parsed = parse_answer(&tokenizer.decode(answer_tokens, false)?);

            let [n, h, w] = masks.logits.dims();
            let iou: Vec<f32> = masks
                .iou_predictions
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|source| LegionError::Readback {
                    what: "IoU predictions",
                    source: Box::new(source),
                })?;
            let artifacts = (0..n)
                .map(|k| {
                    let logits = masks.logits.clone().narrow(0, k, 1).reshape([h, w]);
                    let (score, area) = mask_score(&logits);
                    Artifact {
                        phrase: parsed.phrases.get(k).cloned(),
                        explanation: parsed.explanations.get(k).cloned(),
                        mask_logits: logits,
                        score,
                        iou_prediction: iou[k],
                        area,
                    }
                })
                .collect();
            analyses.push(Analysis {
                text: parsed.text,
                clean_text: parsed.clean_text,
                phrases: parsed.phrases,
                artifacts,
                generated_tokens: tokens.clone(),
                finish_reason,
            });
        }
        Ok(analyses)
    }
}

/// Rows `steps` of `[n_generated, H]`.
fn select_steps(states: Tensor<2>, steps: &[usize]) -> Tensor<2> {
    let [_, hidden] = states.dims();
    let device = states.device();
    if steps.is_empty() {
        return Tensor::zeros([0, hidden], &device);
    }
    let index: Vec<i64> = steps.iter().map(|&s| s as i64).collect();
    let n = index.len();
    states.select(
        0,
        Tensor::<1, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(index, [n]),
            &device,
        ),
    )
}

/// (mean sigmoid over `logits > 0`, pixel count); (0, 0) for an empty mask.
fn mask_score(logits: &Tensor<2>) -> (f32, usize) {
    let inside = logits.clone().greater_elem(0.0).float();
    let area = inside.clone().sum().into_scalar::<f32>();
    if area < 0.5 {
        return (0.0, 0);
    }
    let total = (sigmoid(logits.clone()) * inside)
        .sum()
        .into_scalar::<f32>();
    (total / area, area.round() as usize)
}
