//! Overlay PNGs for inspecting the worst images: `image | GT | prediction` side by side, the
//! GT tinted green and the prediction tinted red over the image.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use legion_data::mask::Mask;

use crate::error::EvalError;
use crate::evaluate::load_image_masks;
use crate::ground_truth::GroundTruth;
use crate::predictions::{MaskFolder, image_stem};
use crate::report::Report;

const GT_TINT: [u8; 3] = [0, 200, 0];
const PREDICTION_TINT: [u8; 3] = [220, 0, 0];
/// Weight of the tint over the image pixel.
const TINT_ALPHA: f32 = 0.5;
/// White gap between panels, in pixels.
const GAP: u32 = 4;

fn tinted(image: &RgbImage, mask: &[u8], tint: [u8; 3]) -> RgbImage {
    let mut out = image.clone();
    for (pixel, &m) in out.pixels_mut().zip(mask) {
        if m != 0 {
            for (channel, &t) in pixel.0.iter_mut().zip(&tint) {
                *channel = (f32::from(*channel) * (1.0 - TINT_ALPHA) + f32::from(t) * TINT_ALPHA)
                    .round() as u8;
            }
        }
    }
    out
}

/// `image | GT | prediction` with the masks tinted. `gt` and `prediction` are row-major
/// `height x width` 0/1 masks of the image's size.
///
/// # Errors
/// [`EvalError::Invalid`] when a mask does not have the image's size.
pub fn render_overlay(
    image: &RgbImage,
    gt: &Mask,
    prediction: &[u8],
) -> Result<RgbImage, EvalError> {
    let (w, h) = image.dimensions();
    let pixels = (w as usize) * (h as usize);
    if (gt.height(), gt.width()) != (h as usize, w as usize) || prediction.len() != pixels {
        return Err(EvalError::Invalid(format!(
            "overlay: image is {h}x{w}, GT {}x{}, prediction {} pixels",
            gt.height(),
            gt.width(),
            prediction.len()
        )));
    }
    let panels = [
        image.clone(),
        tinted(image, gt.as_slice(), GT_TINT),
        tinted(image, prediction, PREDICTION_TINT),
    ];
    let mut out = RgbImage::from_pixel(3 * w + 2 * GAP, h, Rgb([255, 255, 255]));
    for (i, panel) in panels.iter().enumerate() {
        image::imageops::replace(&mut out, panel, i64::from(i as u32 * (w + GAP)), 0);
    }
    Ok(out)
}

/// Writes `<out_dir>/<rank>_<stem>.png` overlays for the report's `n` worst images.
/// Returns the written paths.
///
/// # Errors
/// Read errors naming the file, [`EvalError::Io`] when writing fails.
pub fn write_worst_overlays(
    report: &Report,
    gt: &GroundTruth,
    predictions: &MaskFolder,
    n: usize,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, EvalError> {
    let threshold = report
        .localization
        .as_ref()
        .map(|l| l.config.threshold)
        .unwrap_or(0.5);
    std::fs::create_dir_all(out_dir).map_err(|e| EvalError::io(out_dir, e))?;
    let mut written = Vec::new();
    for (rank, worst) in report.worst(n).into_iter().enumerate() {
        let Some(index) = gt.find(&worst.image) else {
            return Err(EvalError::Invalid(format!(
                "image `{}` of the report is not in the ground truth",
                worst.image
            )));
        };
        let record = &gt.records[index];
        let path = gt.image_path(record);
        let image =
            legion_data::image_io::decode_rgb(&path).map_err(|source| EvalError::Image {
                path: path.clone(),
                source,
            })?;
        let (gt_mask, prediction) = load_image_masks(gt, predictions, record, threshold)?;
        let prediction = prediction.unwrap_or_else(|| vec![0; gt_mask.as_slice().len()]);
        let overlay = render_overlay(&image, &gt_mask, &prediction)?;
        let out = out_dir.join(format!(
            "{:03}_{}.png",
            rank + 1,
            image_stem(&record.img_file_name)
        ));
        overlay.save(&out).map_err(|source| EvalError::ImageWrite {
            path: out.clone(),
            source: Box::new(source),
        })?;
        written.push(out);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_has_three_panels_and_tints_masks() {
        let image = RgbImage::from_pixel(2, 1, Rgb([100, 100, 100]));
        let gt = Mask::from_raw(1, 2, vec![1, 0]).unwrap();
        let out = render_overlay(&image, &gt, &[0, 1]).unwrap();
        assert_eq!(out.dimensions(), (3 * 2 + 2 * GAP, 1));
        assert_eq!(out.get_pixel(0, 0).0, [100, 100, 100]);
        let gt_x = 2 + GAP;
        assert_eq!(out.get_pixel(gt_x, 0).0, [50, 150, 50]);
        assert_eq!(out.get_pixel(gt_x + 1, 0).0, [100, 100, 100]);
        let pred_x = 2 * (2 + GAP);
        assert_eq!(out.get_pixel(pred_x + 1, 0).0, [160, 50, 50]);
        assert!(render_overlay(&image, &gt, &[0]).is_err());
    }
}
