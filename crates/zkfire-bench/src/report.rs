//! The figures of a run: JSON for scripts, a few lines for people.

use crate::stats::LatencySummary;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub run_id: u32,
    /// Every option the run was given.
    pub parameters: serde_json::Value,
    pub sessions: SessionFigures,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup: Option<SetupFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_secs: Option<f64>,
    /// Everything that went wrong, timeouts included (losses are in
    /// `traffic.lost`).
    pub errors: u64,
    pub timeouts: u64,
    /// Distinct error texts (the first few).
    pub error_samples: Vec<String>,
    /// Wall time of the whole run.
    pub duration_secs: f64,
    /// Ended early by Ctrl-C.
    pub interrupted: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionFigures {
    pub target: usize,
    pub up: u64,
    pub login_failures: u64,
    pub login_timeouts: u64,
    /// Successful logins per second from the first connect to the last
    /// bound resource.
    pub logins_per_sec: f64,
    pub ramp_secs: f64,
    /// Time of one login, connect to bound resource.
    pub login_ms: LatencySummary,
    pub registered: u64,
    pub register_existing: u64,
    pub register_refused: u64,
    /// Connections the server ended before the run did.
    pub disconnects: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SetupFigures {
    /// Sessions whose roster had every contact at `both`.
    pub rosters_complete: u64,
    pub contacts_per_account: usize,
    pub secs: f64,
    pub timed_out: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TrafficFigures {
    /// `message` or `presence`.
    pub stanza: String,
    /// Target rate, stanzas per second.
    pub target_rate: u64,
    /// Stanzas in the timetable.
    pub scheduled: u64,
    pub sent: u64,
    /// Scheduled but never written (the sender fell too far behind, or its
    /// session was down).
    pub not_sent: u64,
    /// Deliveries the sent stanzas should have made.
    pub expected_deliveries: u64,
    pub delivered: u64,
    /// Deliveries per second over the measured window.
    pub delivered_per_sec: f64,
    /// Expected deliveries that never came (by the end of the grace period).
    pub lost: u64,
    pub duplicates: u64,
    /// Measured stanzas that came back as errors.
    pub bounced: u64,
    pub misrouted: u64,
    /// Deliveries never marked sent.
    pub unexpected: u64,
    /// Measured stanzas of an earlier run (e.g. stored offline then).
    pub stale: u64,
    /// From the first due time to the end of the timetable (total / rate)
    /// or the last delivery, whichever is later.
    pub measured_secs: f64,
    /// Receipt time minus due time.
    pub latency_ms: LatencySummary,
    /// Write time minus due time: how far the generator itself was behind.
    pub send_lag_ms: LatencySummary,
}

fn lat_line(out: &mut String, name: &str, l: &LatencySummary) {
    let _ = writeln!(
        out,
        "  {name:<13} p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={})",
        l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.count
    );
}

impl Report {
    /// The readable summary printed on stdout.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let s = &self.sessions;
        let _ = writeln!(
            out,
            "zkfire-bench {} (run {}){}",
            self.scenario,
            self.run_id,
            if self.interrupted { " INTERRUPTED" } else { "" }
        );
        let _ = writeln!(
            out,
            "  sessions      {}/{} up in {:.2} s: {:.1} logins/s; {} failed ({} timed out), {} disconnected",
            s.up, s.target, s.ramp_secs, s.logins_per_sec, s.login_failures, s.login_timeouts, s.disconnects
        );
        if s.registered + s.register_existing + s.register_refused > 0 {
            let _ = writeln!(
                out,
                "  registration  {} created, {} existing, {} refused",
                s.registered, s.register_existing, s.register_refused
            );
        }
        lat_line(&mut out, "login time", &s.login_ms);
        if let Some(setup) = &self.setup {
            let _ = writeln!(
                out,
                "  rosters       {} complete with {} contacts in {:.2} s{}",
                setup.rosters_complete,
                setup.contacts_per_account,
                setup.secs,
                if setup.timed_out { " (timed out)" } else { "" }
            );
        }
        if let Some(hold) = self.hold_secs {
            let _ = writeln!(out, "  held          {hold:.1} s");
        }
        if let Some(t) = &self.traffic {
            let _ = writeln!(
                out,
                "  {:<13} target {}/s; sent {} of {} scheduled ({} not sent)",
                t.stanza, t.target_rate, t.sent, t.scheduled, t.not_sent
            );
            let _ = writeln!(
                out,
                "  delivered     {} of {} expected: {:.1}/s over {:.2} s; lost {}, duplicates {}, bounced {}, misrouted {}, stale {}",
                t.delivered,
                t.expected_deliveries,
                t.delivered_per_sec,
                t.measured_secs,
                t.lost,
                t.duplicates,
                t.bounced,
                t.misrouted,
                t.stale
            );
            lat_line(&mut out, "latency", &t.latency_ms);
            lat_line(&mut out, "send lag", &t.send_lag_ms);
        }
        let _ = writeln!(
            out,
            "  errors        {} ({} timeouts); wall time {:.2} s",
            self.errors, self.timeouts, self.duration_secs
        );
        for e in &self.error_samples {
            let _ = writeln!(out, "    - {e}");
        }
        out
    }
}
