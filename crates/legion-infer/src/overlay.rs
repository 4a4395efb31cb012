//! Overlay PNGs: each artifact's mask tinted in its own colour with a solid outline, and a
//! legend below the image with the colour, the phrase, the mask area and the score.

use image::{Rgb, RgbImage, imageops};
use legion_data::mask::Mask;

use crate::font::{GLYPH_HEIGHT, draw_text, text_width};
use crate::record::AnalysisRecord;

/// Artifact colours, in order (cycled after the last).
pub const PALETTE: [[u8; 3]; 10] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [255, 225, 25],
    [128, 128, 0],
];

/// Weight of the tint over an image pixel inside a mask.
const TINT_ALPHA: f32 = 0.45;
/// Overlays are upscaled (nearest) until the image is at least this wide, so small images
/// stay readable next to their legend.
const MIN_DISPLAY_WIDTH: u32 = 256;
/// Largest upscale factor.
const MAX_UPSCALE: u32 = 8;
/// Font scale of legend text.
const TEXT_SCALE: u32 = 2;
/// Widest legend (longer lines are cut with `...`).
const MAX_LEGEND_WIDTH: u32 = 1024;
/// Legend padding in pixels.
const PAD: u32 = 6;

/// The colour of the `index`-th artifact (0-based).
pub fn colour(index: usize) -> Rgb<u8> {
    Rgb(PALETTE[index % PALETTE.len()])
}

/// Tints `mask`'s pixels of `image` with `colour` and draws the mask's boundary (mask pixels
/// with a 4-neighbour outside the mask) in solid colour.
///
/// # Panics
/// When the mask does not have the image's size.
pub fn tint_mask(image: &mut RgbImage, mask: &Mask, colour: Rgb<u8>) {
    let (w, h) = image.dimensions();
    assert_eq!(
        (mask.height(), mask.width()),
        (h as usize, w as usize),
        "mask and image sizes differ"
    );
    let inside =
        |r: i64, c: i64| r >= 0 && c >= 0 && mask.get(r as usize, c as usize) == Some(true);
    for r in 0..h as i64 {
        for c in 0..w as i64 {
            if !inside(r, c) {
                continue;
            }
            let edge =
                !inside(r - 1, c) || !inside(r + 1, c) || !inside(r, c - 1) || !inside(r, c + 1);
            let pixel = image.get_pixel_mut(c as u32, r as u32);
            if edge {
                *pixel = colour;
            } else {
                for (channel, &t) in pixel.0.iter_mut().zip(&colour.0) {
                    *channel = (f32::from(*channel) * (1.0 - TINT_ALPHA)
                        + f32::from(t) * TINT_ALPHA)
                        .round() as u8;
                }
            }
        }
    }
}

/// The upscale factor for an image `width` pixels wide.
pub fn display_scale(width: u32) -> u32 {
    MIN_DISPLAY_WIDTH
        .div_ceil(width.max(1))
        .clamp(1, MAX_UPSCALE)
}

/// Nearest-neighbour upscale by an integer factor.
pub fn upscale(image: &RgbImage, factor: u32) -> RgbImage {
    if factor <= 1 {
        return image.clone();
    }
    let (w, h) = image.dimensions();
    imageops::resize(image, w * factor, h * factor, imageops::FilterType::Nearest)
}

/// Cuts `text` (with `...`) so it is at most `max_width` pixels wide at `scale`.
fn fit(text: &str, max_width: u32, scale: u32) -> String {
    if text_width(text, scale) <= max_width {
        return text.to_string();
    }
    let per_char = text_width("a", scale).max(1);
    let keep = (max_width / per_char).saturating_sub(3) as usize;
    format!("{}...", text.chars().take(keep).collect::<String>())
}

/// The overlay of a record on its image: masks tinted per artifact (colours of [`PALETTE`]),
/// the image upscaled to be readable ([`display_scale`]), and a legend below with one line per
/// artifact: colour swatch, `k. phrase (N px, score s)`.
///
/// # Panics
/// When the record's size is not the image's (records are made from the image).
pub fn render_analysis_overlay(image: &RgbImage, record: &AnalysisRecord) -> RgbImage {
    let mut tinted = image.clone();
    for (k, artifact) in record.artifacts.iter().enumerate() {
        tint_mask(&mut tinted, &artifact.mask(), colour(k));
    }
    let lines: Vec<(Option<Rgb<u8>>, String)> = if record.artifacts.is_empty() {
        vec![(None, "no artifact found".to_string())]
    } else {
        record
            .artifacts
            .iter()
            .enumerate()
            .map(|(k, a)| {
                (
                    Some(colour(k)),
                    format!(
                        "{}. {} ({} px, score {:.2})",
                        a.index,
                        a.label(),
                        a.area,
                        a.score
                    ),
                )
            })
            .collect()
    };
    with_legend(&upscale(&tinted, display_scale(image.width())), &lines)
}

/// `image` with a white legend panel below it, one line per entry (optional colour swatch).
pub fn with_legend(image: &RgbImage, lines: &[(Option<Rgb<u8>>, String)]) -> RgbImage {
    let line_height = GLYPH_HEIGHT * TEXT_SCALE + PAD;
    let swatch = GLYPH_HEIGHT * TEXT_SCALE;
    let text_x = PAD + swatch + PAD;
    // Wide enough for the longest line, up to MAX_LEGEND_WIDTH (longer lines are cut).
    let longest = lines
        .iter()
        .map(|(_, t)| text_x + text_width(t, TEXT_SCALE) + PAD)
        .max()
        .unwrap_or(0);
    let width = image
        .width()
        .max(MIN_DISPLAY_WIDTH)
        .max(longest.min(MAX_LEGEND_WIDTH));
    let legend_height = PAD + lines.len() as u32 * line_height;
    let mut out = RgbImage::from_pixel(width, image.height() + legend_height, Rgb([255, 255, 255]));
    imageops::replace(&mut out, image, 0, 0);
    for (i, (swatch_colour, text)) in lines.iter().enumerate() {
        let y = image.height() + PAD + i as u32 * line_height;
        if let Some(c) = swatch_colour {
            for dy in 0..swatch {
                for dx in 0..swatch {
                    out.put_pixel(PAD + dx, y + dy, *c);
                }
            }
        }
        let text = fit(text, width.saturating_sub(text_x + PAD), TEXT_SCALE);
        draw_text(&mut out, text_x, y, &text, TEXT_SCALE, Rgb([0, 0, 0]));
    }
    out
}

/// Panels side by side (top-aligned, white gaps), each with a caption line above it.
pub fn side_by_side(panels: &[(RgbImage, String)]) -> RgbImage {
    const GAP: u32 = 8;
    let caption = GLYPH_HEIGHT * TEXT_SCALE + 2 * PAD;
    let width = panels.iter().map(|(p, _)| p.width()).sum::<u32>()
        + GAP * panels.len().saturating_sub(1) as u32;
    let height = panels.iter().map(|(p, _)| p.height()).max().unwrap_or(0) + caption;
    let mut out = RgbImage::from_pixel(width.max(1), height.max(1), Rgb([255, 255, 255]));
    let mut x = 0;
    for (panel, title) in panels {
        let text = fit(title, panel.width().saturating_sub(PAD), TEXT_SCALE);
        draw_text(
            &mut out,
            x + PAD / 2,
            PAD,
            &text,
            TEXT_SCALE,
            Rgb([0, 0, 0]),
        );
        imageops::replace(&mut out, panel, i64::from(x), i64::from(caption));
        x += panel.width() + GAP;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{artifact_record, finalize_area};

    #[test]
    fn overlay_tints_masks_and_draws_a_legend() {
        let image = RgbImage::from_pixel(32, 16, Rgb([100, 100, 100]));
        let mut mask = Mask::zeros(16, 32);
        for r in 4..10 {
            for c in 4..12 {
                mask.set(r, c, true);
            }
        }
        let mut record = AnalysisRecord {
            image: "a.png".into(),
            width: 32,
            height: 16,
            explanation: "x".into(),
            text: "x".into(),
            finish_reason: "eos".into(),
            artifact_area: 0,
            artifact_ratio: 0.0,
            artifacts: vec![
                artifact_record(1, Some("hand".into()), None, &mask, 0.75, 0.5).unwrap(),
            ],
        };
        finalize_area(&mut record);
        let out = render_analysis_overlay(&image, &record);
        let scale = display_scale(32);
        assert_eq!(scale, 8);
        // The legend line "1. hand (48 px, score 0.75)" is wider than the 256 px image.
        assert_eq!(
            out.width(),
            PAD + 14 + PAD + text_width("1. hand (48 px, score 0.75)", 2) + PAD
        );
        assert!(out.height() > 16 * scale);
        // Interior pixel: tinted; boundary pixel: solid; outside: unchanged.
        let c = PALETTE[0];
        let mix = |v: u8, t: u8| (f32::from(v) * 0.55 + f32::from(t) * 0.45).round() as u8;
        assert_eq!(
            out.get_pixel(6 * scale, 6 * scale).0,
            [mix(100, c[0]), mix(100, c[1]), mix(100, c[2])]
        );
        assert_eq!(out.get_pixel(4 * scale, 4 * scale).0, c);
        assert_eq!(out.get_pixel(20 * scale, 2 * scale).0, [100, 100, 100]);
        // The legend has the swatch and black text pixels.
        let legend_y = 16 * scale + PAD;
        assert_eq!(out.get_pixel(PAD + 1, legend_y + 1).0, c);
        let text_pixels = (legend_y..out.height())
            .flat_map(|y| (0..out.width()).map(move |x| (x, y)))
            .filter(|&(x, y)| out.get_pixel(x, y).0 == [0, 0, 0])
            .count();
        assert!(text_pixels > 100, "{text_pixels} text pixels");
    }

    #[test]
    fn long_legend_text_is_cut() {
        let text = fit(&"x".repeat(200), 120, 2);
        assert!(
            text.ends_with("...") && text_width(&text, 2) <= 120,
            "{text}"
        );
    }
}
