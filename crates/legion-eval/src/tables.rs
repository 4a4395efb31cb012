//! Tables in the LEGION paper's layout, rendered as terminal text, Markdown, CSV, LaTeX or
//! JSON, with one row per method ([`merge_tables`]) and optionally the published numbers.
//!
//! Cells are x100 (percent), 2 decimals. Localization cells are the per-image means (the
//! paper's convention) unless [`LocalizationVariant::Accumulated`] is asked for, in which case
//! published rows are left out (they would not be comparable).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::localization::LocalizationSummary;
use crate::report::{Report, csv_field};

/// Which table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableKind {
    /// mIoU/F1 per content type and overall (paper: SynthScars localization table).
    Localization,
    /// mIoU/F1 per artifact category and overall.
    Categories,
    /// ROUGE-L/CSS (paper: explanation table).
    Explanation,
    /// Detection accuracy per generator group (paper: UniversalFakeDetect table).
    Detection,
    /// Overall mIoU/F1 with one row per report, each labelled by the perturbation its
    /// predictions were made under (paper: robustness table, Table 10), with the change from the
    /// same method's clean row.
    Robustness,
}

/// Which localization numbers fill the cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LocalizationVariant {
    /// Per-image mean (the paper's convention).
    #[default]
    PerImage,
    /// Counts accumulated over the dataset.
    Accumulated,
}

/// Options of [`merge_tables_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableOptions {
    pub kind: TableKind,
    pub variant: LocalizationVariant,
    /// Append the paper's published rows.
    pub with_published: bool,
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            kind: TableKind::Localization,
            variant: LocalizationVariant::PerImage,
            with_published: false,
        }
    }
}

/// One row: a method and its cells (x100), `None` where not available.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRow {
    pub label: String,
    pub cells: Vec<Option<f64>>,
    /// Whether the row is the paper's published numbers.
    pub published: bool,
}

/// A rendered-agnostic table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<TableRow>,
    /// Footnotes (metric variant, encoder, sources).
    pub notes: Vec<String>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableFormat {
    Text,
    Markdown,
    Csv,
    Latex,
    Json,
}

/// The LEGION paper's published numbers (arXiv 2503.15264, ICCV 2025), as summarised in the
/// project's `reference/LEGION.md`: SynthScars localization (mIoU / F1) per content type and
/// on LOKI and RichHF-18K.
pub const PUBLISHED_LOCALIZATION: &[(&str, [(f64, f64); 6])] = &[
    (
        "HiFi-Net",
        [
            (43.74, 0.45),
            (45.28, 0.03),
            (46.21, 0.84),
            (45.90, 0.04),
            (39.60, 2.41),
            (44.96, 0.39),
        ],
    ),
    (
        "TruFor",
        [
            (46.99, 14.82),
            (48.45, 17.57),
            (49.02, 15.43),
            (48.93, 12.64),
            (46.55, 16.70),
            (48.41, 18.03),
        ],
    ),
    (
        "PAL4VST",
        [
            (50.46, 19.25),
            (52.55, 21.61),
            (59.18, 35.70),
            (52.55, 19.14),
            (47.34, 11.58),
            (49.88, 14.78),
        ],
    ),
    (
        "LISA-v1-7B",
        [
            (35.49, 23.70),
            (32.44, 18.77),
            (34.11, 17.50),
            (37.56, 18.31),
            (31.10, 9.29),
            (35.90, 21.94),
        ],
    ),
    (
        "InternVL2-8B",
        [
            (41.08, 13.36),
            (41.22, 7.83),
            (41.21, 3.91),
            (41.68, 7.55),
            (42.03, 10.06),
            (39.90, 9.58),
        ],
    ),
    (
        "LEGION",
        [
            (54.62, 29.90),
            (54.52, 27.43),
            (60.82, 39.44),
            (53.67, 24.51),
            (48.66, 16.71),
            (50.07, 17.41),
        ],
    ),
];

/// Column groups of [`PUBLISHED_LOCALIZATION`], in order.
pub const PUBLISHED_LOCALIZATION_COLUMNS: [&str; 6] =
    ["Object", "Animal", "Human", "Scene", "LOKI", "RichHF-18K"];

/// Published explanation numbers: (method, SynthScars ROUGE-L, CSS, LOKI ROUGE-L, CSS).
pub const PUBLISHED_EXPLANATION: &[(&str, f64, f64, f64, f64)] = &[
    ("LLaVA-v1.6-7B", 29.61, 61.75, 16.07, 41.07),
    ("LEGION", 39.50, 72.60, 18.55, 45.96),
];

/// Published UniversalFakeDetect accuracies of LEGION, per generator group.
pub const PUBLISHED_DETECTION: &[(&str, &[(&str, f64)])] = &[(
    "LEGION",
    &[
        ("GANs", 97.01),
        ("Deepfakes", 63.37),
        ("CRN", 90.78),
        ("IMLE", 98.93),
        ("SITD", 79.44),
        ("SAN", 57.76),
        ("Diffusion", 83.10),
    ],
)];

const SOURCE_NOTE: &str =
    "Published rows: LEGION paper (arXiv 2503.15264), as transcribed in reference/LEGION.md.";

fn localization_cells(
    out: &mut BTreeMap<String, f64>,
    group: &str,
    s: &LocalizationSummary,
    variant: LocalizationVariant,
) {
    let (miou, f1) = match variant {
        LocalizationVariant::PerImage => (s.miou_per_image, s.f1_per_image),
        LocalizationVariant::Accumulated => (s.miou_accumulated, s.f1_accumulated),
    };
    out.insert(format!("{group} mIoU"), miou * 100.0);
    out.insert(format!("{group} F1"), f1 * 100.0);
}

/// The cells of one report for a table kind, keyed by column name.
fn report_cells(report: &Report, options: &TableOptions) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    match options.kind {
        TableKind::Localization | TableKind::Categories => {
            if let Some(loc) = &report.localization {
                let groups = if options.kind == TableKind::Localization {
                    &loc.by_content_type
                } else {
                    &loc.by_category
                };
                for g in groups {
                    localization_cells(&mut out, &g.group, &g.summary, options.variant);
                }
                localization_cells(&mut out, "Overall", &loc.overall, options.variant);
            }
        }
        TableKind::Explanation => {
            if let Some(ex) = &report.explanation {
                out.insert("ROUGE-L".into(), ex.overall.rouge_l * 100.0);
                if let Some(css) = ex.overall.css {
                    out.insert("CSS".into(), css * 100.0);
                }
            }
        }
        TableKind::Robustness => {
            if let Some(loc) = &report.localization {
                let (miou, f1) = match options.variant {
                    LocalizationVariant::PerImage => {
                        (loc.overall.miou_per_image, loc.overall.f1_per_image)
                    }
                    LocalizationVariant::Accumulated => {
                        (loc.overall.miou_accumulated, loc.overall.f1_accumulated)
                    }
                };
                out.insert(ROBUSTNESS_MIOU.into(), miou * 100.0);
                out.insert(ROBUSTNESS_F1.into(), f1 * 100.0);
            }
        }
        TableKind::Detection => {
            if let Some(det) = &report.detection {
                for (g, s) in &det.by_group {
                    out.insert(g.clone(), s.accuracy * 100.0);
                }
                if let Some(mean) = det.mean_group_accuracy {
                    out.insert("Mean".into(), mean * 100.0);
                }
                out.insert("Overall".into(), det.overall.accuracy * 100.0);
            }
        }
    }
    out
}

fn published_rows(options: &TableOptions) -> Vec<(String, BTreeMap<String, f64>)> {
    let mut rows = Vec::new();
    match options.kind {
        TableKind::Localization if options.variant == LocalizationVariant::PerImage => {
            for (method, values) in PUBLISHED_LOCALIZATION {
                let mut cells = BTreeMap::new();
                for (column, (miou, f1)) in PUBLISHED_LOCALIZATION_COLUMNS.iter().zip(values) {
                    cells.insert(format!("{column} mIoU"), *miou);
                    cells.insert(format!("{column} F1"), *f1);
                }
                rows.push((format!("{method} (paper)"), cells));
            }
        }
        TableKind::Explanation => {
            for (method, rouge, css, loki_rouge, loki_css) in PUBLISHED_EXPLANATION {
                let cells = BTreeMap::from([
                    ("ROUGE-L".to_string(), *rouge),
                    ("CSS".to_string(), *css),
                    ("LOKI ROUGE-L".to_string(), *loki_rouge),
                    ("LOKI CSS".to_string(), *loki_css),
                ]);
                rows.push((format!("{method} (paper)"), cells));
            }
        }
        TableKind::Detection => {
            for (method, groups) in PUBLISHED_DETECTION {
                let cells = groups.iter().map(|(g, v)| (g.to_string(), *v)).collect();
                rows.push((format!("{method} (paper)"), cells));
            }
        }
        _ => {}
    }
    rows
}

/// Column order of a kind: the paper's order first, then others sorted, then summary columns.
fn column_rank(kind: TableKind, column: &str) -> (usize, String) {
    let group = column
        .strip_suffix(" mIoU")
        .or_else(|| column.strip_suffix(" F1"))
        .unwrap_or(column);
    let order: &[&str] = match kind {
        TableKind::Localization => &["Object", "Animal", "Human", "Scene", "LOKI", "RichHF-18K"],
        TableKind::Categories => &["Physics", "Structure", "Distortion"],
        TableKind::Explanation => &["ROUGE-L", "CSS", "LOKI ROUGE-L", "LOKI CSS"],
        TableKind::Robustness => &[
            ROBUSTNESS_MIOU,
            ROBUSTNESS_F1,
            ROBUSTNESS_MIOU_CHANGE,
            ROBUSTNESS_F1_CHANGE,
        ],
        TableKind::Detection => &[
            "GANs",
            "Deepfakes",
            "CRN",
            "IMLE",
            "SITD",
            "SAN",
            "Diffusion",
        ],
    };
    let metric = usize::from(column.ends_with(" F1"));
    let rank = match (order.iter().position(|g| *g == group), group) {
        (Some(i), _) => i * 2 + metric,
        (None, "Mean") => 10_000,
        (None, "Overall") => 10_002 + metric,
        (None, _) => 1_000,
    };
    (rank, column.to_string())
}

const ROBUSTNESS_MIOU: &str = "mIoU";
const ROBUSTNESS_F1: &str = "F1";
const ROBUSTNESS_MIOU_CHANGE: &str = "mIoU vs clean";
const ROBUSTNESS_F1_CHANGE: &str = "F1 vs clean";

/// The perturbation column text of a report: `clean`, the spec, or `not recorded`.
fn perturbation_label(report: &Report) -> String {
    match &report.perturbation {
        Some(p) if p.is_clean() => "clean".into(),
        Some(p) => match p.seed {
            Some(seed) => format!("{} seed={seed}", p.spec),
            None => p.spec.clone(),
        },
        None => "perturbation not recorded".into(),
    }
}

/// Adds the change from the same method's clean row to every row of the robustness table, and
/// the notes that say what each perturbation is.
fn robustness_rows(
    reports: &[Report],
    rows: &mut [(String, BTreeMap<String, f64>, bool)],
    notes: &mut Vec<String>,
) {
    let clean: BTreeMap<&str, usize> = reports
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, r)| r.perturbation.as_ref().is_some_and(|p| p.is_clean()))
        .map(|(i, r)| (r.method.as_str(), i))
        .collect();
    let clean_cells: Vec<Option<BTreeMap<String, f64>>> = reports
        .iter()
        .map(|r| clean.get(r.method.as_str()).map(|&i| rows[i].1.clone()))
        .collect();
    for (((label, cells, _), report), base) in rows.iter_mut().zip(reports).zip(clean_cells) {
        *label = format!("{} ({})", report.method, perturbation_label(report));
        if let Some(base) = base {
            for (metric, change) in [
                (ROBUSTNESS_MIOU, ROBUSTNESS_MIOU_CHANGE),
                (ROBUSTNESS_F1, ROBUSTNESS_F1_CHANGE),
            ] {
                if let (Some(v), Some(b)) = (cells.get(metric), base.get(metric)) {
                    let delta = v - b;
                    cells.insert(change.into(), delta);
                }
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in reports.iter().filter_map(|r| r.perturbation.as_ref()) {
        if !p.is_clean() && seen.insert(p.spec.clone()) {
            notes.push(format!("{}: {}.", p.spec, p.description));
        }
    }
    notes.push(
        "vs clean = the row minus the same method's clean row (x100 points); empty without a clean \
         report of that method."
            .into(),
    );
    if reports.iter().any(|r| r.perturbation.is_none()) {
        notes.push(
            "\"perturbation not recorded\": the predictions have no infer.json (not written by \
             `legion infer`); such a row is never used as the clean baseline."
                .into(),
        );
    }
    let data: std::collections::BTreeSet<(String, &str)> = reports
        .iter()
        .map(|r| (r.dataset.display().to_string(), r.split.as_str()))
        .collect();
    if data.len() > 1 {
        notes.push(format!(
            "WARNING: the reports score different data: {}.",
            data.iter()
                .map(|(d, s)| format!("{d} ({s})"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}

/// One row per report plus optional published rows.
pub fn merge_tables_with(reports: &[Report], options: &TableOptions) -> Table {
    let mut rows: Vec<(String, BTreeMap<String, f64>, bool)> = reports
        .iter()
        .map(|r| (r.method.clone(), report_cells(r, options), false))
        .collect();
    let mut notes = Vec::new();
    if options.kind == TableKind::Robustness {
        robustness_rows(reports, &mut rows, &mut notes);
    }
    if options.with_published {
        let published = published_rows(options);
        if published.is_empty() {
            notes.push("No published numbers exist for this table/variant; none shown.".into());
        } else {
            notes.push(SOURCE_NOTE.into());
        }
        rows.extend(published.into_iter().map(|(l, c)| (l, c, true)));
    }
    let mut columns: Vec<String> = rows
        .iter()
        .flat_map(|(_, c, _)| c.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    columns.sort_by_key(|c| column_rank(options.kind, c));

    let title = match options.kind {
        TableKind::Localization => "Artifact localization (mIoU / F1, x100)",
        TableKind::Categories => "Artifact localization per artifact category (mIoU / F1, x100)",
        TableKind::Explanation => "Artifact explanation (ROUGE-L / CSS, x100)",
        TableKind::Detection => "Detection accuracy (x100)",
        TableKind::Robustness => {
            "Robustness: artifact localization under image perturbations (mIoU / F1, x100)"
        }
    };
    match options.kind {
        TableKind::Localization | TableKind::Categories | TableKind::Robustness => notes.push(match options.variant {
            LocalizationVariant::PerImage => "mIoU = mean(background IoU, artifact IoU), F1 = artifact-pixel F1; per-image mean (LEGION evaluate_ours.py convention).".into(),
            LocalizationVariant::Accumulated => "mIoU/F1 from pixel counts accumulated over the dataset (NOT the paper's convention).".into(),
        }),
        TableKind::Explanation => {
            for r in reports {
                if let Some(ex) = &r.explanation {
                    notes.push(format!(
                        "{}: CSS encoder {}",
                        r.method,
                        ex.encoder.as_deref().unwrap_or("none (CSS unavailable)")
                    ));
                }
            }
        }
        TableKind::Detection => notes.push("Labels real=1, fake=0; accuracy at the report's threshold; Mean = mean over groups.".into()),
    }
    if options.kind == TableKind::Categories {
        notes.push(format!(
            "Per category: {}.",
            crate::evaluate::CATEGORY_DEFINITION
        ));
    }
    Table {
        title: title.into(),
        rows: rows
            .into_iter()
            .map(|(label, cells, published)| TableRow {
                cells: columns.iter().map(|c| cells.get(c).copied()).collect(),
                label,
                published,
            })
            .collect(),
        columns,
        notes,
    }
}

/// The localization table (paper layout, per-image means) with one row per report.
pub fn merge_tables(reports: &[Report]) -> Table {
    merge_tables_with(reports, &TableOptions::default())
}

/// One report's table of a kind.
pub fn report_table(report: &Report, kind: TableKind) -> Table {
    merge_tables_with(
        std::slice::from_ref(report),
        &TableOptions {
            kind,
            ..TableOptions::default()
        },
    )
}

fn cell_text(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
}

fn latex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            '\\' => out.push_str("\\textbackslash{}"),
            _ => out.push(c),
        }
    }
    out
}

impl Table {
    /// Renders the table.
    pub fn render(&self, format: TableFormat) -> String {
        match format {
            TableFormat::Text => self.to_text(),
            TableFormat::Markdown => self.to_markdown(),
            TableFormat::Csv => self.to_csv(),
            TableFormat::Latex => self.to_latex(),
            TableFormat::Json => {
                serde_json::to_string_pretty(self).expect("a table holds only plain JSON values")
            }
        }
    }

    fn grid(&self) -> Vec<Vec<String>> {
        let mut grid = vec![
            std::iter::once("method".to_string())
                .chain(self.columns.iter().cloned())
                .collect::<Vec<_>>(),
        ];
        for row in &self.rows {
            grid.push(
                std::iter::once(row.label.clone())
                    .chain(row.cells.iter().map(|&v| cell_text(v)))
                    .collect(),
            );
        }
        grid
    }

    /// Aligned plain text for terminals.
    pub fn to_text(&self) -> String {
        let grid = self.grid();
        let widths: Vec<usize> = (0..grid[0].len())
            .map(|c| grid.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!("{}\n", self.title);
        for (i, row) in grid.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, v)| {
                    if c == 0 {
                        format!("{v:<w$}", w = widths[c])
                    } else {
                        format!("{v:>w$}", w = widths[c])
                    }
                })
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
            if i == 0 {
                out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
                out.push('\n');
            }
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }

    /// A GitHub-flavoured Markdown table.
    pub fn to_markdown(&self) -> String {
        let grid = self.grid();
        let mut out = format!("**{}**\n\n", self.title);
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | ").replace('\n', " "));
        out.push_str(&line(&grid[0]));
        out.push_str(&format!(
            "|{}|\n",
            std::iter::once("---".to_string())
                .chain(self.columns.iter().map(|_| "---:".to_string()))
                .collect::<Vec<_>>()
                .join("|")
        ));
        for row in &grid[1..] {
            out.push_str(&line(row));
        }
        for n in &self.notes {
            out.push_str(&format!("\n_{n}_\n"));
        }
        out
    }

    /// CSV with a header row; empty cells where not available; full precision.
    pub fn to_csv(&self) -> String {
        let mut out = std::iter::once("method".to_string())
            .chain(self.columns.iter().map(|c| csv_field(c)))
            .collect::<Vec<_>>()
            .join(",");
        out.push('\n');
        for row in &self.rows {
            let cells: Vec<String> = std::iter::once(csv_field(&row.label))
                .chain(
                    row.cells
                        .iter()
                        .map(|v| v.map(|v| format!("{v}")).unwrap_or_default()),
                )
                .collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }

    /// A booktabs LaTeX tabular.
    pub fn to_latex(&self) -> String {
        let mut out = format!(
            "% {}\n\\begin{{tabular}}{{l{}}}\n\\toprule\n",
            self.title,
            "r".repeat(self.columns.len())
        );
        let grid = self.grid();
        let line = |cells: &[String]| {
            format!(
                "{} \\\\\n",
                cells
                    .iter()
                    .map(|c| latex_escape(c))
                    .collect::<Vec<_>>()
                    .join(" & ")
            )
        };
        out.push_str(&line(&grid[0]));
        out.push_str("\\midrule\n");
        for row in &grid[1..] {
            out.push_str(&line(row));
        }
        out.push_str("\\bottomrule\n\\end{tabular}\n");
        for n in &self.notes {
            out.push_str(&format!("% {n}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_rows_render_in_paper_order() {
        let table = merge_tables_with(
            &[],
            &TableOptions {
                with_published: true,
                ..TableOptions::default()
            },
        );
        assert_eq!(table.columns[0], "Object mIoU");
        assert_eq!(table.columns[1], "Object F1");
        assert_eq!(table.columns[11], "RichHF-18K F1");
        let legion = table
            .rows
            .iter()
            .find(|r| r.label == "LEGION (paper)")
            .unwrap();
        assert_eq!(legion.cells[4], Some(60.82)); // Human mIoU
        let md = table.to_markdown();
        assert!(md.contains("| LEGION (paper) | 54.62 | 29.90 |"), "{md}");
        let latex = table.to_latex();
        assert!(latex.contains("LISA-v1-7B (paper) & 35.49"), "{latex}");
        assert!(table.to_csv().starts_with("method,Object mIoU,Object F1,"));
    }
}
