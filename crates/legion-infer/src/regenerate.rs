//! LEGION as the reflection of a text-to-image loop (`scripts/refine/regenerator.py` of the
//! reference): generate an image from the prompt -> LEGION analyses it -> a rewriter revises the
//! prompt from the user's prompt and that analysis -> generate again, for up to K rounds.
//!
//! Both models are external and pluggable: the text-to-image model ([`TextToImage`]; SD 3.5 in
//! the reference) and the prompt rewriter ([`PromptRewriter`]; an LLM in the reference). The
//! built-in [`RuleRewriter`] needs no model: it keeps the user's prompt and appends a negative
//! modifier per detected artifact phrase, under the reference's format rules.
//!
//! Every round is recorded under the output folder:
//! ```text
//! <out>/round_01/{image.png, mask.png, overlay.png, analysis.json}  generated from the prompt
//! <out>/round_02/...                                                from the rewritten prompt
//! <out>/rounds.jsonl     one RegenerationRound per line (prompt, reflection, areas, score)
//! <out>/summary.json     RegenerationSummary (stop reason, best round)
//! <out>/strip.png        the rounds' overlays side by side
//! <out>/report.html      the same with prompts and reflections, self-contained
//! <out>/final.png        the best round's image
//! ```
//! The best round is the one with the highest external score when a scorer is set (the
//! reference judges rounds by their HPSv2.1 score alone), else the smallest artifact area
//! (earliest on ties). The loop stops after `max_rounds` generations, or earlier when LEGION
//! finds no artifact (there is nothing left to reflect on); the reference always runs 3.

use std::io::Write;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::InferError;
use crate::generator::{CommandScorer, fill_template, run_shell};
use crate::html::{escape, page};
use crate::record::AnalysisRecord;
use crate::refine::{
    AnalysedRound, ArtifactDetector, RoundFindings, StopReason, analyse_round, round_figures,
    save_png, write_loop_records,
};

/// Makes an image from a text prompt.
pub trait TextToImage {
    /// A short description for records and messages.
    fn describe(&self) -> String;

    /// The image for `prompt` in round `round` (1-based). `workdir` is an existing folder for
    /// temporary files.
    ///
    /// # Errors
    /// [`InferError::External`] when the model fails.
    fn generate(
        &mut self,
        prompt: &str,
        round: usize,
        workdir: &Path,
    ) -> Result<RgbImage, InferError>;
}

/// A text-to-image model run as a shell command template with `{prompt}`, `{round}` and
/// `{out}` (where the command must write a PNG), replaced by shell-quoted values, e.g.
/// `python scripts/refine/sd35.py --prompt {prompt} --seed 42 --out {out}`.
#[derive(Debug, Clone)]
pub struct CommandTextToImage {
    /// The template.
    pub template: String,
}

impl TextToImage for CommandTextToImage {
    fn describe(&self) -> String {
        format!("command `{}`", self.template)
    }

    fn generate(
        &mut self,
        prompt: &str,
        round: usize,
        workdir: &Path,
    ) -> Result<RgbImage, InferError> {
        let out = workdir.join("generated.png");
        let _ = std::fs::remove_file(&out);
        let command = fill_template(
            &self.template,
            &[
                ("prompt", prompt),
                ("round", &round.to_string()),
                ("out", &out.to_string_lossy()),
            ],
        );
        run_shell(&command)?;
        legion_data::image_io::decode_rgb(&out).map_err(|source| InferError::GeneratedImage {
            what: self.describe(),
            detail: "cannot read its output",
            source,
        })
    }
}

/// What a rewriter is given.
#[derive(Debug, Clone, Copy)]
pub struct RewriteRequest<'a> {
    /// The user's original prompt.
    pub user_prompt: &'a str,
    /// The prompt of the round just analysed.
    pub previous_prompt: &'a str,
    /// LEGION's reflection on that round's image ([`reflection`]).
    pub reflection: &'a str,
    /// Most words of the new prompt.
    pub word_limit: usize,
}

/// Revises the prompt from LEGION's reflection.
pub trait PromptRewriter {
    /// A short description for records and messages.
    fn describe(&self) -> String;

    /// The prompt of the next round.
    ///
    /// # Errors
    /// [`InferError::External`] when an external rewriter fails or answers without a prompt.
    fn rewrite(&mut self, request: &RewriteRequest<'_>) -> Result<String, InferError>;
}

/// LEGION's reflection on an analysed image: one line per artifact, `phrase: explanation`
/// (the phrase alone when there is no explanation; line breaks inside either become spaces);
/// empty when no artifact was found.
pub fn reflection(record: &AnalysisRecord) -> String {
    let one_line = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    record
        .artifacts
        .iter()
        .map(|a| {
            let phrase = one_line(&a.label());
            match a.explanation.as_deref().map(one_line) {
                Some(e) if !e.is_empty() => format!("{phrase}: {e}"),
                _ => phrase,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The instruction an LLM rewriter receives: the reference's rules for the new prompt (the
/// scene first, then comma-separated modifiers; under the word limit; nothing repeated; the
/// answer between `<START>` and `<END>`).
pub fn rewrite_instruction(request: &RewriteRequest<'_>) -> String {
    format!(
        "You improve prompts for a text-to-image model. An artifact detector examined the image \
         made from the previous prompt and reported the problems below. Write a new prompt that \
         keeps the user's intent and steers the model away from these problems.\n\
         Rules: describe the scene first, then add comma-separated modifiers; use fewer than {} \
         words; repeat no word or modifier; answer with the prompt alone between <START> and \
         <END>.\n\
         User prompt: {}\n\
         Previous prompt: {}\n\
         Detected problems:\n{}\n",
        request.word_limit, request.user_prompt, request.previous_prompt, request.reflection
    )
}

/// The text between the last `<START>` and the `<END>` after it, trimmed.
pub fn marked_prompt(answer: &str) -> Option<&str> {
    let start = answer.rfind("<START>")? + "<START>".len();
    let end = answer[start..].find("<END>")? + start;
    let prompt = answer[start..end].trim();
    (!prompt.is_empty()).then_some(prompt)
}

/// An LLM rewriter run as a shell command template with `{instruction}` (the
/// [`rewrite_instruction`] text, shell-quoted); its stdout must contain the new prompt between
/// `<START>` and `<END>`.
#[derive(Debug, Clone)]
pub struct CommandRewriter {
    /// The template.
    pub template: String,
}

impl PromptRewriter for CommandRewriter {
    fn describe(&self) -> String {
        format!("command `{}`", self.template)
    }

    fn rewrite(&mut self, request: &RewriteRequest<'_>) -> Result<String, InferError> {
        let command = fill_template(
            &self.template,
            &[("instruction", &rewrite_instruction(request))],
        );
        let answer = run_shell(&command)?;
        marked_prompt(&answer)
            .map(str::to_string)
            .ok_or_else(|| InferError::External {
                what: self.describe(),
                message: format!(
                    "no prompt between <START> and <END> in its answer: {}",
                    answer.trim()
                ),
            })
    }
}

/// The built-in rewriter (no model): the user's prompt followed by `no <phrase>` for each
/// detected artifact phrase, each modifier once, cut to the word limit (modifiers that do not
/// fit are dropped whole; the user's prompt is kept as written).
#[derive(Debug, Clone, Copy, Default)]
pub struct RuleRewriter;

impl PromptRewriter for RuleRewriter {
    fn describe(&self) -> String {
        "built-in rules (user prompt + `no <phrase>` per artifact)".into()
    }

    fn rewrite(&mut self, request: &RewriteRequest<'_>) -> Result<String, InferError> {
        let mut prompt = request.user_prompt.trim().trim_end_matches(',').to_string();
        let mut words = prompt.split_whitespace().count();
        let mut used: Vec<String> = Vec::new();
        for line in request.reflection.lines() {
            let phrase = line.split(':').next().unwrap_or("").trim().to_lowercase();
            if phrase.is_empty() || used.contains(&phrase) {
                continue;
            }
            let modifier = format!("no {phrase}");
            let modifier_words = modifier.split_whitespace().count();
            if words + modifier_words >= request.word_limit {
                break;
            }
            prompt.push_str(", ");
            prompt.push_str(&modifier);
            words += modifier_words;
            used.push(phrase);
        }
        Ok(prompt)
    }
}

/// Settings of [`regenerate`].
#[derive(Debug, Clone, PartialEq)]
pub struct RegenerateOptions {
    /// Most generations (the reference runs 3).
    pub max_rounds: usize,
    /// Most words of a rewritten prompt (the reference asks for fewer than 50).
    pub word_limit: usize,
}

impl Default for RegenerateOptions {
    fn default() -> Self {
        Self {
            max_rounds: 3,
            word_limit: 50,
        }
    }
}

/// One round: the prompt, the generated image's analysis and score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegenerationRound {
    /// 1-based.
    pub round: usize,
    /// The round's folder, relative to the output folder.
    pub dir: String,
    /// The prompt the image was generated from.
    pub prompt: String,
    /// LEGION's reflection on the image ([`reflection`]).
    pub reflection: String,
    /// What was found in the image.
    #[serde(flatten)]
    pub findings: RoundFindings,
}

/// What [`regenerate`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegenerationSummary {
    /// The user's prompt.
    pub user_prompt: String,
    /// The text-to-image model used.
    pub generator: String,
    /// The rewriter used.
    pub rewriter: String,
    /// Every round, in order.
    pub rounds: Vec<RegenerationRound>,
    /// Why the loop stopped (`no_artifact` or `max_rounds`).
    pub stop_reason: StopReason,
    /// The best round (module docs).
    pub best_round: usize,
    /// `<out>/final.png`.
    pub final_image: PathBuf,
}

/// Runs the regeneration loop for `user_prompt` and records it under `out` (module docs).
/// `name` names the images in the analysis records.
///
/// # Errors
/// The detector's, generator's, rewriter's or scorer's error (the rounds done so far stay on
/// disk), [`InferError::Io`] / [`InferError::ImageWrite`] when `out` cannot be written.
///
/// # Panics
/// If `options.max_rounds` is 0.
#[allow(clippy::too_many_arguments)]
pub fn regenerate(
    name: &str,
    user_prompt: &str,
    detector: &mut dyn ArtifactDetector,
    generator: &mut dyn TextToImage,
    rewriter: &mut dyn PromptRewriter,
    scorer: Option<&CommandScorer>,
    options: &RegenerateOptions,
    out: &Path,
) -> Result<RegenerationSummary, InferError> {
    assert!(options.max_rounds > 0, "at least one round");
    std::fs::create_dir_all(out).map_err(|e| InferError::io(out, e))?;
    let rounds_path = out.join("rounds.jsonl");
    let mut rounds_file =
        std::fs::File::create(&rounds_path).map_err(|e| InferError::io(&rounds_path, e))?;
    let mut rounds: Vec<RegenerationRound> = Vec::new();
    let mut images: Vec<RgbImage> = Vec::new();
    let mut overlays: Vec<RgbImage> = Vec::new();
    let mut prompt = user_prompt.to_string();
    let stop_reason = loop {
        let round = rounds.len() + 1;
        if let Some(previous) = rounds.last() {
            prompt = rewriter.rewrite(&RewriteRequest {
                user_prompt,
                previous_prompt: &previous.prompt,
                reflection: &previous.reflection,
                word_limit: options.word_limit,
            })?;
        }
        let dir_name = format!("round_{round:02}");
        let dir = out.join(&dir_name);
        std::fs::create_dir_all(&dir).map_err(|e| InferError::io(&dir, e))?;
        let image = generator.generate(&prompt, round, &dir)?;
        let AnalysedRound {
            record,
            overlay,
            findings,
        } = analyse_round(detector, scorer, name, &image, &dir)?;
        let entry = RegenerationRound {
            round,
            dir: dir_name,
            prompt: prompt.clone(),
            reflection: reflection(&record),
            findings,
        };
        tracing::info!(
            round,
            area = entry.findings.artifact_area,
            score = ?entry.findings.external_score,
            "regeneration round analysed"
        );
        writeln!(
            rounds_file,
            "{}",
            serde_json::to_string(&entry).expect("round records serialise")
        )
        .map_err(|e| InferError::io(&rounds_path, e))?;
        let clean = entry.findings.artifacts == 0;
        rounds.push(entry);
        images.push(image);
        overlays.push(overlay);
        if clean {
            break StopReason::NoArtifact;
        }
        if round >= options.max_rounds {
            break StopReason::MaxRounds;
        }
    };

    let best = best_round(&rounds);
    let final_image = out.join("final.png");
    save_png(&images[best], &final_image)?;
    let summary = RegenerationSummary {
        user_prompt: user_prompt.to_string(),
        generator: generator.describe(),
        rewriter: rewriter.describe(),
        best_round: rounds[best].round,
        rounds,
        stop_reason,
        final_image,
    };
    let areas = summary
        .rounds
        .iter()
        .map(|r| (r.round, r.findings.artifact_area));
    let report = regeneration_report(&summary, &images, &overlays)?;
    write_loop_records(out, &overlays, areas, &report, &summary)?;
    Ok(summary)
}

/// Index of the best round (module docs).
fn best_round(rounds: &[RegenerationRound]) -> usize {
    let by_area = || {
        (0..rounds.len())
            .min_by_key(|&i| (rounds[i].findings.artifact_area, i))
            .unwrap_or(0)
    };
    let score = |i: usize| rounds[i].findings.external_score;
    if (0..rounds.len()).any(|i| score(i).is_none()) {
        return by_area();
    }
    // Highest score, earliest on ties (`max_by` keeps the last maximum, so scan in reverse).
    (0..rounds.len())
        .rev()
        .max_by(|&a, &b| {
            score(a)
                .partial_cmp(&score(b))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .unwrap_or_else(by_area)
}

/// The self-contained HTML page of a regeneration: one column per round (image, overlay,
/// prompt, reflection, area, score).
///
/// # Errors
/// [`InferError::ImageWrite`] when an image cannot be encoded.
pub fn regeneration_report(
    summary: &RegenerationSummary,
    images: &[RgbImage],
    overlays: &[RgbImage],
) -> Result<String, InferError> {
    let mut body = format!(
        "<p>User prompt: {}<br>Generator: {}. Rewriter: {}. Stopped: {:?}. Best round: {}.</p>\n\
         <div class=\"images\">\n",
        escape(&summary.user_prompt),
        escape(&summary.generator),
        escape(&summary.rewriter),
        summary.stop_reason,
        summary.best_round
    );
    for ((round, image), overlay) in summary.rounds.iter().zip(images).zip(overlays) {
        let reflection = if round.reflection.is_empty() {
            "no artifact found".to_string()
        } else {
            escape(&round.reflection).replace('\n', "<br>")
        };
        body.push_str(&format!(
            "<div class=\"card round\" data-round=\"{r}\">\n<h2>Round {r}</h2>\n\
             <p class=\"prompt\">{}</p>\n{}<p class=\"reflection\">{reflection}</p>\n</div>\n",
            escape(&round.prompt),
            round_figures(round.round, image, overlay, &round.findings)?,
            r = round.round,
        ));
    }
    body.push_str("</div>\n");
    Ok(page(
        &format!("LEGION-guided regeneration: {}", summary.user_prompt),
        &body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_prompt_takes_the_last_marked_answer() {
        assert_eq!(
            marked_prompt("thinking... <START> a cat, sharp <END>"),
            Some("a cat, sharp")
        );
        assert_eq!(
            marked_prompt("<START>x<END> then <START> y <END>"),
            Some("y")
        );
        assert_eq!(marked_prompt("<START>  <END>"), None);
        assert_eq!(marked_prompt("<START> no end"), None);
        assert_eq!(marked_prompt("plain"), None);
    }

    #[test]
    fn rule_rewriter_adds_each_phrase_once_within_the_word_limit() {
        let request = RewriteRequest {
            user_prompt: "a dog on a beach,",
            previous_prompt: "a dog on a beach",
            reflection: "Extra Leg: the dog has five legs\nfloating shadow\nextra leg: again",
            word_limit: 50,
        };
        assert_eq!(
            RuleRewriter.rewrite(&request).unwrap(),
            "a dog on a beach, no extra leg, no floating shadow"
        );
        // 5 words + "no extra leg" (3) = 8 < 9, "no floating shadow" would reach 11.
        let tight = RewriteRequest {
            word_limit: 9,
            ..request
        };
        assert_eq!(
            RuleRewriter.rewrite(&tight).unwrap(),
            "a dog on a beach, no extra leg"
        );
    }

    #[test]
    fn the_instruction_carries_the_prompts_the_problems_and_the_rules() {
        let request = RewriteRequest {
            user_prompt: "a red car",
            previous_prompt: "a red car, studio light",
            reflection: "wheel: the wheel is oval",
            word_limit: 50,
        };
        let text = rewrite_instruction(&request);
        for part in [
            "a red car",
            "a red car, studio light",
            "wheel: the wheel is oval",
            "fewer than 50 words",
            "<START>",
            "<END>",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
    }
}
