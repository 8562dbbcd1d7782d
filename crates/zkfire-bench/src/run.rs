//! The coordinator of a run: logs the sessions in, moves them through the
//! phases, waits (always against a deadline), and gathers the figures.

use crate::accounts::{Accounts, Ring};
use crate::ledger::Ledger;
use crate::metrics::{spawn_progress, Counters, PhaseName};
use crate::report::{Report, SessionFigures, SetupFigures, TrafficFigures};
use crate::scenario::chat::{ChatHandler, Pairs};
use crate::scenario::presence::{PresenceHandler, PresenceRun};
use crate::schedule::{Lane, Schedule};
use crate::session::{
    drive, open_lane, Handler, Passive, Phase, Plan, SessionEnd, StanzaKind, Timeouts,
};
use crate::shards::Spawner;
use crate::stats::LatencySummary;
use crate::xmpp::{self, LoginError, LoginOptions, Registration};
use anyhow::bail;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use zkfire_xml::escape_attr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Idle,
    Chat,
    Presence,
    /// Chat with the two accounts of each pair on different addresses.
    Cluster,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Chat => "chat",
            Scenario::Presence => "presence",
            Scenario::Cluster => "cluster",
        }
    }
}

/// Everything a run needs, checked and resolved.
pub struct RunConfig {
    pub scenario: Scenario,
    pub targets: Vec<SocketAddr>,
    pub accounts: Accounts,
    pub login: LoginOptions,
    pub login_concurrency: usize,
    /// Logins started per second; 0 for as fast as the concurrency allows.
    pub login_rate: u64,
    pub ramp_timeout: Duration,
    pub spread_local: usize,
    pub duration: Duration,
    pub rate: u64,
    pub max_messages: u64,
    pub grace: Duration,
    pub hold: Duration,
    pub contacts: usize,
    pub setup_timeout: Duration,
    pub skip_roster_setup: bool,
    pub body_size: usize,
    pub timeouts: Timeouts,
    pub quiet: bool,
    /// The options as given, for the report.
    pub parameters: serde_json::Value,
    /// Where to write the report as JSON.
    pub json: Option<std::path::PathBuf>,
    /// The account whose session traffic is printed.
    pub trace_account: Option<usize>,
    /// Single-threaded runtimes the sessions are spread over (0: one
    /// multi-threaded runtime).
    pub shards: usize,
}

/// What one session does once logged in.
type Role = (Box<dyn Handler>, Option<Plan>);

/// The part of the run that depends on the scenario.
struct Shape {
    users: usize,
    schedule: Option<Schedule>,
    ledger: Option<Arc<Ledger>>,
    stanza: &'static str,
    make: Box<dyn Fn(usize) -> Role + Send + Sync>,
}

fn shape(cfg: &RunConfig, counters: &Arc<Counters>, run_id: u32) -> anyhow::Result<Shape> {
    let n = cfg.accounts.count;
    let pad = cfg.body_size;
    match cfg.scenario {
        Scenario::Idle => Ok(Shape {
            users: n,
            schedule: None,
            ledger: None,
            stanza: "",
            make: Box::new(|_| (Box::new(Passive) as Box<dyn Handler>, None)),
        }),
        Scenario::Chat | Scenario::Cluster => {
            let pairs = Pairs::new(n);
            if pairs.pairs == 0 {
                bail!("chat needs at least 2 users");
            }
            if cfg.scenario == Scenario::Cluster && cfg.targets.len() < 2 {
                bail!("cluster needs at least two addresses (--address A --address B)");
            }
            let schedule = Schedule::new(cfg.rate, cfg.duration, cfg.max_messages);
            let ledger = Arc::new(Ledger::new(usize::try_from(schedule.total())?));
            let accounts = cfg.accounts.clone();
            let (counters, ledger2) = (counters.clone(), ledger.clone());
            Ok(Shape {
                users: pairs.users(),
                schedule: Some(schedule),
                ledger: Some(ledger),
                stanza: "message",
                make: Box::new(move |u| {
                    let handler = ChatHandler {
                        me: u,
                        pairs,
                        schedule,
                        ledger: ledger2.clone(),
                        counters: counters.clone(),
                        run_id,
                        t0: None,
                    };
                    let plan = Plan {
                        lane: pairs.lane(u, schedule.total()),
                        schedule,
                        ledger: ledger2.clone(),
                        kind: StanzaKind::Message {
                            to: escape_attr(&accounts.bare(pairs.partner(u))),
                        },
                        run_id,
                        pad_to: pad,
                    };
                    (Box::new(handler) as Box<dyn Handler>, Some(plan))
                }),
            })
        }
        Scenario::Presence => {
            let Some(ring) = Ring::new(n, cfg.contacts) else {
                bail!(
                    "presence needs an even --contacts below --users (got {} contacts, {} users)",
                    cfg.contacts,
                    n
                );
            };
            let schedule = Schedule::new(cfg.rate, cfg.duration, cfg.max_messages);
            let k = ring.k() as u64;
            let slots = schedule
                .total()
                .checked_mul(k)
                .and_then(|s| usize::try_from(s).ok());
            let Some(slots) = slots else {
                bail!("too many presence deliveries to track");
            };
            let ledger = Arc::new(Ledger::new(slots));
            let shared = Arc::new(PresenceRun {
                ring,
                accounts: cfg.accounts.clone(),
                schedule,
                ledger: ledger.clone(),
                counters: counters.clone(),
                run_id,
                setup: !cfg.skip_roster_setup,
            });
            let ledger2 = ledger.clone();
            Ok(Shape {
                users: n,
                schedule: Some(schedule),
                ledger: Some(ledger),
                stanza: "presence",
                make: Box::new(move |u| {
                    let handler = PresenceHandler::new(u, shared.clone());
                    let plan = Plan {
                        lane: Lane::new(u as u64, n as u64, schedule.total()),
                        schedule,
                        ledger: ledger2.clone(),
                        kind: StanzaKind::Presence { contacts: k },
                        run_id,
                        pad_to: pad,
                    };
                    (Box::new(handler) as Box<dyn Handler>, Some(plan))
                }),
            })
        }
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    Done,
    Deadline,
    Interrupted,
}

/// Polls `done` every 10 ms until it holds, the deadline passes, or Ctrl-C.
async fn wait_for(
    deadline: Instant,
    interrupt: &mut watch::Receiver<bool>,
    mut done: impl FnMut() -> bool,
) -> Waited {
    loop {
        if done() {
            return Waited::Done;
        }
        if *interrupt.borrow() {
            return Waited::Interrupted;
        }
        let now = Instant::now();
        if now >= deadline {
            return Waited::Deadline;
        }
        let nap = (deadline - now).min(Duration::from_millis(10));
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            _ = interrupt.changed() => {}
        }
    }
}

struct LoginReport {
    index: usize,
    /// Time to log in and when it finished; `None` when it failed.
    ok: Option<(Duration, Instant)>,
}

fn set_phase(name: &PhaseName, value: &'static str) {
    if let Ok(mut p) = name.lock() {
        *p = value;
    }
}

pub async fn run(cfg: RunConfig) -> anyhow::Result<Report> {
    let started = Instant::now();
    let run_id: u32 = rand::random::<u32>() % 1_000_000_000;
    let counters = Arc::new(Counters::default());
    let shape = shape(&cfg, &counters, run_id)?;
    let users = shape.users;

    let phase_name: PhaseName = Arc::new(Mutex::new("ramp"));
    let (progress_stop, progress_rx) = oneshot::channel();
    let progress = spawn_progress(
        counters.clone(),
        users,
        phase_name.clone(),
        cfg.quiet,
        progress_rx,
    );
    let (interrupt_tx, mut interrupt) = watch::channel(false);
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = interrupt_tx.send(true);
        }
    });

    // Ramp: every session logs in, paced and at most `login_concurrency` at once.
    let (phase_tx, _) = watch::channel(Phase::Ramp);
    let semaphore = Arc::new(Semaphore::new(cfg.login_concurrency.max(1)));
    let (login_tx, mut login_rx) = mpsc::unbounded_channel::<LoginReport>();
    let opts = Arc::new(cfg.login.clone());
    let pace = (cfg.login_rate > 0).then(|| {
        Schedule::new(
            cfg.login_rate,
            Duration::from_secs(u64::from(u32::MAX)),
            users as u64,
        )
    });
    let spawner = Spawner::new(cfg.shards, "zkb-shard")?;
    let ramp_start = Instant::now();
    let mut handles: Vec<JoinHandle<SessionEnd>> = Vec::with_capacity(users);
    for i in 0..users {
        let target = cfg.targets[i % cfg.targets.len()];
        let local = crate::net::spread_source(target, cfg.spread_local, i);
        let (handler, plan) = (shape.make)(i);
        let node = cfg.accounts.node(i);
        let (opts, semaphore, counters, login_tx) = (
            opts.clone(),
            semaphore.clone(),
            counters.clone(),
            login_tx.clone(),
        );
        let phase_rx = phase_tx.subscribe();
        let timeouts = Timeouts {
            trace: cfg.trace_account == Some(i),
            ..cfg.timeouts
        };
        handles.push(spawner.spawn(i, async move {
            if let Some(p) = pace {
                tokio::time::sleep_until((ramp_start + p.offset(i as u64)).into()).await;
            }
            let Ok(permit) = semaphore.acquire_owned().await else {
                return SessionEnd::default();
            };
            let result = xmpp::login(target, local, &node, &opts).await;
            drop(permit);
            let li = match result {
                Ok(li) => li,
                Err(e) => {
                    Counters::add(&counters.login_failures, 1);
                    match e {
                        LoginError::Timeout(_) => {
                            Counters::add(&counters.login_timeouts, 1);
                            counters.timeout(e.to_string());
                        }
                        LoginError::Failed(_) => counters.error(e.to_string()),
                    }
                    let _ = login_tx.send(LoginReport { index: i, ok: None });
                    return SessionEnd::default();
                }
            };
            match li.registration {
                Registration::Created => Counters::add(&counters.registered, 1),
                Registration::Existing => Counters::add(&counters.register_existing, 1),
                Registration::Refused => Counters::add(&counters.register_refused, 1),
                Registration::NotTried => {}
            }
            Counters::add(&counters.logins_ok, 1);
            counters.sessions_up.fetch_add(1, Ordering::Relaxed);
            if plan.is_some() {
                open_lane(&counters);
            }
            let _ = login_tx.send(LoginReport {
                index: i,
                ok: Some((li.took, Instant::now())),
            });
            let (r, w, parser, pending) = li.wire.into_parts();
            let end = drive(
                r,
                w,
                parser,
                pending,
                handler,
                plan,
                phase_rx,
                counters.clone(),
                timeouts,
            )
            .await;
            counters.sessions_up.fetch_sub(1, Ordering::Relaxed);
            end
        }));
    }
    drop(login_tx);

    let pace_span = pace.map(|p| p.span()).unwrap_or_default();
    let ramp_deadline = ramp_start + pace_span + cfg.ramp_timeout;
    let mut reported = vec![false; users];
    let mut login_ms = Vec::new();
    let mut last_login = None;
    let mut outstanding = users;
    let mut interrupted = false;
    while outstanding > 0 {
        tokio::select! {
            r = tokio::time::timeout_at(ramp_deadline.into(), login_rx.recv()) => match r {
                Ok(Some(rep)) => {
                    outstanding -= 1;
                    if let Some(seen) = reported.get_mut(rep.index) {
                        *seen = true;
                    }
                    if let Some((took, at)) = rep.ok {
                        login_ms.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                        last_login = Some(at);
                    }
                }
                Ok(None) | Err(_) => break,
            },
            _ = interrupt.changed() => {
                interrupted = true;
                break;
            }
        }
    }
    // Logins still going at the deadline will not join this run.
    for (i, seen) in reported.iter().enumerate() {
        if !*seen {
            if let Some(h) = handles.get(i) {
                h.abort();
            }
            if !interrupted {
                Counters::add(&counters.login_failures, 1);
                Counters::add(&counters.login_timeouts, 1);
                counters.timeout("login not finished within the ramp timeout");
            }
        }
    }
    let up = Counters::get(&counters.logins_ok);
    let ramp_secs = last_login
        .map(|t| t.saturating_duration_since(ramp_start))
        .unwrap_or_else(|| ramp_start.elapsed())
        .as_secs_f64();
    let sessions = SessionFigures {
        target: users,
        up,
        logins_per_sec: if ramp_secs > 0.0 {
            up as f64 / ramp_secs
        } else {
            0.0
        },
        ramp_secs,
        login_ms: LatencySummary::from_micros(login_ms),
        ..SessionFigures::default()
    };
    eprintln!(
        "zkfire-bench: {up}/{users} sessions up after {ramp_secs:.2} s ({:.1} logins/s)",
        sessions.logins_per_sec
    );

    let mut setup = None;
    let mut traffic_window = None;
    let mut hold_secs = None;
    if !interrupted {
        match cfg.scenario {
            Scenario::Idle => {
                // The line a script waits for before it samples the server's memory.
                println!(
                    "READY sessions_up={up} target={users} ramp_secs={ramp_secs:.3} hold_secs={}",
                    cfg.hold.as_secs_f64()
                );
                let _ = std::io::stdout().flush();
                set_phase(&phase_name, "hold");
                let hold_start = Instant::now();
                let waited = wait_for(hold_start + cfg.hold, &mut interrupt, || false).await;
                interrupted = waited == Waited::Interrupted;
                hold_secs = Some(hold_start.elapsed().as_secs_f64());
            }
            Scenario::Presence | Scenario::Chat | Scenario::Cluster => {
                if cfg.scenario == Scenario::Presence {
                    set_phase(&phase_name, "setup");
                    let setup_start = Instant::now();
                    let deadline = setup_start + cfg.setup_timeout;
                    let c = counters.clone();
                    let mut waited = Waited::Done;
                    for step in [1u8, 2] {
                        let _ = phase_tx.send(Phase::Setup(step));
                        let counter = if step == 1 {
                            &c.setup_step1_done
                        } else {
                            &c.setup_done
                        };
                        waited = wait_for(deadline, &mut interrupt, || {
                            Counters::get(counter) >= Counters::get(&c.logins_ok)
                        })
                        .await;
                        if waited != Waited::Done {
                            break;
                        }
                    }
                    interrupted = waited == Waited::Interrupted;
                    if waited == Waited::Deadline {
                        counters.timeout("roster setup not complete within the setup timeout");
                    }
                    let complete = Counters::get(&counters.setup_done);
                    eprintln!(
                        "zkfire-bench: {complete}/{up} rosters complete after {:.2} s",
                        setup_start.elapsed().as_secs_f64()
                    );
                    setup = Some(SetupFigures {
                        rosters_complete: complete,
                        contacts_per_account: cfg.contacts,
                        secs: setup_start.elapsed().as_secs_f64(),
                        timed_out: waited == Waited::Deadline,
                    });
                }
                if !interrupted {
                    if let Some(schedule) = shape.schedule {
                        interrupted = run_timetable(
                            &cfg,
                            schedule,
                            &counters,
                            &phase_tx,
                            &phase_name,
                            &mut interrupt,
                        )
                        .await
                            == Waited::Interrupted;
                        traffic_window = Some(schedule);
                    }
                }
            }
        }
    }

    // Stop: every session ends its stream; stragglers are cut off.
    set_phase(&phase_name, "stop");
    let _ = phase_tx.send(Phase::Stop);
    let stop_deadline =
        Instant::now() + cfg.timeouts.close + cfg.timeouts.write + Duration::from_secs(2);
    let mut lags = Vec::new();
    for mut h in handles {
        match tokio::time::timeout_at(stop_deadline.into(), &mut h).await {
            Ok(Ok(end)) => lags.extend(end.send_lag_us),
            Ok(Err(_)) => {}
            Err(_) => h.abort(),
        }
    }
    spawner.stop();
    let _ = progress_stop.send(());
    let _ = progress.await;
    ctrl_c.abort();

    let traffic = match (traffic_window, &shape.ledger) {
        (Some(schedule), Some(ledger)) => {
            let (tally, latencies) = ledger.tally();
            let last_arrival =
                Duration::from_micros(counters.last_arrival_us.load(Ordering::Relaxed));
            let window = schedule.window().max(last_arrival).as_secs_f64();
            let sent = Counters::get(&counters.sent);
            Some(TrafficFigures {
                stanza: shape.stanza.to_string(),
                target_rate: schedule.rate(),
                scheduled: schedule.total(),
                sent,
                not_sent: schedule.total().saturating_sub(sent),
                expected_deliveries: tally.sent,
                delivered: tally.delivered,
                delivered_per_sec: if window > 0.0 {
                    tally.delivered as f64 / window
                } else {
                    0.0
                },
                lost: tally.lost,
                duplicates: tally.duplicates,
                bounced: Counters::get(&counters.bounced),
                misrouted: Counters::get(&counters.misrouted),
                unexpected: tally.unexpected,
                stale: Counters::get(&counters.stale),
                measured_secs: window,
                latency_ms: LatencySummary::from_micros(latencies),
                send_lag_ms: LatencySummary::from_micros(lags),
            })
        }
        _ => None,
    };
    let sessions = SessionFigures {
        login_failures: Counters::get(&counters.login_failures),
        login_timeouts: Counters::get(&counters.login_timeouts),
        registered: Counters::get(&counters.registered),
        register_existing: Counters::get(&counters.register_existing),
        register_refused: Counters::get(&counters.register_refused),
        disconnects: Counters::get(&counters.disconnects),
        ..sessions
    };
    Ok(Report {
        scenario: cfg.scenario.name().to_string(),
        run_id,
        parameters: cfg.parameters.clone(),
        sessions,
        setup,
        traffic,
        hold_secs,
        errors: Counters::get(&counters.errors),
        timeouts: Counters::get(&counters.timeouts),
        error_samples: counters.error_samples(),
        duration_secs: started.elapsed().as_secs_f64(),
        interrupted,
    })
}

/// Runs the timetable from a common start, then waits for the deliveries.
async fn run_timetable(
    cfg: &RunConfig,
    schedule: Schedule,
    counters: &Arc<Counters>,
    phase_tx: &watch::Sender<Phase>,
    phase_name: &PhaseName,
    interrupt: &mut watch::Receiver<bool>,
) -> Waited {
    set_phase(phase_name, "run");
    // A moment ahead, so that every session has the start before it is due.
    let t0 = Instant::now() + Duration::from_millis(200);
    let _ = phase_tx.send(Phase::Run { t0 });
    let end_of_timetable = t0 + schedule.span();
    let c = counters.clone();
    let waited = wait_for(end_of_timetable + cfg.grace, interrupt, || {
        c.lanes_open.load(Ordering::Relaxed) <= 0
    })
    .await;
    if waited == Waited::Interrupted {
        return waited;
    }
    if waited == Waited::Deadline {
        counters.timeout("senders still behind their timetable at its end plus the grace period");
    }
    set_phase(phase_name, "drain");
    let drain_deadline = Instant::now().max(end_of_timetable) + cfg.grace;
    wait_for(drain_deadline, interrupt, || {
        Counters::get(&c.received) + Counters::get(&c.bounced) >= Counters::get(&c.expected)
    })
    .await
}
