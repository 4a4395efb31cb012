//! Sharded batch inference: `legion infer --shard K/N` runs part `K` of `N` (0-based) of a
//! dataset, so that independent processes (a Slurm job array, the ranks of `mpirun`) share it;
//! [`merge_shards`] then assembles the shards' outputs into exactly the folder one unsharded
//! run writes, which `legion eval` scores as usual.
//!
//! ```text
//! <out>/shards/K-of-N/  masks/  records/  explanations.jsonl   one shard (resumable alone)
//! <out>/masks/ <out>/records/ <out>/explanations.jsonl         after the merge
//! ```
//!
//! The partition is a pure function of the sorted image list, the batch size and `N`: the
//! images are cut into the batches an unsharded run would make, and batch `b` goes to shard
//! `b mod N`. Every image is therefore analysed in the same batch as unsharded, so the merged
//! predictions are the unsharded ones exactly, not merely up to float summation order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::analyze::{file_name, file_stem};
use crate::error::InferError;
use crate::infer::{EXPLANATIONS_FILE, ExplanationLine, MASKS_DIR, RECORDS_DIR};
use legion_data::perturb::{PREDICTIONS_META_FILE, PredictionsMeta};

/// Part `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which part, `0..count`.
    pub index: usize,
    /// Parts in all.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `K/N` with `0 <= K < N`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}`: expected K/N with 0 <= K < N (e.g. 0/4)");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let index = k.trim().parse::<usize>().map_err(|_| bad())?;
        let count = n.trim().parse::<usize>().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// This shard's images of `images` (the unsharded list, in order), given the unsharded
    /// run's `batch_size`: whole batches, batch `b` to shard `b mod count`.
    pub fn select(&self, images: &[PathBuf], batch_size: usize) -> Vec<PathBuf> {
        let batch_size = batch_size.max(1);
        images
            .iter()
            .enumerate()
            .filter(|(i, _)| (i / batch_size) % self.count == self.index)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// The shard's own output folder under `out`.
    pub fn dir(&self, out: &Path) -> PathBuf {
        out.join("shards")
            .join(format!("{}-of-{}", self.index, self.count))
    }
}

/// What [`merge_shards`] assembled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergeSummary {
    /// Images of the dataset.
    pub total: usize,
    /// Images with a prediction in some shard (copied into the merged folder).
    pub merged: usize,
    /// Images no shard has a prediction for (failed or not run yet).
    pub missing: Vec<PathBuf>,
}

/// The complete lines of a shard's `explanations.jsonl` whose mask exists, by image name.
fn shard_lines(dir: &Path) -> Result<HashMap<String, ExplanationLine>, InferError> {
    let path = dir.join(EXPLANATIONS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(InferError::io(&path, e)),
    };
    let mut lines = HashMap::new();
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') {
            continue; // torn by a kill: that image is not done
        }
        let Ok(parsed) = serde_json::from_str::<ExplanationLine>(line.trim_end()) else {
            continue;
        };
        let mask = dir
            .join(MASKS_DIR)
            .join(format!("{}.png", file_stem(Path::new(&parsed.image))));
        if mask.is_file() {
            lines.insert(parsed.image.clone(), parsed);
        }
    }
    Ok(lines)
}

fn copy(from: &Path, to: &Path) -> Result<(), InferError> {
    let tmp = to.with_extension("merge.tmp");
    std::fs::copy(from, &tmp).map_err(|e| InferError::io(from, e))?;
    std::fs::rename(&tmp, to).map_err(|e| InferError::io(to, e))
}

/// Assembles the `count` shards under `<out>/shards/` into `<out>/masks`, `<out>/records` and
/// `<out>/explanations.jsonl` (replaced), in the order of `images` (the unsharded list): the
/// folder an unsharded run writes. Images no shard has done are listed, not an error.
///
/// # Errors
/// [`InferError::Io`] when a file cannot be read or written; [`InferError::Config`] when two
/// shards both hold an image (shards of different runs mixed in one folder).
pub fn merge_shards(
    images: &[PathBuf],
    out: &Path,
    count: usize,
) -> Result<MergeSummary, InferError> {
    let mut found: HashMap<String, (ExplanationLine, PathBuf)> = HashMap::new();
    // How the shards fed their images (`infer.json`: the perturbation): one run, one answer.
    let mut meta: Option<(PredictionsMeta, PathBuf)> = None;
    for index in 0..count {
        let dir = Shard { index, count }.dir(out);
        if let Some(shard_meta) = PredictionsMeta::read_from(&dir)? {
            match &meta {
                Some((first, first_dir)) if first.perturbation != shard_meta.perturbation => {
                    return Err(InferError::Config(format!(
                        "the shards {} and {} were run with different perturbations ({} and {})",
                        first_dir.display(),
                        dir.display(),
                        first.perturbation.spec,
                        shard_meta.perturbation.spec
                    )));
                }
                Some(_) => {}
                None => meta = Some((shard_meta, dir.clone())),
            }
        }
        for (name, line) in shard_lines(&dir)? {
            if let Some((_, other)) = found.insert(name.clone(), (line, dir.clone())) {
                return Err(InferError::Config(format!(
                    "{name} is in two shards ({} and {}): the shards of {} come from \
                     different runs",
                    other.display(),
                    dir.display(),
                    out.display()
                )));
            }
        }
    }
    for sub in [MASKS_DIR, RECORDS_DIR] {
        let dir = out.join(sub);
        std::fs::create_dir_all(&dir).map_err(|e| InferError::io(&dir, e))?;
    }
    let mut summary = MergeSummary {
        total: images.len(),
        ..MergeSummary::default()
    };
    let mut explanations = String::new();
    for image in images {
        let Some((line, dir)) = found.get(&file_name(image)) else {
            summary.missing.push(image.clone());
            continue;
        };
        let stem = file_stem(image);
        let mask = format!("{stem}.png");
        copy(
            &dir.join(MASKS_DIR).join(&mask),
            &out.join(MASKS_DIR).join(&mask),
        )?;
        let record = format!("{stem}.json");
        let record_path = dir.join(RECORDS_DIR).join(&record);
        if record_path.is_file() {
            copy(&record_path, &out.join(RECORDS_DIR).join(&record))?;
        }
        explanations.push_str(&serde_json::to_string(line).expect("plain strings serialise"));
        explanations.push('\n');
        summary.merged += 1;
    }
    if let Some((_, dir)) = &meta {
        copy(
            &dir.join(PREDICTIONS_META_FILE),
            &out.join(PREDICTIONS_META_FILE),
        )?;
    }
    let path = out.join(EXPLANATIONS_FILE);
    let tmp = path.with_extension("merge.tmp");
    std::fs::write(&tmp, explanations).map_err(|e| InferError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| InferError::io(&path, e))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition_whole_batches() {
        assert_eq!("1/3".parse::<Shard>(), Ok(Shard { index: 1, count: 3 }));
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let images: Vec<PathBuf> = (0..10).map(|i| PathBuf::from(format!("{i}.png"))).collect();
        let parts: Vec<Vec<PathBuf>> = (0..3)
            .map(|index| Shard { index, count: 3 }.select(&images, 2))
            .collect();
        let names = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&parts[0]), ["0.png", "1.png", "6.png", "7.png"]);
        assert_eq!(names(&parts[1]), ["2.png", "3.png", "8.png", "9.png"]);
        assert_eq!(names(&parts[2]), ["4.png", "5.png"]);
    }

    #[test]
    fn merging_keeps_the_unsharded_order_and_lists_the_missing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let images: Vec<PathBuf> = ["a.png", "b.png", "c.png"]
            .iter()
            .map(PathBuf::from)
            .collect();
        for (index, names) in [(0, vec!["a.png", "c.png"]), (1, vec![])] {
            let shard = Shard { index, count: 2 }.dir(out);
            std::fs::create_dir_all(shard.join(MASKS_DIR)).unwrap();
            let mut lines = String::new();
            for name in names.iter().rev() {
                let stem = name.trim_end_matches(".png");
                std::fs::write(shard.join(MASKS_DIR).join(format!("{stem}.png")), name).unwrap();
                lines.push_str(&format!(
                    "{{\"image\":\"{name}\",\"explanation\":\"{stem}\"}}\n"
                ));
            }
            std::fs::write(shard.join(EXPLANATIONS_FILE), lines).unwrap();
        }
        let summary = merge_shards(&images, out, 2).unwrap();
        assert_eq!(summary.merged, 2);
        assert_eq!(summary.missing, vec![PathBuf::from("b.png")]);
        let merged = std::fs::read_to_string(out.join(EXPLANATIONS_FILE)).unwrap();
        assert!(merged.find("a.png").unwrap() < merged.find("c.png").unwrap());
        assert_eq!(
            std::fs::read_to_string(out.join(MASKS_DIR).join("c.png")).unwrap(),
            "c.png"
        );
    }
}
