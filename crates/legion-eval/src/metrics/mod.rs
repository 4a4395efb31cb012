//! Metric definitions, each named after exactly what it computes.
//!
//! - [`localization`]: the LEGION paper's mIoU/F1 (and their dataset-accumulated variants),
//!   LISA/GLaMM gIoU/cIoU.
//! - [`trufor`]: a TruFor-style per-forged-image F1 (NOT what the LEGION tables use).

pub mod localization;
pub mod trufor;
