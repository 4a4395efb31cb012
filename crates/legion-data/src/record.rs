//! SynthScars annotation records, as in the official release.
//!
//! `{train,test}/annotations/{train,test}.json` is a JSON list; each element is an object with ONE
//! key (the record id) whose value holds `caption`, `img_file_name` and `refs`, each ref holding
//! `sentence`, `explanation`, `bbox` (always null in the release) and `segmentation` (a list of
//! flat `[x1, y1, x2, y2, ...]` float polygons). Unknown extra fields are tolerated and ignored.
//! A record with zero refs is valid (an image without annotated artifact).
//!
//! Parsing is by hand from `serde_json::Value` rather than `#[derive(Deserialize)]` so that every
//! error names the record id and the exact field path (`refs[3].segmentation[0][11]`).
//! Python's `json.dump` writes NaN/Infinity as bare `NaN`/`Infinity` tokens, which are not JSON;
//! they are read as null and then reported as non-finite coordinates at their field.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::{DataError, Location};

/// One annotated artifact of an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArtifactRef {
    /// The artifact phrase, expected to occur verbatim in the caption.
    pub sentence: String,
    /// The expert's explanation of the artifact (may be empty).
    pub explanation: String,
    /// Optional `[x, y, w, h]` box (null throughout the release).
    pub bbox: Option<[f64; 4]>,
    /// Polygons as flat `[x1, y1, x2, y2, ...]` pixel coordinates (float, may overshoot the image
    /// border by round-off).
    pub segmentation: Vec<Vec<f64>>,
}

/// One SynthScars record: an image, its analysis caption and its artifacts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// The record id (the single key of the record object).
    pub id: String,
    /// Bare image file name, joined as `<split>/images/<img_file_name>`.
    pub img_file_name: String,
    /// The full analysis text; artifact phrases occur in it.
    pub caption: String,
    /// The annotated artifacts, in file order.
    pub refs: Vec<ArtifactRef>,
}

/// Parses an annotation file's bytes. `location` names the file for errors.
///
/// # Errors
/// [`DataError::Json`] with line and column for malformed JSON, [`DataError::Invalid`] naming
/// record and field for a well-formed file with a wrong shape.
pub fn parse_annotations(
    bytes: &[u8],
    location: &Location,
) -> Result<Vec<RecordOrError>, DataError> {
    let sanitized = nonfinite_to_null(bytes);
    let value: Value = serde_json::from_slice(&sanitized).map_err(|e| DataError::Json {
        location: location.clone(),
        line: e.line(),
        column: e.column(),
        source: e,
    })?;
    let Value::Array(items) = value else {
        return Err(DataError::invalid(
            location.clone(),
            format!("expected a JSON list of records, found {}", kind(&value)),
        ));
    };
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(index, item)| parse_record(index, item, location))
        .collect())
}

/// A record, or the error that makes it unusable (so that a `--skip-bad` policy can go on).
pub type RecordOrError = Result<Record, DataError>;

/// Reads and parses an annotation file.
///
/// # Errors
/// As [`parse_annotations`], plus [`DataError::Io`] when the file cannot be read.
pub fn read_annotations(path: &Path) -> Result<Vec<RecordOrError>, DataError> {
    let location = Location::file(path);
    let bytes = std::fs::read(path).map_err(|e| DataError::io(location.clone(), e))?;
    parse_annotations(&bytes, &location)
}

/// Writes records in the release's layout (list of single-key objects), pretty-printed.
///
/// # Errors
/// [`DataError::Io`] when the file cannot be written.
pub fn write_annotations(path: &Path, records: &[Record]) -> Result<(), DataError> {
    let list: Vec<Value> = records
        .iter()
        .map(|r| {
            let refs: Vec<Value> = r
                .refs
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "sentence": a.sentence,
                        "explanation": a.explanation,
                        "bbox": a.bbox,
                        "segmentation": a.segmentation,
                    })
                })
                .collect();
            let body = serde_json::json!({
                "caption": r.caption,
                "img_file_name": r.img_file_name,
                "refs": refs,
            });
            let mut object = serde_json::Map::new();
            object.insert(r.id.clone(), body);
            Value::Object(object)
        })
        .collect();
    let text =
        serde_json::to_string_pretty(&list).expect("serialising plain JSON values cannot fail");
    crate::fsutil::write_atomic(path, text.as_bytes())
        .map_err(|e| DataError::io(Location::file(path), e))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn parse_record(index: usize, item: Value, file: &Location) -> RecordOrError {
    let at_index = file.record(format!("#{index}"));
    let Value::Object(object) = item else {
        return Err(DataError::invalid(
            at_index,
            format!(
                "list element #{index} must be an object with one key (the record id), found {}",
                kind(&item)
            ),
        ));
    };
    if object.len() != 1 {
        return Err(DataError::invalid(
            at_index,
            format!(
                "list element #{index} must have exactly one key (the record id), found {}",
                object.len()
            ),
        ));
    }
    let (id, body) = object.into_iter().next().expect("length checked to be 1");
    let at = file.record(&id);
    let Value::Object(mut body) = body else {
        return Err(DataError::invalid(
            at,
            format!("record value must be an object, found {}", kind(&body)),
        ));
    };
    let caption = take_string(&mut body, "caption", &at)?;
    let img_file_name = take_string(&mut body, "img_file_name", &at)?;
    if img_file_name.is_empty() || img_file_name.contains(['/', '\\']) || img_file_name == ".." {
        return Err(DataError::invalid(
            at.field("img_file_name"),
            format!("must be a bare file name, found `{img_file_name}`"),
        ));
    }
    let refs = match body.remove("refs") {
        None => return Err(DataError::invalid(at.field("refs"), "missing field")),
        Some(Value::Array(refs)) => refs,
        Some(other) => {
            return Err(DataError::invalid(
                at.field("refs"),
                format!("expected a list, found {}", kind(&other)),
            ));
        }
    };
    let refs = refs
        .into_iter()
        .enumerate()
        .map(|(k, r)| parse_ref(k, r, &at))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Record {
        id,
        img_file_name,
        caption,
        refs,
    })
}

fn take_string(
    object: &mut serde_json::Map<String, Value>,
    key: &str,
    at: &Location,
) -> Result<String, DataError> {
    match object.remove(key) {
        Some(Value::String(s)) => Ok(s),
        None => Err(DataError::invalid(at.field(key), "missing field")),
        Some(other) => Err(DataError::invalid(
            at.field(key),
            format!("expected a string, found {}", kind(&other)),
        )),
    }
}

fn parse_ref(k: usize, value: Value, at: &Location) -> Result<ArtifactRef, DataError> {
    let field = |name: &str| at.field(format!("refs[{k}].{name}"));
    let Value::Object(mut object) = value else {
        return Err(DataError::invalid(
            at.field(format!("refs[{k}]")),
            format!("expected an object, found {}", kind(&value)),
        ));
    };
    let sentence = match object.remove("sentence") {
        Some(Value::String(s)) => s,
        None => return Err(DataError::invalid(field("sentence"), "missing field")),
        Some(other) => {
            return Err(DataError::invalid(
                field("sentence"),
                format!("expected a string, found {}", kind(&other)),
            ));
        }
    };
    let explanation = match object.remove("explanation") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => String::new(),
        Some(other) => {
            return Err(DataError::invalid(
                field("explanation"),
                format!("expected a string, found {}", kind(&other)),
            ));
        }
    };
    let bbox = match object.remove("bbox") {
        None | Some(Value::Null) => None,
        Some(Value::Array(xs)) if xs.len() == 4 => {
            let mut b = [0.0; 4];
            for (i, x) in xs.iter().enumerate() {
                b[i] = finite(x, || field(&format!("bbox[{i}]")))?;
            }
            Some(b)
        }
        Some(other) => {
            return Err(DataError::invalid(
                field("bbox"),
                format!("expected null or [x, y, w, h], found {other}"),
            ));
        }
    };
    let segmentation = match object.remove("segmentation") {
        Some(Value::Array(polys)) => polys
            .iter()
            .enumerate()
            .map(|(p, poly)| {
                let Value::Array(coords) = poly else {
                    return Err(DataError::invalid(
                        field(&format!("segmentation[{p}]")),
                        format!("expected a flat list of coordinates, found {}", kind(poly)),
                    ));
                };
                let coords = coords
                    .iter()
                    .enumerate()
                    .map(|(i, x)| finite(x, || field(&format!("segmentation[{p}][{i}]"))))
                    .collect::<Result<Vec<f64>, _>>()?;
                if coords.len() % 2 != 0 {
                    return Err(DataError::invalid(
                        field(&format!("segmentation[{p}]")),
                        format!(
                            "polygon has an odd number of coordinates ({})",
                            coords.len()
                        ),
                    ));
                }
                Ok(coords)
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => return Err(DataError::invalid(field("segmentation"), "missing field")),
        Some(other) => {
            return Err(DataError::invalid(
                field("segmentation"),
                format!("expected a list of polygons, found {}", kind(&other)),
            ));
        }
    };
    Ok(ArtifactRef {
        sentence,
        explanation,
        bbox,
        segmentation,
    })
}

fn finite(value: &Value, at: impl Fn() -> Location) -> Result<f64, DataError> {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            _ => Err(DataError::invalid(
                at(),
                format!("coordinate {n} is not a finite number"),
            )),
        },
        Value::Null => Err(DataError::invalid(
            at(),
            "coordinate is NaN, Infinity or null",
        )),
        other => Err(DataError::invalid(
            at(),
            format!("expected a number, found {}", kind(other)),
        )),
    }
}

/// Replaces the bare tokens `NaN`, `Infinity` and `-Infinity` (outside strings) by `null`.
/// Lines are kept; columns after a replaced token on the same line shift by at most one per token.
fn nonfinite_to_null(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let has_token =
        |b: &[u8]| b.windows(3).any(|w| w == b"NaN") || b.windows(8).any(|w| w == b"Infinity");
    if !has_token(bytes) {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if let Some(token) = [&b"NaN"[..], b"-Infinity", b"Infinity"]
            .into_iter()
            .find(|t| bytes[i..].starts_with(t))
        {
            out.extend_from_slice(b"null");
            i += token.len();
            continue;
        }
        out.push(b);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc() -> Location {
        Location::file("test.json")
    }

    const GOOD: &str = r#"[
      {"img_0001": {"caption": "Upon examining the image. I have found: a hand.\nTo elaborate, I have found the following artifacts. The hand:has six fingers",
                    "img_file_name": "0001.jpg", "extra_field": 7,
                    "refs": [{"sentence": "The hand", "explanation": "has six fingers", "bbox": null,
                              "segmentation": [[1.0, 2.0, 10.5, 2.0, 10.5, 9.0]]}]}},
      {"img_0002": {"caption": "Nothing.", "img_file_name": "0002.png", "refs": []}}
    ]"#;

    #[test]
    fn parses_the_release_layout() {
        let records: Vec<Record> = parse_annotations(GOOD.as_bytes(), &loc())
            .unwrap()
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].id, "img_0001");
        assert_eq!(
            records[0].refs[0].segmentation[0],
            vec![1.0, 2.0, 10.5, 2.0, 10.5, 9.0]
        );
        assert_eq!(records[0].refs[0].explanation, "has six fingers");
        assert!(
            records[1].refs.is_empty(),
            "a record with zero refs is valid"
        );
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let err = parse_annotations(b"[\n {\"a\": {\"caption\": }\n]", &loc()).unwrap_err();
        match err {
            DataError::Json { line, column, .. } => assert_eq!((line, column), (2, 20)),
            other => panic!("expected a JSON error, got {other}"),
        }
    }

    fn single_error(json: &str) -> String {
        let results = parse_annotations(json.as_bytes(), &loc()).unwrap();
        results.into_iter().next().unwrap().unwrap_err().to_string()
    }

    #[test]
    fn field_errors_name_record_and_field() {
        let odd = r#"[{"r1": {"caption": "c", "img_file_name": "a.jpg", "refs": [{"sentence": "s", "segmentation": [[1, 2, 3]]}]}}]"#;
        let msg = single_error(odd);
        assert!(
            msg.contains("record `r1`")
                && msg.contains("refs[0].segmentation[0]")
                && msg.contains("odd"),
            "{msg}"
        );

        let nan = r#"[{"r2": {"caption": "c", "img_file_name": "a.jpg", "refs": [{"sentence": "s", "segmentation": [[1, NaN, 3, 4, 5, 6]]}]}}]"#;
        let msg = single_error(nan);
        assert!(
            msg.contains("record `r2`")
                && msg.contains("refs[0].segmentation[0][1]")
                && msg.contains("NaN"),
            "{msg}"
        );

        let missing = r#"[{"r3": {"caption": "c", "refs": []}}]"#;
        assert!(single_error(missing).contains("field `img_file_name`"));

        let two_keys = r#"[{"a": {}, "b": {}}]"#;
        assert!(single_error(two_keys).contains("exactly one key"));

        let path = r#"[{"r4": {"caption": "c", "img_file_name": "../x.jpg", "refs": []}}]"#;
        assert!(single_error(path).contains("bare file name"));
    }

    #[test]
    fn nonfinite_tokens_keep_positions_and_strings() {
        let text = br#"{"NaN": [NaN, -Infinity, Infinity], "s": "Infinity"}"#;
        let out = nonfinite_to_null(text);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["NaN"], serde_json::json!([null, null, null]));
        assert_eq!(v["s"], "Infinity");
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.json");
        let records: Vec<Record> = parse_annotations(GOOD.as_bytes(), &loc())
            .unwrap()
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        write_annotations(&path, &records).unwrap();
        let again: Vec<Record> = read_annotations(&path)
            .unwrap()
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records, again);
    }
}
