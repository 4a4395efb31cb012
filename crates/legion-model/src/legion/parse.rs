//! Parsing LEGION's answer text: phrases, clean text and per-phrase explanations.
//!
//! Follows `scripts/loc_exp/infer.py` (`inference`): the decoded text has its newlines removed
//! and double spaces collapsed, and keeps what follows the last `"ASSISTANT: "`; the phrases
//! are `<p>(.*?)</p>` (stripped); the clean text has every `<...>` tag and `[SEG]` removed,
//! whitespace collapsed and `'` stripped from both ends. Explanations are not parsed by the
//! reference; LEGION's captions write them as `phrase:explanation` (SynthScars caption format,
//! `<p> phrase </p> [SEG]:explanation` after tagging), so the explanation of a phrase is the
//! text after its `:` up to the next phrase.

use std::sync::LazyLock;

use regex_lite::Regex;

// Constant patterns, compiled once; checked by the unit tests.
static PHRASE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"<p>(.*?)</p>").expect("constant regex"));
static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<.*?>").expect("constant regex"));

/// Separator before the answer in the `llava_v1` template.
pub const ASSISTANT_PREFIX: &str = "ASSISTANT: ";

/// The answer part of a decoded conversation, as `infer.py`: `"\n"` removed, `"  "` replaced
/// by `" "` (one pass, as Python's `str.replace`), then the text after the last
/// `"ASSISTANT: "` (the whole text when it has none).
pub fn answer_text(decoded: &str) -> String {
    let text = decoded.replace('\n', "").replace("  ", " ");
    match text.rsplit_once(ASSISTANT_PREFIX) {
        Some((_, answer)) => answer.to_string(),
        None => text,
    }
}

/// The phrases, in order: every `<p>(.*?)</p>`, trimmed.
pub fn phrases(text: &str) -> Vec<String> {
    PHRASE
        .captures_iter(text)
        .map(|c| c[1].trim().to_string())
        .collect()
}

/// `infer.py`'s cleaned string: tags and `[SEG]` removed, whitespace collapsed, `'` stripped
/// from both ends.
pub fn clean_text(text: &str) -> String {
    let untagged = TAG.replace_all(text, "").replace("[SEG]", "");
    collapse_whitespace(&untagged)
        .trim_matches('\'')
        .trim()
        .to_string()
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Explanation of every phrase of `text` (same order as [`phrases`]).
///
/// For the k-th `<p>...</p>`: the text between its `</p>` (and an optional `[SEG]`) and the
/// next `<p>` (or the end); if it starts with `:`, the rest, cleaned, is the explanation. When
/// the tagged occurrence is not followed by `:` (the reference tags a phrase's first
/// occurrence, which may sit in the summary), the explanation is looked up in the clean text
/// after `"{phrase}:"` up to the next occurrence of another phrase. Empty when neither exists.
pub fn explanations(text: &str) -> Vec<String> {
    let matches: Vec<(usize, usize, String)> = PHRASE
        .captures_iter(text)
        .map(|c| {
            // Group 0 always exists for a match.
            let whole = c.get(0).expect("match has group 0");
            (whole.start(), whole.end(), c[1].trim().to_string())
        })
        .collect();
    let all_phrases: Vec<&str> = matches.iter().map(|m| m.2.as_str()).collect();
    let clean = clean_text(text);
    matches
        .iter()
        .enumerate()
        .map(|(k, (_, end, phrase))| {
            let next = matches.get(k + 1).map_or(text.len(), |m| m.0);
            let tail = text[*end..next].trim_start();
            let tail = tail.strip_prefix("[SEG]").unwrap_or(tail).trim_start();
            match tail.strip_prefix(':') {
                Some(rest) => clean_text(rest),
                None => explanation_in_clean_text(&clean, phrase, &all_phrases),
            }
        })
        .collect()
}

fn explanation_in_clean_text(clean: &str, phrase: &str, all_phrases: &[&str]) -> String {
    if phrase.is_empty() {
        return String::new();
    }
    let key = format!("{phrase}:");
    let Some(start) = clean.find(&key).map(|i| i + key.len()) else {
        return String::new();
    };
    let rest = &clean[start..];
    let end = all_phrases
        .iter()
        .filter(|p| !p.is_empty() && **p != phrase)
        .filter_map(|p| rest.find(p))
        .min()
        .unwrap_or(rest.len());
    collapse_whitespace(&rest[..end])
}

/// Everything [`super::Legion::analyze`] reads from the answer text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAnswer {
    /// The answer text (after `"ASSISTANT: "`), tags kept.
    pub text: String,
    /// Tags and `[SEG]` removed, whitespace collapsed.
    pub clean_text: String,
    /// `<p>...</p>` phrases in order.
    pub phrases: Vec<String>,
    /// One explanation per phrase (possibly empty).
    pub explanations: Vec<String>,
}

/// Parses a decoded conversation (or a bare answer).
pub fn parse_answer(decoded: &str) -> ParsedAnswer {
    let text = answer_text(decoded);
    ParsedAnswer {
        clean_text: clean_text(&text),
        phrases: phrases(&text),
        explanations: explanations(&text),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGGED: &str = "Upon examining the image. I have found: the hand is wrong.\nTo elaborate, \
        I have found the following artifacts. <p> The left hand </p> [SEG]:The fingers are fused \
        and too many.<p> The shadow. </p> [SEG]: It falls  the wrong way.</s>";

    #[test]
    fn answer_text_takes_the_part_after_the_last_assistant() {
        let decoded = "<s> A chat. USER: The <im_start><im_end> provides an overview.\nQ? \
                       ASSISTANT: Hello  there\nworld";
        assert_eq!(answer_text(decoded), "Hello thereworld");
        assert_eq!(answer_text("no prefix"), "no prefix");
    }

    #[test]
    fn phrases_and_clean_text_follow_infer_py() {
        let text = answer_text(TAGGED);
        assert_eq!(phrases(&text), vec!["The left hand", "The shadow."]);
        assert_eq!(
            clean_text(&text),
            "Upon examining the image. I have found: the hand is wrong.To elaborate, I have \
             found the following artifacts. The left hand :The fingers are fused and too many. \
             The shadow. : It falls the wrong way."
        );
        assert_eq!(clean_text("'<p> a </p> [SEG] '"), "a");
        assert!(phrases("no tags").is_empty());
    }

    #[test]
    fn explanations_follow_the_colon_up_to_the_next_phrase() {
        let text = answer_text(TAGGED);
        assert_eq!(
            explanations(&text),
            vec![
                "The fingers are fused and too many.".to_string(),
                "It falls the wrong way.".to_string()
            ]
        );
    }

    #[test]
    fn explanation_found_later_when_the_tag_sits_in_the_summary() {
        // The phrase's first occurrence (the tagged one) is in the summary; its explanation
        // follows an untagged `phrase:` later.
        let text = "I have found: <p> blurry sign </p> [SEG] and more. Details. blurry sign:The \
                    letters melt.<p> sky </p> [SEG]:Too purple.";
        assert_eq!(
            explanations(text),
            vec!["The letters melt.".to_string(), "Too purple.".to_string()]
        );
        // No colon anywhere: empty.
        assert_eq!(explanations("<p> x </p> [SEG] end"), vec![String::new()]);
    }

    #[test]
    fn parse_answer_bundles_everything() {
        let parsed = parse_answer("USER: hi ASSISTANT: <p> a </p> [SEG]:b</s>");
        assert_eq!(parsed.text, "<p> a </p> [SEG]:b</s>");
        assert_eq!(parsed.phrases, vec!["a"]);
        assert_eq!(parsed.explanations, vec!["b"]);
        assert_eq!(parsed.clean_text, "a :b");
    }
}
