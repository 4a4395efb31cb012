//! `<out>/metrics.jsonl`: one JSON object per line, appended as the run goes
//! (`{"train": ..}`, `{"validation": ..}`, `{"validation_metrics": ..}`, `{"evaluation": ..}`).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::TrainError;

/// The open metrics log of a run.
pub(crate) struct MetricsLog {
    file: std::fs::File,
    /// The log file.
    pub path: PathBuf,
}

impl MetricsLog {
    /// Opens `<out_dir>/metrics.jsonl` for appending a run that continues after step
    /// `from_step`. Entries an earlier session logged after that step (a run killed after its
    /// last checkpoint) are dropped first, atomically, so a resumed run logs each step once.
    pub(crate) fn open(out_dir: &Path, from_step: u64) -> Result<Self, TrainError> {
        let path = out_dir.join("metrics.jsonl");
        let io_error = |source: std::io::Error| TrainError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let kept = lines_up_to_step(&text, from_step);
                if kept.len() < text.len() {
                    tracing::info!(
                        path = %path.display(),
                        from_step,
                        "dropping metrics logged after the resumed step"
                    );
                    legion_data::fsutil::write_atomic(&path, kept.as_bytes()).map_err(io_error)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e)),
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error)?;
        Ok(Self { file, path })
    }

    /// Appends one line.
    pub(crate) fn write(&mut self, value: &serde_json::Value) -> Result<(), TrainError> {
        writeln!(self.file, "{value}").map_err(|source| TrainError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// The metrics log `text` up to (not including) its first entry for a step after `step`: every
/// entry is one JSON line `{"<kind>": {"step": N, ..}}`, in the order it was logged; a line
/// without a step (the final evaluation) belongs to the steps logged before it. A torn last
/// line (no newline) is dropped.
fn lines_up_to_step(text: &str, step: u64) -> &str {
    let mut end = 0;
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') {
            break;
        }
        let line_step = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.as_object()?.values().next()?.get("step")?.as_u64());
        if line_step.is_some_and(|s| s > step) {
            break;
        }
        end += line.len();
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_after_the_resumed_step_are_dropped() {
        let log = concat!(
            "{\"train\":{\"step\":1,\"loss\":2.0}}\n",
            "{\"train\":{\"step\":2,\"loss\":1.5}}\n",
            "{\"validation\":{\"step\":2,\"loss\":1.7}}\n",
            "{\"train\":{\"step\":3,\"loss\":1.2}}\n",
            "{\"evaluation\":{\"miou\":0.5}}\n",
        );
        let through_2 = &log[..log.find("{\"train\":{\"step\":3").unwrap()];
        assert_eq!(lines_up_to_step(log, 2), through_2);
        assert_eq!(lines_up_to_step(log, 0), "");
        assert_eq!(lines_up_to_step(log, 3), log);
        // A line torn by a kill is dropped.
        let torn = format!("{through_2}{{\"train\":{{\"st");
        assert_eq!(lines_up_to_step(&torn, 5), through_2);
    }
}
