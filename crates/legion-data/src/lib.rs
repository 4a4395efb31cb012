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

pub mod error;
pub mod fsutil;
pub mod labels;
pub mod layout;
pub mod record;
pub mod span;

pub mod image_io;
pub mod mask;
pub mod preprocess;
pub mod raster;
pub mod resample;
pub mod rle;

pub use error::{BadInputPolicy, DataError, Location};
pub use labels::{ArtifactCategory, ContentType, ImageLabels, Labels};
pub use layout::SplitLayout;
pub use record::{ArtifactRef, Record};
pub use span::{Grounding, MissingPhrasePolicy};
