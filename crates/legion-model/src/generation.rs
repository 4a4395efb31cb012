//! Autoregressive decoding for the LLaMA LLM with a KV cache: greedy or nucleus (top-p)
//! sampling with temperature and a seed, stopping on EOS, extra stop tokens or
//! `max_new_tokens`, batched with left padding.
//!
//! Follows HF `generate` for decoder-only models: prompts are left-padded, position ids are
//! `cumsum(mask) - 1` (so a row's positions do not depend on its padding), every step feeds one
//! token per row and appends a 1 to the attention mask. LEGION decodes greedily with
//! `max_new_tokens = 512` (`scripts/loc_exp/infer.py`). Generation can start from embeddings,
//! since LEGION splices the image tokens into the prompt embeddings.

use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData};

use crate::llama::Llama;

/// Errors of [`generate`] and [`generate_from_embeds`].
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    /// No prompt, or a prompt without tokens.
    #[error("prompt {row} is empty (every row needs at least one real token)")]
    EmptyPrompt { row: usize },
    /// The attention mask does not match the embeddings.
    #[error("attention mask has shape {mask:?}, embeddings {embeds:?}: expected [batch, seq]")]
    MaskShape {
        mask: [usize; 2],
        embeds: [usize; 3],
    },
    /// A row is not left-padded (a 0 after a 1, or a value other than 0/1).
    #[error("attention mask row {row} is not left padding (0...0 1...1)")]
    NotLeftPadded { row: usize },
    /// Sampling parameters out of range.
    #[error("invalid sampling parameters: temperature {temperature}, top_p {top_p}")]
    InvalidSampling { temperature: f64, top_p: f64 },
    /// A token id does not fit the model's vocabulary.
    #[error("token id {id} in prompt {row} is outside the vocabulary of {vocab}")]
    TokenOutOfVocab { row: usize, id: u32, vocab: usize },
}

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// Argmax of the logits (first index on ties, as `torch.argmax`).
    Greedy,
    /// Softmax of `logits / temperature`, restricted to the smallest set of tokens whose
    /// probability reaches `top_p` (HF `TopPLogitsWarper`, always keeping the best token),
    /// sampled with a SplitMix64 generator seeded by `seed`.
    TopP {
        temperature: f64,
        top_p: f64,
        seed: u64,
    },
}

/// Decoding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Most tokens generated per row.
    pub max_new_tokens: usize,
    /// End-of-sequence token (`</s>` = 2 for LLaMA); `None` = never stop on it.
    pub eos_token_id: Option<u32>,
    /// Further tokens that end a row.
    pub stop_token_ids: Vec<u32>,
    /// Token fed to rows that already stopped (never returned).
    pub pad_token_id: u32,
    /// Token selection.
    pub sampling: Sampling,
    /// Also return, for every generated token, the last hidden state that predicted it.
    pub return_hidden_states: bool,
}

impl GenerationConfig {
    /// LEGION inference: greedy, 512 new tokens, stop at `</s>` (id 2), pad = `<unk>` (0).
    pub fn legion() -> Self {
        Self {
            max_new_tokens: 512,
            eos_token_id: Some(2),
            stop_token_ids: Vec::new(),
            pad_token_id: 0,
            sampling: Sampling::Greedy,
            return_hidden_states: false,
        }
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// Generated the EOS token.
    Eos,
    /// Generated one of the stop tokens.
    StopToken,
    /// Reached `max_new_tokens`.
    MaxNewTokens,
}

/// Result of a generation.
#[derive(Debug, Clone)]
pub struct GenerationOutput {
    /// Generated tokens per row, including the EOS/stop token that ended it.
    pub tokens: Vec<Vec<u32>>,
    /// Why each row stopped.
    pub finish_reasons: Vec<FinishReason>,
    /// With `return_hidden_states`: per row `[generated, hidden]`, row `i` = the final-norm
    /// hidden state at the position whose logits produced token `i` (the state GLaMM/LEGION
    /// reads for a generated `[SEG]`).
    pub hidden_states: Option<Vec<Tensor<2>>>,
}

/// SplitMix64: a small, seedable, portable generator (enough for token sampling).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

fn sample_top_p(row: &[f32], temperature: f64, top_p: f64, rng: &mut SplitMix64) -> u32 {
    let scaled: Vec<f64> = row.iter().map(|&v| v as f64 / temperature).collect();
    let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut probs: Vec<(usize, f64)> = scaled
        .iter()
        .map(|&v| (v - max).exp())
        .enumerate()
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    // Descending probability, ties by index, so the result is deterministic.
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0;
    let mut cumulative = 0.0;
    for p in &probs {
        kept += 1;
        cumulative += p.1;
        if cumulative >= top_p {
            break;
        }
    }
    let nucleus = &probs[..kept];
    let mass: f64 = nucleus.iter().map(|p| p.1).sum();
    let mut u = rng.next_f64() * mass;
    for p in nucleus {
        if u < p.1 {
            return p.0 as u32;
        }
        u -= p.1;
    }
    nucleus[kept - 1].0 as u32
}

/// Generates from token-id prompts of any lengths (left-padded here with `pad_token_id`).
///
/// # Errors
/// [`GenerationError`] on an empty prompt, an out-of-vocabulary id or bad sampling settings.
pub fn generate(
    model: &Llama,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
) -> Result<GenerationOutput, GenerationError> {
    let vocab = model.embed_tokens.weight.shape().dims::<2>()[0];
    let seq = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(prompts.len() * seq);
    let mut mask = Vec::with_capacity(prompts.len() * seq);
    for (row, prompt) in prompts.iter().enumerate() {
        if prompt.is_empty() {
            return Err(GenerationError::EmptyPrompt { row });
        }
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(GenerationError::TokenOutOfVocab { row, id, vocab });
        }
        let pad = seq - prompt.len();
        ids.extend(std::iter::repeat_n(config.pad_token_id as i64, pad));
        ids.extend(prompt.iter().map(|&t| t as i64));
        mask.extend(std::iter::repeat_n(0i64, pad));
        mask.extend(std::iter::repeat_n(1i64, prompt.len()));
    }
    if prompts.is_empty() {
        return Err(GenerationError::EmptyPrompt { row: 0 });
    }
    let device = model.embed_tokens.weight.device();
    let shape = [prompts.len(), seq];
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, shape), &device);
    let mask = Tensor::<2, Int>::from_data(TensorData::new(mask, shape), &device);
    generate_from_embeds(model, model.embed(ids), mask, config)
}

/// Generates from prompt embeddings with a left-padding attention mask.
///
/// # Shapes
/// - `embeds`: `[batch, seq, hidden]`; `attention_mask`: `[batch, seq]` (1 = real, 0 = left pad)
///
/// # Errors
/// [`GenerationError`] when the mask does not match or is not left padding, a row is all
/// padding, or the sampling settings are out of range.
pub fn generate_from_embeds(
    model: &Llama,
    embeds: Tensor<3>,
    attention_mask: Tensor<2, Int>,
    config: &GenerationConfig,
) -> Result<GenerationOutput, GenerationError> {
    if let Sampling::TopP {
        temperature, top_p, ..
    } = config.sampling
        && !(temperature > 0.0 && temperature.is_finite() && top_p > 0.0 && top_p <= 1.0)
    {
        return Err(GenerationError::InvalidSampling { temperature, top_p });
    }
    let [batch, seq, hidden] = embeds.dims();
    if attention_mask.dims() != [batch, seq] {
        return Err(GenerationError::MaskShape {
            mask: attention_mask.dims(),
            embeds: embeds.dims(),
        });
    }
    let device = embeds.device();
    let mask_rows: Vec<i64> = attention_mask
        .clone()
        .into_data()
        .try_into_vec_as::<i64>()
        .expect("an Int tensor converts to i64");
    // Real-token count per row = the position of that row's next token.
    let mut next_position = Vec::with_capacity(batch);
    let mut positions = Vec::with_capacity(batch * seq);
    for row in 0..batch {
        let m = &mask_rows[row * seq..(row + 1) * seq];
        let first_real = m
            .iter()
            .position(|&v| v == 1)
            .ok_or(GenerationError::EmptyPrompt { row })?;
        if m[..first_real].iter().any(|&v| v != 0) || m[first_real..].iter().any(|&v| v != 1) {
            return Err(GenerationError::NotLeftPadded { row });
        }
        // HF: cumsum(mask) - 1, padded positions set to 1 (their value does not matter).
        positions.extend(m.iter().scan(-1i64, |c, &v| {
            *c += v;
            Some(if v == 0 { 1 } else { *c })
        }));
        next_position.push((seq - first_real) as i64);
    }
    let position_ids =
        Tensor::<2, Int>::from_data(TensorData::new(positions, [batch, seq]), &device);

    let mut cache = model.new_cache();
    let mut mask = attention_mask;
    let mut rng = match config.sampling {
        Sampling::TopP { seed, .. } => SplitMix64(seed),
        Sampling::Greedy => SplitMix64(0),
    };
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); batch];
    let mut finish: Vec<Option<FinishReason>> = vec![None; batch];
    let mut hidden_steps: Vec<Tensor<2>> = Vec::new();

    let started = Instant::now();
    let mut prefill_seconds = 0.0;
    let mut decode_steps = 0usize;
    let out = model.forward_embeds(
        embeds,
        Some(mask.clone()),
        Some(position_ids),
        Some(&mut cache),
    );
    let mut logits = out.logits.narrow(1, seq - 1, 1);
    let mut last_hidden = out.last_hidden_state.narrow(1, seq - 1, 1);

    for step in 0..config.max_new_tokens {
        let vocab = logits.dims()[2];
        let values = logits
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("float logits convert to f32");
        if step == 0 {
            // Reading the logits waits for the prefill, also on asynchronous backends.
            prefill_seconds = started.elapsed().as_secs_f64();
        }
        if config.return_hidden_states {
            hidden_steps.push(last_hidden.reshape([batch, hidden]));
        }
        let mut step_ids = Vec::with_capacity(batch);
        for row in 0..batch {
            if finish[row].is_some() {
                step_ids.push(config.pad_token_id as i64);
                continue;
            }
            let row_logits = &values[row * vocab..(row + 1) * vocab];
            let token = match config.sampling {
                Sampling::Greedy => argmax(row_logits),
                Sampling::TopP {
                    temperature, top_p, ..
                } => sample_top_p(row_logits, temperature, top_p, &mut rng),
            };
            tokens[row].push(token);
            if Some(token) == config.eos_token_id {
                finish[row] = Some(FinishReason::Eos);
            } else if config.stop_token_ids.contains(&token) {
                finish[row] = Some(FinishReason::StopToken);
            }
            step_ids.push(token as i64);
        }
        // Stop before another forward pass when every row ended or the budget is spent.
        if finish.iter().all(Option::is_some) || step + 1 == config.max_new_tokens {
            break;
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(step_ids, [batch, 1]), &device);
        let step_positions = Tensor::<2, Int>::from_data(
            TensorData::new(next_position.clone(), [batch, 1]),
            &device,
        );
        next_position.iter_mut().for_each(|p| *p += 1);
        mask = Tensor::cat(vec![mask, Tensor::<2, Int>::ones([batch, 1], &device)], 1);
        let out = model.forward_embeds(
            model.embed(ids),
            Some(mask.clone()),
            Some(step_positions),
            Some(&mut cache),
        );
        logits = out.logits;
        last_hidden = out.last_hidden_state;
        decode_steps += 1;
    }
    let decode_seconds = started.elapsed().as_secs_f64() - prefill_seconds;
    tracing::info!(
        batch,
        prompt_tokens = seq,
        prefill_seconds = format!("{prefill_seconds:.3}"),
        decode_steps,
        decode_seconds_per_token = format!("{:.3}", decode_seconds / decode_steps.max(1) as f64),
        "LLM generation"
    );

    let finish_reasons = finish
        .into_iter()
        .map(|f| f.unwrap_or(FinishReason::MaxNewTokens))
        .collect();
    let hidden_states = config.return_hidden_states.then(|| {
        (0..batch)
            .map(|row| {
                let n = tokens[row].len();
                let steps: Vec<Tensor<2>> = hidden_steps[..n]
                    .iter()
                    .map(|h| h.clone().narrow(0, row, 1))
                    .collect();
                if steps.is_empty() {
                    Tensor::<2>::zeros([0, hidden], &device)
                } else {
                    Tensor::cat(steps, 0)
                }
            })
            .collect()
    });
    Ok(GenerationOutput {
        tokens,
        finish_reasons,
        hidden_states,
    })
}
