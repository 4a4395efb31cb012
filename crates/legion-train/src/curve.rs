//! Loss curves from `metrics.jsonl`: `loss_curve.html` (self-contained SVG with axes, labels
//! and the validation points) and `loss_curve.png` (the same lines with axes, tick labels, axis
//! titles and a legend, drawn with a built-in 5x7 bitmap font so that no font file is needed).

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::TrainError;

/// One plotted series.
struct Series {
    name: &'static str,
    colour: [u8; 3],
    points: Vec<(f64, f64)>,
}

fn read_series(metrics: &Path) -> Result<Vec<Series>, TrainError> {
    let text = std::fs::read_to_string(metrics).map_err(|source| TrainError::Io {
        path: metrics.to_path_buf(),
        source,
    })?;
    let mut train = Vec::new();
    let mut val = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|source| TrainError::MetricsLine {
                path: metrics.to_path_buf(),
                line: line_no + 1,
                source,
            })?;
        let point = |v: &serde_json::Value| -> Option<(f64, f64)> {
            Some((v["step"].as_f64()?, v["loss"].as_f64()?))
        };
        if let Some(p) = point(&value["train"]).filter(|p| p.1.is_finite()) {
            // A resumed run re-logs nothing before its checkpoint; keep the last value per step.
            train.retain(|q: &(f64, f64)| q.0 < p.0);
            train.push(p);
        }
        if let Some(p) = point(&value["validation"]).filter(|p| p.1.is_finite()) {
            val.retain(|q: &(f64, f64)| q.0 < p.0);
            val.push(p);
        }
    }
    let window = (train.len() / 20).max(1);
    let smoothed: Vec<(f64, f64)> = (0..train.len())
        .map(|i| {
            let from = i.saturating_sub(window - 1);
            let mean = train[from..=i].iter().map(|p| p.1).sum::<f64>() / (i - from + 1) as f64;
            (train[i].0, mean)
        })
        .collect();
    Ok(vec![
        Series {
            name: "train loss",
            colour: [170, 190, 230],
            points: train,
        },
        Series {
            name: "train loss (moving mean)",
            colour: [30, 80, 200],
            points: smoothed,
        },
        Series {
            name: "validation loss",
            colour: [220, 80, 30],
            points: val,
        },
    ])
}

fn bounds(series: &[Series]) -> (f64, f64, f64, f64) {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return (0.0, 1.0, 0.0, 1.0);
    }
    let y0 = y0.min(0.0);
    (x0, x1.max(x0 + 1.0), y0, y1.max(y0 + 1e-9))
}

/// Writes `loss_curve.html` and `loss_curve.png` into `out_dir` from `metrics`.
///
/// # Errors
/// [`TrainError::Io`] when the log cannot be read or a file cannot be written.
pub fn write_curves(metrics: &Path, out_dir: &Path) -> Result<(), TrainError> {
    let series = read_series(metrics)?;
    let (x0, x1, y0, y1) = bounds(&series);
    let (w, h, pad) = (800.0, 420.0, 50.0);
    let sx = |x: f64| pad + (x - x0) / (x1 - x0) * (w - 2.0 * pad);
    let sy = |y: f64| h - pad - (y - y0) / (y1 - y0) * (h - 2.0 * pad);

    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\
         <rect width='100%' height='100%' fill='white'/>\
         <line x1='{pad}' y1='{b}' x2='{r}' y2='{b}' stroke='black'/>\
         <line x1='{pad}' y1='{pad}' x2='{pad}' y2='{b}' stroke='black'/>\
         <text x='{pad}' y='{t}'>{x0}</text><text x='{r}' y='{t}' text-anchor='end'>{x1} steps</text>\
         <text x='5' y='{b}'>{y0:.3}</text><text x='5' y='{pad}'>{y1:.3}</text>",
        b = h - pad,
        r = w - pad,
        t = h - pad + 18.0,
    );
    for (i, s) in series.iter().enumerate() {
        let [r, g, b] = s.colour;
        let colour = format!("rgb({r},{g},{b})");
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        if s.name == "validation loss" {
            for p in &s.points {
                svg.push_str(&format!(
                    "<circle cx='{:.1}' cy='{:.1}' r='3' fill='{colour}'/>",
                    sx(p.0),
                    sy(p.1)
                ));
            }
        }
        svg.push_str(&format!(
            "<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{}'/>\
             <text x='{}' y='{}' fill='{colour}'>{}</text>",
            points.join(" "),
            w - 230.0,
            pad + 16.0 * i as f64,
            s.name
        ));
    }
    svg.push_str("</svg>");
    let html = format!(
        "<!doctype html><html><head><meta charset='utf-8'><title>legion-rs loss curve</title></head>\
         <body><h1>Training loss</h1>{svg}<p>From <code>metrics.jsonl</code>.</p></body></html>"
    );
    let html_path = out_dir.join("loss_curve.html");
    std::fs::write(&html_path, html).map_err(|source| TrainError::Io {
        path: html_path.clone(),
        source,
    })?;

    let mut png = RgbImage::from_pixel(w as u32, h as u32, Rgb([255, 255, 255]));
    let axis = Rgb([0, 0, 0]);
    draw_line(&mut png, (pad, h - pad), (w - pad, h - pad), axis);
    draw_line(&mut png, (pad, pad), (pad, h - pad), axis);
    for x in ticks(x0, x1) {
        draw_line(&mut png, (sx(x), h - pad), (sx(x), h - pad + 4.0), axis);
        let label = format_tick(x);
        let width = text_width(&label);
        draw_text(&mut png, &label, sx(x) - width / 2.0, h - pad + 8.0, axis);
    }
    for y in ticks(y0, y1) {
        draw_line(&mut png, (pad - 4.0, sy(y)), (pad, sy(y)), axis);
        let label = format_tick(y);
        let width = text_width(&label);
        draw_text(
            &mut png,
            &label,
            pad - 6.0 - width,
            sy(y) - GLYPH_H / 2.0,
            axis,
        );
    }
    draw_text(
        &mut png,
        "step",
        w / 2.0 - text_width("step") / 2.0,
        h - 20.0,
        axis,
    );
    draw_text(&mut png, "loss", 4.0, 8.0, axis);
    for (i, s) in series.iter().enumerate() {
        for pair in s.points.windows(2) {
            let a = (sx(pair[0].0), sy(pair[0].1));
            let b = (sx(pair[1].0), sy(pair[1].1));
            draw_line(&mut png, a, b, Rgb(s.colour));
        }
        // Legend: a short thick line in the series colour, then its name.
        let (lx, ly) = (w - 340.0, pad + 4.0 + 20.0 * i as f64);
        for dy in 0..3 {
            let y = ly + GLYPH_H / 2.0 - 1.0 + f64::from(dy);
            draw_line(&mut png, (lx, y), (lx + 24.0, y), Rgb(s.colour));
        }
        draw_text(&mut png, s.name, lx + 32.0, ly, axis);
    }
    let png_path = out_dir.join("loss_curve.png");
    png.save(&png_path)
        .map_err(|source| TrainError::ImageWrite {
            path: png_path.clone(),
            source,
        })
}

/// About five round tick values (1, 2 or 5 times a power of ten apart) within `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 5.0;
    if !(raw.is_finite() && raw > 0.0) {
        return vec![lo];
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A tick label: integers as such, other values with up to 3 significant digits.
fn format_tick(v: f64) -> String {
    if v == v.round() && v.abs() < 1e7 {
        format!("{v:.0}")
    } else if v.abs() >= 0.01 {
        let decimals = (2 - v.abs().log10().floor() as i32).clamp(0, 4) as usize;
        let text = format!("{v:.decimals$}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.1e}")
    }
}

/// Glyph cell of the built-in font, pixels (5x7 glyphs drawn at 2x, one blank column after).
const GLYPH_W: f64 = 12.0;
const GLYPH_H: f64 = 14.0;

/// 5x7 bitmaps (one byte per row, the low 5 bits, most significant = leftmost) of the
/// characters the plot writes; others are drawn as a blank.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        'a' => [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'c' => [0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        'e' => [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'g' => [0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'i' => [0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'm' => [0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        'p' => [0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        'v' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04],
        _ => [0; 7],
    }
}

fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * GLYPH_W
}

/// Writes `text` with its top-left corner at `(x, y)`; pixels outside the image are skipped.
fn draw_text(img: &mut RgbImage, text: &str, x: f64, y: f64, colour: Rgb<u8>) {
    for (i, c) in text.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let px = x + i as f64 * GLYPH_W + (2 * col + dx) as f64;
                    let py = y + (2 * row + dy) as f64;
                    if px >= 0.0
                        && py >= 0.0
                        && (px as u32) < img.width()
                        && (py as u32) < img.height()
                    {
                        img.put_pixel(px as u32, py as u32, colour);
                    }
                }
            }
        }
    }
}

fn draw_line(img: &mut RgbImage, a: (f64, f64), b: (f64, f64), colour: Rgb<u8>) {
    let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let x = (a.0 + t * (b.0 - a.0)).round();
        let y = (a.1 + t * (b.1 - a.1)).round();
        if x >= 0.0 && y >= 0.0 && (x as u32) < img.width() && (y as u32) < img.height() {
            img.put_pixel(x as u32, y as u32, colour);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_are_drawn_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("metrics.jsonl");
        let mut text = String::new();
        for step in 1..=10 {
            text.push_str(&format!(
                "{{\"train\":{{\"step\":{step},\"loss\":{}}}}}\n",
                5.0 / step as f64
            ));
        }
        text.push_str("{\"validation\":{\"step\":10,\"loss\":0.7}}\n");
        std::fs::write(&log, text).unwrap();
        write_curves(&log, dir.path()).unwrap();
        let html = std::fs::read_to_string(dir.path().join("loss_curve.html")).unwrap();
        assert!(html.contains("polyline") && html.contains("circle"));
        let png = image::open(dir.path().join("loss_curve.png"))
            .unwrap()
            .to_rgb8();
        // The moving-mean line is drawn somewhere.
        assert!(png.pixels().any(|p| p.0 == [30, 80, 200]));
        // Tick labels: text below the x axis (y = 370) and left of the y axis (x = 50).
        let dark = |x0: u32, x1: u32, y0: u32, y1: u32| {
            (y0..y1)
                .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                .filter(|&(x, y)| png.get_pixel(x, y).0 == [0, 0, 0])
                .count()
        };
        assert!(dark(40, 760, 378, 394) > 100, "no x tick labels");
        assert!(dark(0, 44, 40, 380) > 100, "no y tick labels");
        // Legend: a swatch per series and the names written next to them in black.
        assert!(dark(492, 790, 50, 116) > 300, "no legend text");
        for colour in [[170, 190, 230], [30, 80, 200], [220, 80, 30]] {
            assert!(
                (460..485).any(|x| (50..115).any(|y| png.get_pixel(x, y).0 == colour)),
                "no legend swatch {colour:?}"
            );
        }
    }

    #[test]
    fn ticks_are_round_and_labels_short() {
        assert_eq!(ticks(0.0, 400.0), vec![0.0, 100.0, 200.0, 300.0, 400.0]);
        assert_eq!(ticks(0.0, 1.3), vec![0.0, 0.5, 1.0]);
        assert_eq!(format_tick(200.0), "200");
        assert_eq!(format_tick(0.25), "0.25");
        assert_eq!(format_tick(0.333_333), "0.333");
        assert_eq!(format_tick(0.0004), "4.0e-4");
    }

    #[test]
    fn text_is_drawn_from_the_glyph_bitmaps() {
        let mut img = RgbImage::from_pixel(30, 20, Rgb([255, 255, 255]));
        draw_text(&mut img, "1.", 1.0, 2.0, Rgb([0, 0, 0]));
        // '1' row 0 is 0b00100: one 2x2 dot at column 2 -> pixels x = 1 + 4..6, y = 2..4.
        let black = |x, y| img.get_pixel(x, y).0 == [0, 0, 0];
        assert!(black(5, 2) && black(6, 3) && !black(4, 2) && !black(7, 2));
        // '.' is the second cell (x from 13): rows 5-6 have columns 1-2 set.
        assert!(black(13 + 2, 2 + 10) && black(13 + 5, 2 + 13) && !black(13 + 2, 2));
        let drawn = img.pixels().filter(|p| p.0 == [0, 0, 0]).count();
        let bits: u32 = glyph('1')
            .iter()
            .chain(&glyph('.'))
            .map(|b| b.count_ones())
            .sum();
        assert_eq!(drawn as u32, 4 * bits);
    }
}
