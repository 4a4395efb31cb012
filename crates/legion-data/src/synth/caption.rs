//! Captions in the SynthScars release's style:
//!
//! ```text
//! Upon examining the image. I have found: <summary>\nTo elaborate, I have found the following
//! artifacts. <phrase1>:<explanation1><phrase2>:<explanation2>...
//! ```
//! (no separator between an explanation and the next phrase, as in the release). The summary
//! names the artifacts in lower case only, so that each phrase's first occurrence (`str.find`,
//! case-sensitive, as the reference loader does) is its own place in the elaboration.

use crate::labels::ArtifactCategory;

use super::artifact::Planned;

const PREFIX: &str = "Upon examining the image. I have found: ";
const BRIDGE: &str = "\nTo elaborate, I have found the following artifacts. ";

/// A caption and, for each artifact, the byte offset where its phrase is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caption {
    pub(crate) text: String,
    pub(crate) phrase_offsets: Vec<usize>,
}

fn join_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The caption of an image showing `description` with `artifacts` (none: a clean image).
pub(crate) fn caption(description: &str, artifacts: &[Planned]) -> Caption {
    let mut text = format!("{PREFIX}The image presents {description}.");
    if artifacts.is_empty() {
        text.push_str(
            " The shapes, textures and lighting all look consistent, and I have found no artifacts.",
        );
        return Caption {
            text,
            phrase_offsets: Vec::new(),
        };
    }
    let nouns: Vec<String> = artifacts
        .iter()
        .map(|a| match a.category {
            ArtifactCategory::Physics if !a.noun.starts_with("shadow") => {
                // Shadow and reflection nouns name the subject; say which one is meant.
                let what = if matches!(a.effect, super::artifact::Effect::WrongShadow { .. }) {
                    "shadow"
                } else {
                    "reflection"
                };
                format!("the {what} of the {}", a.noun)
            }
            _ => format!("the {}", a.noun),
        })
        .collect();
    let mut clauses: Vec<String> = Vec::new();
    for a in artifacts {
        let clause = match a.category {
            ArtifactCategory::Structure => "the shapes are deformed",
            ArtifactCategory::Distortion => "the textures and colours look unnatural",
            ArtifactCategory::Physics => "the lighting breaks physical laws",
        };
        if !clauses.iter().any(|c| c == clause) {
            clauses.push(clause.to_string());
        }
    }
    // The kind comes before the parts: an answer commits to what is wrong with the picture as a
    // whole before it names where (a model names the kind from the image, not from the part
    // it happened to name first).
    let kinds = join_list(&clauses);
    let mut kinds_chars = kinds.chars();
    let kinds: String = kinds_chars
        .next()
        .map(|c| c.to_uppercase().chain(kinds_chars).collect())
        .unwrap_or_default();
    text.push_str(&format!(
        " {kinds}: notable anomalies are observed on {}.",
        join_list(&nouns),
    ));
    text.push_str(BRIDGE);
    let mut phrase_offsets = Vec::with_capacity(artifacts.len());
    for a in artifacts {
        phrase_offsets.push(text.len());
        text.push_str(&a.phrase);
        text.push(':');
        text.push_str(&a.explanation);
    }
    Caption {
        text,
        phrase_offsets,
    }
}
