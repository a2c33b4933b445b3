//! Progress of long CLI work (import, export, compact of every collection): a bar with counts, rate and ETA
//! when standard error is a terminal (indicatif), plain lines every few seconds
//! otherwise (a log file or a pipe gets no escape codes).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain form reports.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    what: &'static str,
    total: Option<u64>,
    done: u64,
    started: Instant,
    form: Form,
}

enum Form {
    Bar(ProgressBar),
    Lines { last: Instant },
}

impl Progress {
    /// Progress over `total` units of `what` (`None`: unknown), in the form standard
    /// error calls for.
    pub fn new(what: &'static str, total: Option<u64>) -> Self {
        Self::with_terminal(what, total, std::io::stderr().is_terminal())
    }

    /// The bar when `terminal`, the plain lines otherwise.
    pub fn with_terminal(what: &'static str, total: Option<u64>, terminal: bool) -> Self {
        let form = if terminal {
            let bar = match total {
                Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            bar.set_style(bar_style(total.is_some()));
            bar.set_message(what);
            bar.enable_steady_tick(Duration::from_millis(200));
            Form::Bar(bar)
        } else {
            Form::Lines {
                last: Instant::now(),
            }
        };
        Self {
            what,
            total,
            done: 0,
            started: Instant::now(),
            form,
        }
    }

    /// `done` units so far.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        match &mut self.form {
            Form::Bar(bar) => bar.set_position(done),
            Form::Lines { last } => {
                if last.elapsed() >= LINE_EVERY {
                    *last = Instant::now();
                    eprintln!("{}", self.line());
                }
            }
        }
    }

    /// The total, once known.
    pub fn set_total(&mut self, total: u64) {
        if self.total != Some(total) {
            self.total = Some(total);
            if let Form::Bar(bar) = &self.form {
                bar.set_length(total);
                bar.set_style(bar_style(true));
            }
        }
    }

    pub fn add(&mut self, n: u64) {
        self.set(self.done + n);
    }

    /// The plain report: `what: done/total (rate/s)`.
    pub fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        match self.total {
            Some(total) => format!("{}: {}/{total} ({rate:.0}/s)", self.what, self.done),
            None => format!("{}: {} ({rate:.0}/s)", self.what, self.done),
        }
    }

    /// Ends the bar (it stays on screen with its final count).
    pub fn finish(self) {
        if let Form::Bar(bar) = self.form {
            bar.finish();
        }
    }

    /// Removes the bar (the work failed or was interrupted).
    pub fn abandon(self) {
        if let Form::Bar(bar) = self.form {
            bar.abandon();
        }
    }
}

/// A bar with counts, rate and ETA when the total is known, a spinner otherwise.
fn bar_style(total_known: bool) -> ProgressStyle {
    let template = if total_known {
        "{msg} [{bar:30}] {human_pos}/{human_len} ({per_sec}, ETA {eta})"
    } else {
        "{msg} {spinner} {human_pos} ({per_sec})"
    };
    ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_report_counts_against_the_total() {
        let mut p = Progress::with_terminal("exported records", Some(10), false);
        p.add(4);
        p.add(3);
        assert!(
            p.line().starts_with("exported records: 7/10 ("),
            "{}",
            p.line()
        );
        let mut open = Progress::with_terminal("upserted records", None, false);
        open.set(12);
        assert!(open.line().starts_with("upserted records: 12 ("));
        open.set_total(20);
        assert!(open.line().starts_with("upserted records: 12/20 ("));
        p.finish();
        open.abandon();
    }

    #[test]
    fn a_bar_tracks_its_position() {
        let mut p = Progress::with_terminal("exported records", Some(5), true);
        p.set(5);
        match &p.form {
            Form::Bar(bar) => assert_eq!(bar.position(), 5),
            Form::Lines { .. } => panic!("a terminal gets a bar"),
        }
        p.finish();
    }
}
