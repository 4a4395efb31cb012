//! Self-contained HTML reports: every image is inlined as a `data:image/png;base64` URI, so the
//! file opens in a browser without a server and can be mailed or archived alone.

use std::io::Cursor;
use std::path::Path;

use base64::Engine;
use image::{ImageFormat, RgbImage, imageops};

use crate::error::InferError;
use crate::record::AnalysisRecord;

/// Longest side of the thumbnails in a report.
pub const THUMBNAIL_SIZE: u32 = 384;

/// PNG bytes of an image.
///
/// # Errors
/// [`InferError::ImageWrite`] when encoding fails (`what` names the image).
pub fn png_bytes(image: &RgbImage, what: &str) -> Result<Vec<u8>, InferError> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, ImageFormat::Png)
        .map_err(|e| InferError::image_write(what, e))?;
    Ok(out.into_inner())
}

/// `data:image/png;base64,...` of an image.
///
/// # Errors
/// As [`png_bytes`].
pub fn png_data_uri(image: &RgbImage, what: &str) -> Result<String, InferError> {
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png_bytes(image, what)?)
    ))
}

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `image` shrunk (Triangle filter) so its longest side is at most [`THUMBNAIL_SIZE`].
pub fn thumbnail(image: &RgbImage) -> RgbImage {
    let (w, h) = image.dimensions();
    let longest = w.max(h);
    if longest <= THUMBNAIL_SIZE {
        return image.clone();
    }
    let scale = f64::from(THUMBNAIL_SIZE) / f64::from(longest);
    let nw = ((f64::from(w) * scale).round() as u32).max(1);
    let nh = ((f64::from(h) * scale).round() as u32).max(1);
    imageops::resize(image, nw, nh, imageops::FilterType::Triangle)
}

/// The page skeleton shared by the reports: `title`, inline CSS, `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.card {{ border: 1px solid #ccc; border-radius: 6px; padding: 1em; margin-bottom: 1.5em; }}
.images {{ display: flex; gap: 1em; flex-wrap: wrap; align-items: flex-start; }}
.images figure {{ margin: 0; }}
.images img {{ image-rendering: pixelated; max-width: 100%; min-width: 192px; border: 1px solid #ddd; }}
figcaption {{ font-size: 0.85em; color: #555; }}
table {{ border-collapse: collapse; margin-top: 0.6em; }}
td, th {{ border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
.swatch {{ display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px; }}
.explanation {{ white-space: pre-wrap; }}
</style>
</head>
<body>
<h1>{title}</h1>
{body}
</body>
</html>
"#,
        title = escape(title)
    )
}

/// One image of an analysis report.
#[derive(Debug, Clone)]
pub struct ReportEntry {
    /// The analysis.
    pub record: AnalysisRecord,
    /// The input image.
    pub image: RgbImage,
    /// Its overlay ([`crate::overlay::render_analysis_overlay`]).
    pub overlay: RgbImage,
}

/// The analysis report: per image a thumbnail, the overlay with legend, the explanation and a
/// table of artifacts (colour, phrase, explanation, area, score).
///
/// # Errors
/// [`InferError::ImageWrite`] when an image cannot be encoded.
pub fn analysis_report(title: &str, entries: &[ReportEntry]) -> Result<String, InferError> {
    let mut body = format!(
        "<p>{} image(s), {} artifact(s) in total.</p>\n",
        entries.len(),
        entries
            .iter()
            .map(|e| e.record.artifacts.len())
            .sum::<usize>()
    );
    for entry in entries {
        let r = &entry.record;
        let name = escape(&r.image);
        body.push_str(&format!(
            "<div class=\"card\" data-image=\"{name}\">\n<h2>{name}</h2>\n<div class=\"images\">\n\
             <figure><img class=\"thumbnail\" alt=\"{name}\" src=\"{}\"><figcaption>image {}x{}</figcaption></figure>\n\
             <figure><img class=\"overlay\" alt=\"overlay of {name}\" src=\"{}\"><figcaption>artifacts: {} ({:.2}% of the pixels)</figcaption></figure>\n</div>\n",
            png_data_uri(&thumbnail(&entry.image), &r.image)?,
            r.width,
            r.height,
            png_data_uri(&thumbnail(&entry.overlay), &r.image)?,
            r.artifacts.len(),
            100.0 * r.artifact_ratio,
        ));
        body.push_str(&format!(
            "<p class=\"explanation\">{}</p>\n",
            escape(&r.explanation)
        ));
        if !r.artifacts.is_empty() {
            body.push_str(
                "<table>\n<tr><th></th><th>phrase</th><th>explanation</th><th>area (px)</th><th>score</th></tr>\n",
            );
            for (k, a) in r.artifacts.iter().enumerate() {
                let [cr, cg, cb] = crate::overlay::colour(k).0;
                body.push_str(&format!(
                    "<tr><td><span class=\"swatch\" style=\"background: rgb({cr},{cg},{cb})\"></span> {}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td></tr>\n",
                    a.index,
                    escape(&a.label()),
                    escape(a.explanation.as_deref().unwrap_or("")),
                    a.area,
                    a.score
                ));
            }
            body.push_str("</table>\n");
        }
        body.push_str("</div>\n");
    }
    Ok(page(title, &body))
}

/// Writes `html` to `path` (creating the parent folder).
///
/// # Errors
/// [`InferError::Io`] naming the file.
pub fn write_html(path: &Path, html: &str) -> Result<(), InferError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| InferError::io(parent, e))?;
    }
    std::fs::write(path, html).map_err(|e| InferError::io(path, e))
}

/// PNG bytes of a grey image.
///
/// # Errors
/// As [`png_bytes`].
pub fn png_bytes_gray(image: &image::GrayImage, what: &str) -> Result<Vec<u8>, InferError> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, ImageFormat::Png)
        .map_err(|e| InferError::image_write(what, e))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_uri_decodes_back_to_the_image() {
        let image = RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8 * 50, y as u8 * 90, 7]));
        let uri = png_data_uri(&image, "t").unwrap();
        let b64 = uri.strip_prefix("data:image/png;base64,").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let back = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(back, image);
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
