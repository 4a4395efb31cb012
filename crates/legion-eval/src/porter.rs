//! The Porter stemmer exactly as Python `rouge-score` 0.1.2 uses it: NLTK's `PorterStemmer()`
//! in its default `NLTK_EXTENSIONS` mode (`nltk/stem/porter.py`, NLTK 3.x), which differs from
//! Porter's 1980 paper in a few rules (irregular-word pool, `ies`/`ied` on 4-letter words,
//! `y -> i` only after a consonant, the extra `alli`/`fulli`/`logi` rules, and `cvc` for
//! 2-letter stems). Written from the algorithm; checked against NLTK on the ROUGE fixture.
//!
//! Input is a lowercase ASCII `[a-z0-9]` token (the ROUGE tokenizer's output); other bytes are
//! treated as consonants like NLTK treats any non-vowel character.

/// Stems one lowercase token like `nltk.stem.porter.PorterStemmer().stem(word)`.
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some(irregular) = irregular(&lower) {
        return irregular.to_string();
    }
    // NLTK tests the length of the word as given (before lowercasing).
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: Vec<u8> = lower.into_bytes();
    w = step1a(w);
    w = step1b(w);
    w = step1c(w);
    w = step2(w);
    w = step3(w);
    w = step4(w);
    w = step5a(w);
    w = step5b(w);
    // Only ASCII suffixes are removed or added, so UTF-8 stays valid.
    String::from_utf8(w).unwrap_or_default()
}

/// NLTK's irregular-forms pool.
fn irregular(word: &str) -> Option<&'static str> {
    Some(match word {
        "sky" | "skies" => "sky",
        "dying" => "die",
        "lying" => "lie",
        "tying" => "tie",
        "news" => "news",
        "innings" | "inning" => "inning",
        "outings" | "outing" => "outing",
        "cannings" | "canning" => "canning",
        "howe" => "howe",
        "proceed" => "proceed",
        "exceed" => "exceed",
        "succeed" => "succeed",
        _ => return None,
    })
}

fn is_vowel(c: u8) -> bool {
    matches!(c, b'a' | b'e' | b'i' | b'o' | b'u')
}

/// Consonant flags: a `y` is a consonant at the start or after a vowel (NLTK's
/// `_consonant_flags`; equal to its `_is_consonant`).
fn consonant_flags(w: &[u8]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let flag = if is_vowel(c) {
            false
        } else if c == b'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(flag);
    }
    flags
}

fn is_consonant(w: &[u8], i: usize) -> bool {
    consonant_flags(&w[..=i])[i]
}

/// Porter's m: the number of vowel-consonant sequences.
fn measure(stem: &[u8]) -> usize {
    let flags = consonant_flags(stem);
    flags.windows(2).filter(|p| !p[0] && p[1]).count()
}

fn contains_vowel(stem: &[u8]) -> bool {
    consonant_flags(stem).iter().any(|&c| !c)
}

fn ends_double_consonant(w: &[u8]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

fn ends_cvc(w: &[u8]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], b'w' | b'x' | b'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn ends_with(w: &[u8], suffix: &str) -> bool {
    w.ends_with(suffix.as_bytes())
}

fn replace_suffix(w: &[u8], suffix: &str, replacement: &str) -> Vec<u8> {
    let mut out = w[..w.len() - suffix.len()].to_vec();
    out.extend_from_slice(replacement.as_bytes());
    out
}

type Condition<'a> = &'a dyn Fn(&[u8]) -> bool;

/// A rule: suffix, replacement, condition on the stem. The first rule whose suffix matches
/// decides, whether or not its condition holds (NLTK's `_apply_rule_list`).
struct Rule<'a> {
    suffix: &'a str,
    replacement: &'a str,
    condition: Option<Condition<'a>>,
}

fn rule<'a>(suffix: &'a str, replacement: &'a str, condition: Option<Condition<'a>>) -> Rule<'a> {
    Rule {
        suffix,
        replacement,
        condition,
    }
}

fn apply_rules(w: Vec<u8>, rules: &[Rule<'_>]) -> Vec<u8> {
    for r in rules {
        if ends_with(&w, r.suffix) {
            let stem = &w[..w.len() - r.suffix.len()];
            if r.condition.is_none_or(|c| c(stem)) {
                return replace_suffix(&w, r.suffix, r.replacement);
            }
            return w;
        }
    }
    w
}

fn positive_measure(stem: &[u8]) -> bool {
    measure(stem) > 0
}

fn step1a(w: Vec<u8>) -> Vec<u8> {
    if ends_with(&w, "ies") && w.len() == 4 {
        return replace_suffix(&w, "ies", "ie");
    }
    apply_rules(
        w,
        &[
            rule("sses", "ss", None),
            rule("ies", "i", None),
            rule("ss", "ss", None),
            rule("s", "", None),
        ],
    )
}

fn step1b(w: Vec<u8>) -> Vec<u8> {
    if ends_with(&w, "ied") {
        return if w.len() == 4 {
            replace_suffix(&w, "ied", "ie")
        } else {
            replace_suffix(&w, "ied", "i")
        };
    }
    if ends_with(&w, "eed") {
        let stem = &w[..w.len() - 3];
        return if measure(stem) > 0 {
            replace_suffix(&w, "eed", "ee")
        } else {
            w
        };
    }
    let mut intermediate = None;
    for suffix in ["ed", "ing"] {
        if ends_with(&w, suffix) {
            let stem = &w[..w.len() - suffix.len()];
            if contains_vowel(stem) {
                intermediate = Some(stem.to_vec());
                break;
            }
        }
    }
    let Some(stem) = intermediate else {
        return w;
    };
    for (suffix, replacement) in [("at", "ate"), ("bl", "ble"), ("iz", "ize")] {
        if ends_with(&stem, suffix) {
            return replace_suffix(&stem, suffix, replacement);
        }
    }
    if ends_double_consonant(&stem) {
        let last = stem[stem.len() - 1];
        return if matches!(last, b'l' | b's' | b'z') {
            stem
        } else {
            stem[..stem.len() - 1].to_vec()
        };
    }
    if measure(&stem) == 1 && ends_cvc(&stem) {
        let mut out = stem;
        out.push(b'e');
        return out;
    }
    stem
}

fn step1c(w: Vec<u8>) -> Vec<u8> {
    let condition = |stem: &[u8]| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply_rules(w, &[rule("y", "i", Some(&condition))])
}

fn step2(w: Vec<u8>) -> Vec<u8> {
    if ends_with(&w, "alli") && positive_measure(&w[..w.len() - 4]) {
        return step2(replace_suffix(&w, "alli", "al"));
    }
    let pm: Condition<'_> = &positive_measure;
    let word = w.clone();
    let logi = move |_: &[u8]| positive_measure(&word[..word.len() - 3]);
    apply_rules(
        w,
        &[
            rule("ational", "ate", Some(pm)),
            rule("tional", "tion", Some(pm)),
            rule("enci", "ence", Some(pm)),
            rule("anci", "ance", Some(pm)),
            rule("izer", "ize", Some(pm)),
            rule("bli", "ble", Some(pm)),
            rule("alli", "al", Some(pm)),
            rule("entli", "ent", Some(pm)),
            rule("eli", "e", Some(pm)),
            rule("ousli", "ous", Some(pm)),
            rule("ization", "ize", Some(pm)),
            rule("ation", "ate", Some(pm)),
            rule("ator", "ate", Some(pm)),
            rule("alism", "al", Some(pm)),
            rule("iveness", "ive", Some(pm)),
            rule("fulness", "ful", Some(pm)),
            rule("ousness", "ous", Some(pm)),
            rule("aliti", "al", Some(pm)),
            rule("iviti", "ive", Some(pm)),
            rule("biliti", "ble", Some(pm)),
            rule("fulli", "ful", Some(pm)),
            rule("logi", "log", Some(&logi)),
        ],
    )
}

fn step3(w: Vec<u8>) -> Vec<u8> {
    let pm: Condition<'_> = &positive_measure;
    apply_rules(
        w,
        &[
            rule("icate", "ic", Some(pm)),
            rule("ative", "", Some(pm)),
            rule("alize", "al", Some(pm)),
            rule("iciti", "ic", Some(pm)),
            rule("ical", "ic", Some(pm)),
            rule("ful", "", Some(pm)),
            rule("ness", "", Some(pm)),
        ],
    )
}

fn step4(w: Vec<u8>) -> Vec<u8> {
    let m1 = |stem: &[u8]| measure(stem) > 1;
    let ion = |stem: &[u8]| measure(stem) > 1 && matches!(stem.last(), Some(b's' | b't'));
    let m: Condition<'_> = &m1;
    apply_rules(
        w,
        &[
            rule("al", "", Some(m)),
            rule("ance", "", Some(m)),
            rule("ence", "", Some(m)),
            rule("er", "", Some(m)),
            rule("ic", "", Some(m)),
            rule("able", "", Some(m)),
            rule("ible", "", Some(m)),
            rule("ant", "", Some(m)),
            rule("ement", "", Some(m)),
            rule("ment", "", Some(m)),
            rule("ent", "", Some(m)),
            rule("ion", "", Some(&ion)),
            rule("ou", "", Some(m)),
            rule("ism", "", Some(m)),
            rule("ate", "", Some(m)),
            rule("iti", "", Some(m)),
            rule("ous", "", Some(m)),
            rule("ive", "", Some(m)),
            rule("ize", "", Some(m)),
        ],
    )
}

fn step5a(w: Vec<u8>) -> Vec<u8> {
    if ends_with(&w, "e") {
        let stem = &w[..w.len() - 1];
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            return stem.to_vec();
        }
    }
    w
}

fn step5b(w: Vec<u8>) -> Vec<u8> {
    if ends_with(&w, "ll") && measure(&w[..w.len() - 1]) > 1 {
        return w[..w.len() - 1].to_vec();
    }
    w
}

#[cfg(test)]
mod tests {
    use super::stem;

    #[test]
    fn classic_porter_examples() {
        // Values from NLTK 3.10 PorterStemmer() (NLTK_EXTENSIONS mode).
        for (word, expected) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("cats", "cat"),
            ("feed", "feed"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("conflated", "conflat"),
            ("hopping", "hop"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("generalization", "gener"),
            ("hopeful", "hope"),
            ("skies", "sky"),
            ("dying", "die"),
            ("lighting", "light"),
            ("distorted", "distort"),
            ("fingers", "finger"),
        ] {
            assert_eq!(stem(word), expected, "{word}");
        }
    }
}
