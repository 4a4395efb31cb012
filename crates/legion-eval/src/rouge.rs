//! ROUGE-L F-measure exactly as Python `rouge-score` 0.1.2 computes it with
//! `RougeScorer(['rougeL'], use_stemmer=True)`: the tokenizer lowercases (Unicode-aware, like
//! Python's `str.lower`), turns every run of characters outside `[a-z0-9]` into a separator,
//! stems tokens longer than 3 characters with NLTK's Porter stemmer ([`crate::porter`]), and
//! the score is the LCS-based F1: `P = LCS/|pred|`, `R = LCS/|ref|`, `F = 2PR/(P+R)` (0 when
//! either text has no token or P+R = 0).
//!
//! The LEGION paper reports ROUGE-L x100 of the model's analysis text against the GT caption,
//! both with the grounding tags removed ([`clean_analysis_text`]).

use crate::porter;

/// Tokenizes like `rouge_score.tokenize.tokenize(text, PorterStemmer())`.
pub fn tokenize(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in lower.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            current.push(c);
        } else if !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
        .into_iter()
        .map(|t| if t.len() > 3 { porter::stem(&t) } else { t })
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        .collect()
}

/// Length of the longest common subsequence of two token lists.
pub fn lcs_length(a: &[String], b: &[String]) -> usize {
    let mut previous = vec![0usize; b.len() + 1];
    let mut current = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            current[j + 1] = if x == y {
                previous[j] + 1
            } else {
                previous[j + 1].max(current[j])
            };
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// ROUGE-L precision, recall and F-measure.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RougeScore {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

/// ROUGE-L of `prediction` against `target` (`RougeScorer.score(target, prediction)`).
pub fn rouge_l(target: &str, prediction: &str) -> RougeScore {
    let target_tokens = tokenize(target);
    let prediction_tokens = tokenize(prediction);
    if target_tokens.is_empty() || prediction_tokens.is_empty() {
        return RougeScore {
            precision: 0.0,
            recall: 0.0,
            fmeasure: 0.0,
        };
    }
    let lcs = lcs_length(&target_tokens, &prediction_tokens) as f64;
    let precision = lcs / prediction_tokens.len() as f64;
    let recall = lcs / target_tokens.len() as f64;
    let fmeasure = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    RougeScore {
        precision,
        recall,
        fmeasure,
    }
}

/// The reference's output cleaning (`evaluate_ours.py`): removes every `<...>` tag (no newline
/// inside, shortest match, like `re.sub(r'<.*?>', '', s)`), removes `[SEG]`, and collapses
/// whitespace. Applied to the GT caption and to predicted explanations alike.
pub fn clean_analysis_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        match after.find(['>', '\n']) {
            Some(close) if after.as_bytes()[close] == b'>' => {
                out.push_str(&rest[..open]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("[SEG]", "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_lowercases_splits_and_stems() {
        assert_eq!(
            tokenize("The Hands'  are DISTORTED, 3 fingers!"),
            vec!["the", "hand", "are", "distort", "3", "finger"]
        );
        assert!(tokenize("?!... --").is_empty());
    }

    #[test]
    fn rouge_l_hand_computed() {
        // ref: a b c d e (5), pred: a c x e (4); LCS = a c e = 3.
        let s = rouge_l("a b c d e", "a c x e");
        assert!((s.precision - 0.75).abs() < 1e-15);
        assert!((s.recall - 0.6).abs() < 1e-15);
        assert!((s.fmeasure - 2.0 * 0.75 * 0.6 / 1.35).abs() < 1e-15);
        assert_eq!(rouge_l("", "a").fmeasure, 0.0);
        assert_eq!(rouge_l("a", "b").fmeasure, 0.0);
    }

    #[test]
    fn cleaning_removes_tags_and_seg() {
        assert_eq!(
            clean_analysis_text("I found <p> a hand </p> [SEG]:  six\n fingers <b"),
            "I found a hand : six fingers <b"
        );
    }
}
