//! The progress bar: audio time done, total and the realtime factor, on stderr, only when stderr
//! is a terminal and `--quiet` is not given.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar for one input (or nothing).
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    /// A bar for `name` of `duration` seconds, shown if `enabled` and stderr is a terminal.
    pub fn new(enabled: bool, name: &str, duration: f64) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(
                Some((duration * 1000.0).round() as u64),
                ProgressDrawTarget::stderr(),
            );
            let style = ProgressStyle::with_template("{prefix} [{bar:30}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        let progress = Progress {
            bar,
            started: Instant::now(),
        };
        progress.update(0.0, duration);
        progress
    }

    /// Audio seconds done of `duration`.
    pub fn update(&self, done: f64, duration: f64) {
        if let Some(bar) = &self.bar {
            let elapsed = self.started.elapsed().as_secs_f64();
            let speed = if elapsed > 0.0 { done / elapsed } else { 0.0 };
            bar.set_position((done * 1000.0).round() as u64);
            bar.set_message(format!(
                "{} / {} ({speed:.1}x realtime)",
                clock(done),
                clock(duration)
            ));
        }
    }

    /// Runs `f` with the bar hidden (to print a line without tearing it).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `h:mm:ss` or `m:ss`.
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}
