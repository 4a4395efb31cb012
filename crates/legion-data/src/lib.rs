//! SynthScars data for legion-rs.
//!
//! Reads the official SynthScars release (`{train,test}/annotations/{train,test}.json` plus
//! `images/`) exactly as the LEGION reference loader does, rasterises polygons pixel-for-pixel
//! like pycocotools, preprocesses images for the CLIP and SAM encoders like the reference
//! processors, and serves model-ready batches through burn's `Dataset`/`Batcher`.
//!
//! ```text
//! legion data check data/synthscars-tiny
//! ```

pub mod mask;
pub mod rle;
pub mod raster;
pub mod image_io;
pub mod resample;
pub mod preprocess;
