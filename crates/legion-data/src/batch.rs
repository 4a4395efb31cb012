//! Batching samples into tensors for the model.
//!
//! Images are stacked; masks stay per sample because every image keeps its own size and
//! artifact count (the reference computes mask losses at each GT mask's original resolution).

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Device, Tensor, TensorData};

use crate::dataset::Sample;
use crate::mask::Mask;

/// A batch of samples on a device.
#[derive(Debug, Clone)]
pub struct LegionBatch {
    /// CLIP input, `[B, 3, S, S]` (S = 336 for the real model).
    pub clip_pixels: Tensor<4>,
    /// SAM input, `[B, 3, T, T]` (T = 1024), normalised and zero-padded bottom/right.
    pub sam_pixels: Tensor<4>,
    /// Size of the resized image inside the SAM canvas, per sample (height, width).
    pub sam_resized_hw: Vec<(usize, usize)>,
    /// Original image size per sample (height, width).
    pub original_hw: Vec<(usize, usize)>,
    /// Training masks per sample, `[N_i, H_i, W_i]` in `[SEG]` order (`None` when N_i = 0).
    pub masks: Vec<Option<Tensor<3>>>,
    /// Target answers with `<p> phrase </p> [SEG]` tags.
    pub answers: Vec<String>,
    /// Phrases per sample, in `[SEG]` order.
    pub phrases: Vec<Vec<String>>,
    /// Record ids.
    pub ids: Vec<String>,
}

/// Stacks [`Sample`]s into a [`LegionBatch`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LegionBatcher;

/// Masks of one sample as a `[N, H, W]` float tensor of 0/1, `None` when there are none.
///
/// # Panics
/// If the masks do not all have the same size (they come from one image).
pub fn masks_tensor(masks: &[Mask], device: &Device) -> Option<Tensor<3>> {
    let first = masks.first()?;
    let (h, w) = (first.height(), first.width());
    let mut data = Vec::with_capacity(masks.len() * h * w);
    for m in masks {
        assert_eq!(
            (m.height(), m.width()),
            (h, w),
            "masks of one sample share the image size"
        );
        data.extend(
            m.as_slice()
                .iter()
                .map(|&v| if v != 0 { 1.0f32 } else { 0.0 }),
        );
    }
    Some(Tensor::from_data(
        TensorData::new(data, [masks.len(), h, w]),
        device,
    ))
}

/// `[B, C, H, W]` tensor of `B` CHW images, copied once into the batch buffer (a SAM canvas is
/// 12 MB; per-image tensors and `Tensor::stack` would copy it twice more).
///
/// # Panics
/// If there are no images or their shapes differ.
fn stacked<'a>(
    images: impl ExactSizeIterator<Item = (&'a [f32], [usize; 3])>,
    device: &Device,
) -> Tensor<4> {
    let count = images.len();
    let mut images = images.peekable();
    let &(first, shape) = images.peek().expect("at least one image");
    let mut data = Vec::with_capacity(count * first.len());
    for (pixels, image_shape) in images {
        assert_eq!(image_shape, shape, "samples preprocessed with one config");
        data.extend_from_slice(pixels);
    }
    let [c, h, w] = shape;
    Tensor::from_data(TensorData::new(data, [count, c, h, w]), device)
}

impl Batcher<Sample, LegionBatch> for LegionBatcher {
    /// # Panics
    /// If `items` is empty or the samples were preprocessed with different configs.
    fn batch(&self, items: Vec<Sample>, device: &Device) -> LegionBatch {
        assert!(!items.is_empty(), "cannot batch zero samples");
        let clip = stacked(
            items.iter().map(|s| (&s.clip.pixels[..], s.clip.shape)),
            device,
        );
        let sam = stacked(
            items.iter().map(|s| (&s.sam.pixels[..], s.sam.shape)),
            device,
        );
        LegionBatch {
            clip_pixels: clip,
            sam_pixels: sam,
            sam_resized_hw: items
                .iter()
                .map(|s| (s.sam.resized_hw.0 as usize, s.sam.resized_hw.1 as usize))
                .collect(),
            original_hw: items.iter().map(|s| s.original_hw).collect(),
            masks: items
                .iter()
                .map(|s| masks_tensor(&s.masks, device))
                .collect(),
            answers: items.iter().map(|s| s.answer.clone()).collect(),
            phrases: items.iter().map(|s| s.phrases.clone()).collect(),
            ids: items.into_iter().map(|s| s.id).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use burn::tensor::Device;

    use super::*;
    use crate::dataset::{OpenOptions, SampleConfig, SynthScarsSplit};
    use crate::preprocess::{ClipPreprocessConfig, SamPreprocessConfig};

    #[test]
    fn batch_stacks_the_samples_pixels_in_order() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/synthscars-tiny");
        let split = SynthScarsSplit::open(&root, "test", &OpenOptions::default()).unwrap();
        let config = SampleConfig {
            clip: ClipPreprocessConfig::tiny(),
            sam: SamPreprocessConfig::tiny(),
        };
        let samples: Vec<Sample> = [2, 0, 5]
            .iter()
            .map(|&i| split.load(i, &config).unwrap())
            .collect();
        let device = Device::default();
        let batch = LegionBatcher.batch(samples.clone(), &device);
        assert_eq!(batch.clip_pixels.dims(), [3, 3, 28, 28]);
        assert_eq!(batch.sam_pixels.dims(), [3, 3, 32, 32]);
        let clip: Vec<f32> = samples.iter().flat_map(|s| s.clip.pixels.clone()).collect();
        let sam: Vec<f32> = samples.iter().flat_map(|s| s.sam.pixels.clone()).collect();
        assert_eq!(
            batch.clip_pixels.into_data().try_to_vec::<f32>().unwrap(),
            clip
        );
        assert_eq!(
            batch.sam_pixels.into_data().try_to_vec::<f32>().unwrap(),
            sam
        );
        let ids: Vec<&str> = samples.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(batch.ids, ids);
        assert_eq!(batch.masks.len(), 3);
    }
}
