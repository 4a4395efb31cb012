//! Artifact phrases located in the caption, and the grounded training target built from them.
//!
//! As the LEGION reference loader (`LegionGCGDataset._parse_annotations`): the caption is stripped
//! of surrounding `"` then whitespace (Python `str.strip('"').strip()`); each ref's `sentence` is
//! looked up verbatim with its FIRST occurrence (`str.find`); refs are ordered by start (stable);
//! the target answer wraps each phrase as `<p> PHRASE </p> [SEG]`, inserted right to left, so the
//! k-th `[SEG]` pairs with the k-th ordered ref. Refs whose phrase is absent are dropped by the
//! reference silently; here they are reported, with a policy for what to do.
//!
//! Offsets are byte offsets into the stripped caption (Python's are code-point offsets; the
//! resulting text is the same).

use serde::{Deserialize, Serialize};

use crate::record::Record;

/// What to do with a ref whose phrase cannot be grounded in the caption.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingPhrasePolicy {
    /// Drop the ref and its mask, keep the record (the reference behaviour, but reported).
    #[default]
    SkipRef,
    /// Drop the whole record.
    SkipRecord,
    /// Fail.
    Error,
}

/// Why a ref could not be grounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpanIssue {
    /// The phrase does not occur in the caption.
    PhraseAbsent,
    /// The phrase is empty (the reference would insert an empty `<p>  </p> [SEG]` at 0).
    EmptyPhrase,
    /// The phrase's first occurrence overlaps an earlier grounded phrase; the reference would
    /// produce nested, malformed tags.
    Overlaps { other_ref: usize },
}

impl std::fmt::Display for SpanIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PhraseAbsent => write!(f, "phrase does not occur in the caption"),
            Self::EmptyPhrase => write!(f, "phrase is empty"),
            Self::Overlaps { other_ref } => {
                write!(f, "phrase overlaps the phrase of refs[{other_ref}]")
            }
        }
    }
}

/// One grounded phrase: a ref and where its phrase sits in the stripped caption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhraseSpan {
    /// Index of the ref in the record's `refs` (file order).
    pub ref_index: usize,
    /// Byte offset of the phrase start in the stripped caption.
    pub start: usize,
    /// Byte offset one past the phrase end.
    pub end: usize,
}

/// A ref that could not be grounded, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DroppedRef {
    /// Index of the ref in the record's `refs`.
    pub ref_index: usize,
    /// The phrase as annotated.
    pub sentence: String,
    /// Why it was dropped.
    pub issue: SpanIssue,
}

/// The phrases of a record, grounded in its caption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grounding {
    /// The caption after `strip('"').strip()`.
    pub caption: String,
    /// Grounded phrases ordered by start offset (ties keep file order).
    pub spans: Vec<PhraseSpan>,
    /// Refs that could not be grounded.
    pub dropped: Vec<DroppedRef>,
}

impl Grounding {
    /// Locates every ref's phrase in the record's caption.
    pub fn of(record: &Record) -> Self {
        let caption = python_strip(python_strip_char(&record.caption, '"')).to_string();
        let mut spans = Vec::new();
        let mut dropped = Vec::new();
        for (ref_index, r) in record.refs.iter().enumerate() {
            let issue = if r.sentence.is_empty() {
                Some(SpanIssue::EmptyPhrase)
            } else if let Some(start) = caption.find(&r.sentence) {
                spans.push(PhraseSpan {
                    ref_index,
                    start,
                    end: start + r.sentence.len(),
                });
                None
            } else {
                Some(SpanIssue::PhraseAbsent)
            };
            if let Some(issue) = issue {
                dropped.push(DroppedRef {
                    ref_index,
                    sentence: r.sentence.clone(),
                    issue,
                });
            }
        }
        // Stable, like Python's `sorted(..., key=start)`.
        spans.sort_by_key(|s| s.start);
        let mut kept: Vec<PhraseSpan> = Vec::with_capacity(spans.len());
        for span in spans {
            match kept
                .iter()
                .find(|k| span.start < k.end && k.start < span.end)
            {
                Some(other) => dropped.push(DroppedRef {
                    ref_index: span.ref_index,
                    sentence: record.refs[span.ref_index].sentence.clone(),
                    issue: SpanIssue::Overlaps {
                        other_ref: other.ref_index,
                    },
                }),
                None => kept.push(span),
            }
        }
        dropped.sort_by_key(|d| d.ref_index);
        Self {
            caption,
            spans: kept,
            dropped,
        }
    }

    /// The training answer: the caption with each grounded phrase wrapped as
    /// `<p> PHRASE </p> [SEG]` (the reference's `tag_caption`).
    pub fn tagged_answer(&self) -> String {
        let mut out = String::with_capacity(self.caption.len() + 16 * self.spans.len());
        let mut cursor = 0;
        for span in &self.spans {
            out.push_str(&self.caption[cursor..span.start]);
            out.push_str("<p> ");
            out.push_str(&self.caption[span.start..span.end]);
            out.push_str(" </p> [SEG]");
            cursor = span.end;
        }
        out.push_str(&self.caption[cursor..]);
        out
    }

    /// Ref indices in `[SEG]` order.
    pub fn ordered_refs(&self) -> Vec<usize> {
        self.spans.iter().map(|s| s.ref_index).collect()
    }
}

/// Python's `str.isspace` set, which is wider than Rust's `char::is_whitespace`
/// (it includes the ASCII separators U+001C..U+001F).
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python `s.strip()`.
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(is_python_space)
}

/// Python `s.strip(c)` for one character.
pub fn python_strip_char(s: &str, c: char) -> &str {
    s.trim_matches(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ArtifactRef;

    fn record(caption: &str, phrases: &[&str]) -> Record {
        Record {
            id: "r".into(),
            img_file_name: "r.jpg".into(),
            caption: caption.into(),
            refs: phrases
                .iter()
                .map(|p| ArtifactRef {
                    sentence: p.to_string(),
                    explanation: String::new(),
                    bbox: None,
                    segmentation: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn orders_by_first_occurrence_and_tags_like_the_reference() {
        // Python strips `"` first, then whitespace: a quote behind a newline survives.
        let r = record(
            "\" I have found: The hand:six fingers. The sky:two suns.\"",
            &["The sky", "The hand"],
        );
        let kept = Grounding::of(&record("\"x\"\n", &[]));
        assert_eq!(kept.caption, "x\"");
        let g = Grounding::of(&r);
        assert_eq!(
            g.caption,
            "I have found: The hand:six fingers. The sky:two suns."
        );
        assert_eq!(g.ordered_refs(), vec![1, 0]);
        assert_eq!(
            g.tagged_answer(),
            "I have found: <p> The hand </p> [SEG]:six fingers. <p> The sky </p> [SEG]:two suns."
        );
        assert!(g.dropped.is_empty());
    }

    #[test]
    fn reports_absent_empty_and_overlapping_phrases() {
        let r = record(
            "A red car. A red car door.",
            &["red car door", "A red", "missing", "", "red car"],
        );
        let g = Grounding::of(&r);
        // "A red" at 0, "red car" at 2 overlaps it, "red car door" at 13.
        assert_eq!(g.ordered_refs(), vec![1, 0]);
        let issues: Vec<_> = g
            .dropped
            .iter()
            .map(|d| (d.ref_index, d.issue.clone()))
            .collect();
        assert_eq!(
            issues,
            vec![
                (2, SpanIssue::PhraseAbsent),
                (3, SpanIssue::EmptyPhrase),
                (4, SpanIssue::Overlaps { other_ref: 1 })
            ]
        );
    }

    #[test]
    fn duplicate_phrase_uses_first_occurrence_and_is_reported() {
        let r = record("x cat y cat", &["cat", "cat"]);
        let g = Grounding::of(&r);
        assert_eq!(g.spans.len(), 1);
        assert_eq!(g.spans[0].start, 2);
        assert_eq!(g.dropped[0].issue, SpanIssue::Overlaps { other_ref: 0 });
    }

    #[test]
    fn python_strip_matches_python_whitespace() {
        assert_eq!(python_strip("\u{1c}\t a b \u{3000}\n"), "a b");
        assert_eq!(python_strip_char("\"\"q\"\"", '"'), "q");
    }
}
