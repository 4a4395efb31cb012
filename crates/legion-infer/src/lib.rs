//! Running LEGION on images, and LEGION as a controller for image refinement.
//!
//! - [`analyze`]: a model bundle ([`legion_model::bundle`]) on images -> [`record`]s (the
//!   explanation, each artifact's phrase, explanation, scores and mask as COCO RLE and
//!   polygons), [`overlay`] PNGs with a legend, and self-contained [`html`] reports.
//! - [`infer`]: batched, resumable inference over a dataset, written in the evaluator's input
//!   format so `legion eval` scores it.
//! - [`detect`]: image-level real/fake scores of `LegionForCls`.
//! - [`refine`]: detect -> prompt -> repaint ([`generator`]: the built-in [`inpaint`]er, a
//!   command template or an HTTP endpoint) -> detect again, every round recorded.
//! - [`regenerate`]: text-to-image -> LEGION's reflection -> rewritten prompt -> generate
//!   again (external text-to-image model and rewriter, or the built-in rule rewriter).
//!
//! ```text
//! legion analyze IMAGE... --checkpoint runs/tiny/final --out analysis/ --html analysis/report.html
//! legion infer --data data/synthscars-tiny --checkpoint runs/tiny/final --out pred/
//! legion refine IMAGE --checkpoint runs/tiny/final --out refine/ --rounds 3
//! legion regenerate --prompt "a dog on a beach" --t2i-cmd 'python sd35.py --prompt {prompt} --out {out}' --checkpoint C
//! cargo test -p legion-infer
//! ```

pub mod analyze;
pub mod detect;
pub mod error;
pub mod font;
pub mod generator;
pub mod html;
pub mod http;
pub mod infer;
pub mod inpaint;
pub mod input;
pub mod overlay;
pub mod record;
pub mod refine;
pub mod regenerate;
pub mod shard;
pub mod testing;

pub use analyze::Analyzer;
pub use error::InferError;
pub use record::{AnalysisRecord, ArtifactRecord};
