//! Key remapping from a checkpoint's naming to burn field paths, compiled up front.
//!
//! Same semantics as burn-store's `KeyRemapper` (every rule in order, each a `replace_all` on
//! the result of the previous one), but a bad pattern is a [`WeightsError::Pattern`] instead of
//! the panic of `with_key_remapping`, and the loader keeps the original file key next to the
//! remapped one for its error messages.

use super::{KeyRemap, WeightsError};

/// A compiled, ordered table of `(regex, replacement)` rules (`$1` / `${1}` groups allowed).
#[derive(Debug, Clone, Default)]
pub struct RemapTable {
    rules: Vec<(regex_lite::Regex, String)>,
}

impl RemapTable {
    /// Compiles a static table such as `HF_CLIP_REMAP`.
    ///
    /// # Errors
    /// [`WeightsError::Pattern`] naming the first pattern that does not compile.
    pub fn new(rules: &[KeyRemap]) -> Result<Self, WeightsError> {
        Self::from_pairs(rules.iter().map(|(from, to)| (*from, *to)))
    }

    /// Compiles rules given at run time (e.g. `--remap FROM=TO` on a command line).
    ///
    /// # Errors
    /// [`WeightsError::Pattern`] naming the first pattern that does not compile.
    pub fn from_pairs<I, F, T>(rules: I) -> Result<Self, WeightsError>
    where
        I: IntoIterator<Item = (F, T)>,
        F: AsRef<str>,
        T: Into<String>,
    {
        let rules = rules
            .into_iter()
            .map(|(from, to)| Ok((compile("remap", from.as_ref())?, to.into())))
            .collect::<Result<_, WeightsError>>()?;
        Ok(Self { rules })
    }

    /// Adds the rules of `other` after this table's.
    pub fn then(mut self, other: RemapTable) -> Self {
        self.rules.extend(other.rules);
        self
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the table has no rule (keys are used as they are).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The burn path a file key maps to.
    pub fn apply(&self, key: &str) -> String {
        self.rules
            .iter()
            .fold(key.to_string(), |name, (pattern, replacement)| {
                if pattern.is_match(&name) {
                    pattern
                        .replace_all(&name, replacement.as_str())
                        .into_owned()
                } else {
                    name
                }
            })
    }
}

/// Compiles a static pattern table of this crate (the `*_IGNORED` lists of every component).
///
/// # Panics
/// Never for the crate's tables: each is compiled by a unit test of its component.
pub(crate) fn compile_patterns(patterns: &[&str]) -> Vec<regex_lite::Regex> {
    patterns
        .iter()
        .map(|p| regex_lite::Regex::new(p).expect("static pattern table is valid"))
        .collect()
}

/// Compiles one user or table pattern; `what` says which list it belongs to in the error.
pub(crate) fn compile(
    what: &'static str,
    pattern: &str,
) -> Result<regex_lite::Regex, WeightsError> {
    regex_lite::Regex::new(pattern).map_err(|source| WeightsError::Pattern {
        what,
        pattern: pattern.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_chain_in_order_like_burn_store() {
        let table = RemapTable::new(&[
            (r"^vision_model\.", ""),
            (r"^encoder\.layers\.", "layers."),
            (r"(^|\.)neck\.0\.", "${1}neck.conv1."),
        ])
        .unwrap();
        assert_eq!(
            table.apply("vision_model.encoder.layers.3.mlp.fc1.weight"),
            "layers.3.mlp.fc1.weight"
        );
        assert_eq!(
            table.apply("image_encoder.neck.0.weight"),
            "image_encoder.neck.conv1.weight"
        );
        assert_eq!(table.apply("untouched.key"), "untouched.key");
    }

    #[test]
    fn bad_pattern_is_an_error_naming_it() {
        let err = RemapTable::from_pairs([("^ok$", "x"), ("(unclosed", "y")]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("(unclosed"), "{message}");
        assert!(matches!(err, WeightsError::Pattern { what: "remap", .. }));
    }
}
