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
pub mod synth;

pub mod batch;
pub mod check;
pub mod contour;
pub mod dataset;
pub mod folder;
pub mod image_io;
pub mod progress;

pub mod mask;
pub mod perturb;
pub mod preprocess;
pub mod raster;
pub mod resample;
pub mod rle;
mod simd;

pub use batch::{LegionBatch, LegionBatcher};
pub use dataset::{OpenOptions, Sample, SampleConfig, SynthScarsDataset, SynthScarsSplit};
pub use error::{BadInputPolicy, DataError, Location};
pub use labels::{ArtifactCategory, ContentType, ImageLabels, Labels};
pub use layout::SplitLayout;
pub use progress::{NoProgress, Progress};
pub use record::{ArtifactRef, Record};
pub use span::{Grounding, MissingPhrasePolicy};
