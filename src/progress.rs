//! A progress bar for work reported in named stages (`progress(stage, done, total)`), e.g. the
//! importance-resampling option's CNF fit ("flow matching") and its proposals: one bar on stderr
//! whose length and label follow the stage, hidden when `quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A `progress(stage, done, total)` callback drawing one bar; the bar ends when dropped.
pub struct StageBar {
    bar: ProgressBar,
    stage: String,
    quiet: bool,
}

impl StageBar {
    /// A bar on stderr from the first stage reported on (nothing is drawn before), never when
    /// `quiet`; `label` prefixes every stage's name.
    pub fn new(quiet: bool, label: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{label} {{msg}} [{{bar:30}}] {{pos}}/{{len}} ({{elapsed}} < {{eta}})"
            ))
            .expect("valid template")
            .progress_chars("=> "),
        );
        Self {
            bar,
            stage: String::new(),
            quiet,
        }
    }

    /// Record progress: `done` of `total` in `stage` (a new stage restarts the bar).
    pub fn update(&mut self, stage: &str, done: usize, total: usize) {
        let first = self.stage.is_empty();
        if stage != self.stage {
            self.stage = stage.to_string();
            self.bar.set_message(self.stage.clone());
            self.bar.reset();
        }
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
        if first && !self.quiet {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    /// The stage last reported and its position and length.
    pub fn state(&self) -> (&str, u64, Option<u64>) {
        (&self.stage, self.bar.position(), self.bar.length())
    }
}

impl Drop for StageBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_restart_the_bar_and_follow_their_totals() {
        let mut b = StageBar::new(true, "resampling");
        b.update("flow matching", 10, 5000);
        assert_eq!(b.state(), ("flow matching", 10, Some(5000)));
        b.update("flow matching", 5000, 5000);
        b.update("proposals", 3, 4000);
        assert_eq!(b.state(), ("proposals", 3, Some(4000)));
    }
}
