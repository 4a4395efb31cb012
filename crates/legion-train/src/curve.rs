//! Loss curves from `metrics.jsonl`: `loss_curve.html` (self-contained SVG with axes, labels
//! and the validation points) and `loss_curve.png` (the same lines, no text).

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
        let value: serde_json::Value = serde_json::from_str(line).map_err(|source| TrainError::MetricsLine {
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
    for s in &series {
        for pair in s.points.windows(2) {
            let a = (sx(pair[0].0), sy(pair[0].1));
            let b = (sx(pair[1].0), sy(pair[1].1));
            draw_line(&mut png, a, b, Rgb(s.colour));
        }
    }
    let png_path = out_dir.join("loss_curve.png");
    png.save(&png_path).map_err(|source| TrainError::ImageWrite {
        path: png_path.clone(),
        source,
    })
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
    }
}
