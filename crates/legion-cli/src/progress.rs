//! indicatif progress bars for the library's [`Progress`] callbacks.

use indicatif::{ProgressBar, ProgressStyle};
use legion_data::Progress;
use std::sync::Mutex;

/// Draws one bar per phase on stderr (hidden when stderr is not a terminal, so CI logs stay clean).
#[derive(Default)]
pub struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bar {
    fn start(&self, phase: &str, total: u64) {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{msg:>20} [{bar:40}] {pos}/{len} {per_sec} ETA {eta}")
                .expect("static template is valid")
                .progress_chars("=> "),
        );
        bar.set_message(phase.to_string());
        *self.bar.lock().expect("progress lock") = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = self.bar.lock().expect("progress lock").as_ref() {
            bar.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }
}
