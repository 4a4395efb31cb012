//! Pluggable image generators for the refinement loop: legion-rs drives them, it does not
//! reimplement them.
//!
//! - [`BuiltinInpainter`]: the classical inpainter of [`crate::inpaint`] (no external model).
//! - [`CommandGenerator`]: a shell command template, e.g. for diffusers SDXL inpainting
//!   (`scripts/refine/sdxl_inpaint.py`):
//!   ```text
//!   --generator-cmd 'python scripts/refine/sdxl_inpaint.py --image {image} --mask {mask} --prompt {prompt} --out {out}'
//!   ```
//!   `{image}` (PNG of the current image), `{mask}` (PNG, 255 = repaint), `{prompt}`, `{out}`
//!   (where the command must write the result) are replaced by **shell-quoted** values, so do
//!   not quote them in the template. The command runs with `sh -c`; a non-zero exit fails the
//!   round with its stderr.
//! - [`HttpGenerator`]: `POST` of `{"image": <base64 PNG>, "mask": <base64 PNG>, "prompt": ...}`
//!   (JSON) to an `http://` URL; the answer is a PNG (`Content-Type: image/png`) or JSON
//!   `{"image": <base64 PNG>}`.
//!
//! Whatever the generator returns is resized to the input size if needed (Lanczos) and, with
//! `keep_unmasked` (the default), pasted into the input through the mask so pixels outside
//! the mask stay exactly as they were.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use image::{RgbImage, imageops};
use legion_data::mask::Mask;

use crate::error::InferError;
use crate::html::{png_bytes, png_bytes_gray};
use crate::inpaint::{InpaintConfig, inpaint};

/// One inpainting job.
#[derive(Debug, Clone, Copy)]
pub struct InpaintRequest<'a> {
    /// The current image.
    pub image: &'a RgbImage,
    /// Pixels to repaint (the image's size).
    pub mask: &'a Mask,
    /// The text prompt.
    pub prompt: &'a str,
}

/// Something that repaints the masked region of an image.
pub trait Generator {
    /// A short description for records and messages.
    fn describe(&self) -> String;

    /// Returns the repainted image. `workdir` is an existing folder for temporary files.
    ///
    /// # Errors
    /// [`InferError::External`] when the generator fails.
    fn inpaint(
        &mut self,
        request: &InpaintRequest<'_>,
        workdir: &Path,
    ) -> Result<RgbImage, InferError>;
}

/// The built-in classical inpainter ([`crate::inpaint`]); the prompt is ignored.
#[derive(Debug, Clone, Default)]
pub struct BuiltinInpainter {
    /// Its settings.
    pub config: InpaintConfig,
}

impl Generator for BuiltinInpainter {
    fn describe(&self) -> String {
        format!(
            "builtin (onion peel + {} diffusion sweeps)",
            self.config.iterations
        )
    }

    fn inpaint(
        &mut self,
        request: &InpaintRequest<'_>,
        _workdir: &Path,
    ) -> Result<RgbImage, InferError> {
        Ok(inpaint(request.image, request.mask, &self.config))
    }
}

/// Quotes `value` for `sh` (single quotes, embedded quotes escaped).
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// Replaces `{name}` placeholders of `template` by shell-quoted values.
pub fn fill_template(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), &shell_quote(value));
    }
    out
}

/// Runs `sh -c command` and returns its stdout.
///
/// # Errors
/// [`InferError::External`] with the exit status and stderr.
pub fn run_shell(command: &str) -> Result<String, InferError> {
    tracing::debug!(command, "running");
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .map_err(|source| InferError::ExternalStart {
            what: command.to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(InferError::External {
            what: command.to_string(),
            message: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A generator run as a shell command (see the module docs).
#[derive(Debug, Clone)]
pub struct CommandGenerator {
    /// The template with `{image}`, `{mask}`, `{prompt}`, `{out}`.
    pub template: String,
}

impl Generator for CommandGenerator {
    fn describe(&self) -> String {
        format!("command `{}`", self.template)
    }

    fn inpaint(
        &mut self,
        request: &InpaintRequest<'_>,
        workdir: &Path,
    ) -> Result<RgbImage, InferError> {
        let image = workdir.join("generator_image.png");
        let mask = workdir.join("generator_mask.png");
        let out = workdir.join("generator_out.png");
        request
            .image
            .save(&image)
            .map_err(|e| InferError::image_write(&image, e))?;
        request
            .mask
            .to_gray_image(255)
            .save(&mask)
            .map_err(|e| InferError::image_write(&mask, e))?;
        let _ = std::fs::remove_file(&out);
        let command = fill_template(
            &self.template,
            &[
                ("image", &image.to_string_lossy()),
                ("mask", &mask.to_string_lossy()),
                ("prompt", request.prompt),
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

/// A generator behind an HTTP endpoint (see the module docs).
#[derive(Debug, Clone)]
pub struct HttpGenerator {
    /// `http://host:port/path`.
    pub url: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Largest generator response accepted (256 MiB).
const MAX_GENERATOR_RESPONSE: usize = 256 << 20;

impl Generator for HttpGenerator {
    fn describe(&self) -> String {
        format!("endpoint {}", self.url)
    }

    fn inpaint(
        &mut self,
        request: &InpaintRequest<'_>,
        _workdir: &Path,
    ) -> Result<RgbImage, InferError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = serde_json::json!({
            "image": b64.encode(png_bytes(request.image, "generator input")?),
            "mask": b64.encode(png_bytes_gray(&request.mask.to_gray_image(255), "generator mask")?),
            "prompt": request.prompt,
        })
        .to_string();
        let fail = |message: String| InferError::External {
            what: self.describe(),
            message,
        };
        let response = crate::http::post(
            &self.url,
            "application/json",
            body.as_bytes(),
            self.timeout,
            MAX_GENERATOR_RESPONSE,
        )
        .map_err(|source| InferError::ExternalHttp {
            what: self.describe(),
            source,
        })?;
        if response.status != 200 {
            return Err(fail(format!(
                "HTTP {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body[..response.body.len().min(500)])
            )));
        }
        let is_json = response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"));
        let png = if is_json {
            let value: serde_json::Value =
                serde_json::from_slice(&response.body).map_err(|source| {
                    InferError::ExternalJson {
                        what: self.describe(),
                        source,
                    }
                })?;
            let text = value
                .get("image")
                .and_then(|v| v.as_str())
                .ok_or_else(|| fail("JSON answer has no string field `image`".into()))?;
            b64.decode(text)
                .map_err(|source| InferError::ExternalBase64 {
                    what: self.describe(),
                    source,
                })?
        } else {
            response.body
        };
        legion_data::image_io::decode_rgb_bytes(&png, Path::new("<the answer's image>")).map_err(
            |source| InferError::GeneratedImage {
                what: self.describe(),
                detail: "answer is not an image",
                source,
            },
        )
    }
}

/// Resizes `generated` to `original`'s size if needed and, when `keep_unmasked`, keeps
/// `original` outside `mask`.
pub fn composite(
    original: &RgbImage,
    generated: RgbImage,
    mask: &Mask,
    keep_unmasked: bool,
) -> RgbImage {
    let (w, h) = original.dimensions();
    let generated = if generated.dimensions() == (w, h) {
        generated
    } else {
        tracing::debug!(from = ?generated.dimensions(), to = ?(w, h), "resizing the generator output");
        imageops::resize(&generated, w, h, imageops::FilterType::Lanczos3)
    };
    if !keep_unmasked {
        return generated;
    }
    let mut out = original.clone();
    for ((o, g), &m) in out
        .pixels_mut()
        .zip(generated.pixels())
        .zip(mask.as_slice())
    {
        if m != 0 {
            *o = *g;
        }
    }
    out
}

/// An optional per-round image score (e.g. HPSv2): a command template with `{image}` whose
/// last non-empty stdout line is a number (higher = better).
#[derive(Debug, Clone)]
pub struct CommandScorer {
    /// The template.
    pub template: String,
}

impl CommandScorer {
    /// Scores the image file at `path`.
    ///
    /// # Errors
    /// [`InferError::External`] when the command fails or prints no number.
    pub fn score(&self, path: &Path) -> Result<f64, InferError> {
        let command = fill_template(&self.template, &[("image", &path.to_string_lossy())]);
        let stdout = run_shell(&command)?;
        let last = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        last.trim().parse().map_err(|_| InferError::External {
            what: command.clone(),
            message: format!("expected a number on the last stdout line, found `{last}`"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_shell_quoted() {
        let cmd = fill_template(
            "gen --prompt {prompt} --out {out}",
            &[
                ("prompt", "it's a \"hand\"; rm -rf /"),
                ("out", "/tmp/a b.png"),
            ],
        );
        assert_eq!(
            cmd,
            "gen --prompt 'it'\\''s a \"hand\"; rm -rf /' --out '/tmp/a b.png'"
        );
        let echoed = run_shell(&fill_template("printf %s {p}", &[("p", "it's; $HOME")])).unwrap();
        assert_eq!(echoed, "it's; $HOME");
        let err = run_shell("echo oops >&2; exit 3").unwrap_err().to_string();
        assert!(err.contains("oops") && err.contains('3'), "{err}");
    }

    #[test]
    fn composite_keeps_unmasked_pixels_and_resizes() {
        let original = RgbImage::from_pixel(4, 2, image::Rgb([10, 10, 10]));
        let generated = RgbImage::from_pixel(8, 4, image::Rgb([200, 200, 200]));
        let mask = Mask::from_raw(2, 4, vec![0, 1, 0, 0, 0, 0, 0, 1]).unwrap();
        let out = composite(&original, generated, &mask, true);
        assert_eq!(out.get_pixel(1, 0).0, [200, 200, 200]);
        assert_eq!(out.get_pixel(3, 1).0, [200, 200, 200]);
        assert_eq!(out.get_pixel(0, 0).0, [10, 10, 10]);
        let all = composite(
            &original,
            RgbImage::from_pixel(4, 2, image::Rgb([1, 2, 3])),
            &mask,
            false,
        );
        assert_eq!(all.get_pixel(0, 0).0, [1, 2, 3]);
    }
}
