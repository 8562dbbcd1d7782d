//! Message archive (XEP-0313) benchmark: fills a fresh database with one
//! large archive and times the page queries zkfire's MAM module makes.
//!
//! ```sh
//! cargo run --release -p zkfire-storage --example archive_bench -- --backend sqlite --messages 1000000
//! cargo run --release -p zkfire-storage --example archive_bench -- --backend postgres --messages 1000000
//! ```
//!
//! Options: `--backend sqlite|postgres` (sqlite), `--messages N` (100,000:
//! the measured account's archive), `--reps R` (200 timed runs of each
//! query, after `--warmup W`, 20), `--seed S`.
//!
//! The measured account gets N messages with 20 correspondents; 10 other
//! accounts get N/10 each, interleaved in time, so the table holds 2N rows
//! and the measured account is not the whole table. Ids are ULIDs at
//! increasing times (one message every second on average, all accounts
//! together), written in batches of 500 rows as zkfire's archive writer does.
//!
//! SQLite lives in a temporary folder, with zkfire's own pragmas (WAL,
//! synchronous=NORMAL). PostgreSQL is a private instance started by
//! zkfire-testkit (fsync off, as for the tests) and stopped at the end; the
//! table is vacuumed and analyzed after the fill, as autovacuum would do to
//! an insert-mostly table soon after.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use ulid::Ulid;
use zkfire_storage::{ArchiveFilter, ArchivePage, ArchiveWith, ArchivedMessage, Storage};
use zkfire_testkit::postgres::PostgresInstance;

const BATCH: usize = 500;
const CORRESPONDENTS: usize = 20;
const OTHER_ACCOUNTS: usize = 10;
const PAGE_MAX: usize = 100;
const MEASURED: &str = "alice";
const DOMAIN: &str = "example.org";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Options {
    backend: Backend,
    messages: usize,
    reps: usize,
    warmup: usize,
    seed: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: archive_bench [--backend sqlite|postgres] [--messages N] [--reps R] [--warmup W] [--seed S]"
    );
    std::process::exit(2)
}

fn options() -> Options {
    let mut o = Options {
        backend: Backend::Sqlite,
        messages: 100_000,
        reps: 200,
        warmup: 20,
        seed: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        let number = |v: String| {
            v.replace(['_', ','], "")
                .parse()
                .unwrap_or_else(|_| usage())
        };
        match a.as_str() {
            "--backend" => {
                o.backend = match value().as_str() {
                    "sqlite" => Backend::Sqlite,
                    "postgres" => Backend::Postgres,
                    _ => usage(),
                }
            }
            "--messages" => o.messages = number(value()),
            "--reps" => o.reps = number(value()),
            "--warmup" => o.warmup = number(value()),
            "--seed" => o.seed = number(value()) as u64,
            _ => usage(),
        }
    }
    if o.messages < 10 * PAGE_MAX || o.reps == 0 {
        usage();
    }
    o
}

/// As `modules::mam::ids::just_before` in zkfire: the greatest id of the
/// millisecond before `ms`.
fn just_before(ms: u64) -> String {
    Ulid::from_parts(ms.saturating_sub(1), u128::MAX).to_string()
}

/// As `modules::mam::ids::just_after` in zkfire: the least id of the
/// millisecond after `ms`.
fn just_after(ms: u64) -> String {
    Ulid::from_parts(ms.saturating_add(1), 0).to_string()
}

const WORDS: &[&str] = &[
    "the", "meeting", "is", "moved", "to", "tomorrow", "at", "ten", "can", "you", "send", "me",
    "that", "file", "again", "thanks", "sure", "I", "will", "look", "into", "it", "later",
    "tonight", "did", "the", "build", "pass", "on", "your", "side", "lunch", "sounds", "good",
    "see", "you", "there", "ok",
];

/// A chat stanza as zkfire archives it (with its stanza-id), 300 to 600 bytes.
fn stanza(rng: &mut StdRng, from: &str, to: &str, id: &str, by: &str) -> String {
    let head = format!(
        "<message xmlns=\"jabber:client\" from=\"{from}\" to=\"{to}\" type=\"chat\" id=\"{:016x}\">",
        rng.gen::<u64>()
    );
    let tail = format!(
        "<active xmlns=\"http://jabber.org/protocol/chatstates\"/>\
         <markable xmlns=\"urn:xmpp:chat-markers:0\"/>\
         <stanza-id xmlns=\"urn:xmpp:sid:0\" by=\"{by}\" id=\"{id}\"/></message>"
    );
    let target: usize = rng.gen_range(300..=600);
    let room = target.saturating_sub(head.len() + tail.len() + "<body></body>".len());
    let mut body = String::with_capacity(room + 16);
    while body.len() < room {
        if !body.is_empty() {
            body.push(' ');
        }
        body.push_str(WORDS.choose(rng).unwrap_or(&"ok"));
    }
    body.truncate(room.max(2));
    format!("{head}<body>{body}</body>{tail}")
}

struct Filled {
    /// The measured account's ids, oldest first.
    ids: Vec<Ulid>,
    rows: usize,
    storage_time: Duration,
    wall: Duration,
}

async fn fill(storage: &Arc<dyn Storage>, o: &Options, rng: &mut StdRng) -> Filled {
    let others = o.messages / 10;
    let total = o.messages + OTHER_ACCOUNTS * others;
    // Every message gets its own millisecond, 1 s apart on average, ending
    // now: ids strictly increasing, as one node makes them.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut ms = now - total as u64 * 1000;
    // Which account each message belongs to, shuffled: `OTHER_ACCOUNTS`
    // means the measured one.
    let mut owners: Vec<u8> = Vec::with_capacity(total);
    owners.extend(std::iter::repeat_n(OTHER_ACCOUNTS as u8, o.messages));
    for a in 0..OTHER_ACCOUNTS {
        owners.extend(std::iter::repeat_n(a as u8, others));
    }
    owners.shuffle(rng);

    let mut ids = Vec::with_capacity(o.messages);
    let mut batch: Vec<(String, ArchivedMessage)> = Vec::with_capacity(BATCH);
    let mut storage_time = Duration::ZERO;
    let started = Instant::now();
    let mut last_report = Instant::now();
    for (n, owner) in owners.iter().enumerate() {
        ms += rng.gen_range(1..2000);
        let id = Ulid::from_parts(ms, rng.gen());
        let user = if usize::from(*owner) == OTHER_ACCOUNTS {
            ids.push(id);
            MEASURED.to_string()
        } else {
            format!("user{owner}")
        };
        let contact = rng.gen_range(0..CORRESPONDENTS);
        let with_bare = format!("contact{contact}@{DOMAIN}");
        let with_full = format!("{with_bare}/res{}", rng.gen_range(0..3));
        let me = format!("{user}@{DOMAIN}");
        let id_text = id.to_string();
        let text = if rng.gen_bool(0.5) {
            stanza(rng, &format!("{me}/laptop"), &with_bare, &id_text, &me)
        } else {
            stanza(rng, &with_full, &me, &id_text, &me)
        };
        batch.push((
            user,
            ArchivedMessage {
                id: id_text,
                ts_ms: ms as i64,
                with_bare,
                with_full,
                stanza: text,
            },
        ));
        if batch.len() == BATCH || n + 1 == total {
            let t = Instant::now();
            storage
                .archive_messages(&batch)
                .await
                .expect("archive_messages");
            storage_time += t.elapsed();
            batch.clear();
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                eprintln!(
                    "  {} / {total} rows, {:.0} rows/s",
                    n + 1,
                    (n + 1) as f64 / storage_time.as_secs_f64()
                );
            }
        }
    }
    Filled {
        ids,
        rows: total,
        storage_time,
        wall: started.elapsed(),
    }
}

/// Median and p99 of `reps` runs of `f` (after `warmup` untimed ones), ms.
async fn time<F, Fut>(o: &Options, mut f: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..o.warmup {
        f().await;
    }
    let mut samples = Vec::with_capacity(o.reps);
    for _ in 0..o.reps {
        let t = Instant::now();
        f().await;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn page(count: bool) -> ArchivePage {
    ArchivePage {
        max: PAGE_MAX,
        after: None,
        before: None,
        from_end: false,
        count,
    }
}

/// What a query shape makes for one run: its filter and page.
type Shape = Box<dyn Fn(&mut StdRng, bool) -> (ArchiveFilter, ArchivePage)>;

fn shapes(ids: &Arc<Vec<Ulid>>) -> Vec<(&'static str, Shape)> {
    let mut v: Vec<(&'static str, Shape)> = Vec::new();
    v.push((
        "first page",
        Box::new(|_, count| (ArchiveFilter::default(), page(count))),
    ));
    let i = ids.clone();
    v.push((
        "middle page (RSM after, random anchor)",
        Box::new(move |rng, count| {
            let anchor = i[rng.gen_range(0..i.len() - PAGE_MAX)];
            let mut p = page(count);
            p.after = Some(anchor.to_string());
            (ArchiveFilter::default(), p)
        }),
    ));
    v.push((
        "last page (RSM before, from_end)",
        Box::new(|_, count| {
            let mut p = page(count);
            p.from_end = true;
            (ArchiveFilter::default(), p)
        }),
    ));
    v.push((
        "with = one of 20 contacts, first page",
        Box::new(|rng, count| {
            let filter = ArchiveFilter {
                with: Some(ArchiveWith::Bare(format!(
                    "contact{}@{DOMAIN}",
                    rng.gen_range(0..CORRESPONDENTS)
                ))),
                ..ArchiveFilter::default()
            };
            (filter, page(count))
        }),
    ));
    let i = ids.clone();
    v.push((
        "start/end = random 1 day, first page",
        Box::new(move |rng, count| {
            let first = i[0].timestamp_ms();
            let last = i[i.len() - 1].timestamp_ms();
            let day = 86_400_000;
            let start = rng.gen_range(first..last.saturating_sub(day).max(first + 1));
            let filter = ArchiveFilter {
                after: Some(just_before(start)),
                before: Some(just_after(start + day)),
                ..ArchiveFilter::default()
            };
            (filter, page(count))
        }),
    ));
    let i = ids.clone();
    v.push((
        "ids = 10 random ids",
        Box::new(move |rng, count| {
            let filter = ArchiveFilter {
                ids: Some(
                    (0..10)
                        .map(|_| i[rng.gen_range(0..i.len())].to_string())
                        .collect(),
                ),
                ..ArchiveFilter::default()
            };
            (filter, page(count))
        }),
    ));
    v
}

async fn sqlite_size(dir: &std::path::Path) -> String {
    let mut parts = Vec::new();
    let mut total = 0;
    for name in ["archive.db", "archive.db-wal"] {
        let len = std::fs::metadata(dir.join(name))
            .map(|m| m.len())
            .unwrap_or(0);
        total += len;
        parts.push(format!("{name} {}", mib(len)));
    }
    format!("{} ({})", mib(total), parts.join(", "))
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

async fn postgres_sql(url: &str, statements: &[&str]) -> Vec<i64> {
    let pool = sqlx::postgres::PgPool::connect(url)
        .await
        .expect("connect to PostgreSQL");
    let mut out = Vec::new();
    for s in statements {
        if s.starts_with("SELECT") {
            out.push(sqlx::query_scalar(s).fetch_one(&pool).await.expect(s));
        } else {
            sqlx::query(s).execute(&pool).await.expect(s);
        }
    }
    pool.close().await;
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = options();
    let mut rng = StdRng::seed_from_u64(o.seed);
    let sqlite_dir = tempfile::Builder::new()
        .prefix("zkfire-archive-bench-")
        .tempdir()
        .expect("temporary folder");
    let pg = match o.backend {
        Backend::Postgres => Some(
            tokio::task::spawn_blocking(PostgresInstance::start)
                .await
                .unwrap()
                .expect("start PostgreSQL (needs the Debian package postgresql)"),
        ),
        Backend::Sqlite => None,
    };
    let url = match &pg {
        Some(pg) => pg.url(),
        None => format!(
            "sqlite://{}",
            sqlite_dir.path().join("archive.db").display()
        ),
    };
    let storage = zkfire_storage::open(&url).await.expect("open storage");
    let name = match o.backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    };
    eprintln!(
        "{name}: filling {} + {} x {} messages",
        o.messages,
        OTHER_ACCOUNTS,
        o.messages / 10
    );
    let filled = fill(&storage, &o, &mut rng).await;
    println!(
        "{name}, {} messages in the measured archive, {} rows in the table",
        o.messages, filled.rows
    );
    println!(
        "fill: {} rows in batches of {BATCH}: {:.0} rows/s in archive_messages ({:.1} s), {:.1} s wall with stanza generation",
        filled.rows,
        filled.rows as f64 / filled.storage_time.as_secs_f64(),
        filled.storage_time.as_secs_f64(),
        filled.wall.as_secs_f64()
    );
    match &pg {
        Some(pg) => {
            let t = Instant::now();
            let url = pg.url();
            let sizes = postgres_sql(
                &url,
                &[
                    "VACUUM (ANALYZE) archive",
                    "SELECT pg_total_relation_size('archive')",
                    "SELECT pg_relation_size('archive')",
                    "SELECT pg_indexes_size('archive')",
                ],
            )
            .await;
            println!(
                "VACUUM (ANALYZE): {:.1} s; size on disk: pg_total_relation_size('archive') {} (table {}, indexes {}, TOAST and maps the rest)",
                t.elapsed().as_secs_f64(),
                mib(sizes[0] as u64),
                mib(sizes[1] as u64),
                mib(sizes[2] as u64)
            );
        }
        None => println!("size on disk: {}", sqlite_size(sqlite_dir.path()).await),
    }
    println!(
        "{} timed runs of each after {} warm-up runs, page max {PAGE_MAX}; milliseconds",
        o.reps, o.warmup
    );
    println!();
    println!("| query | count | median ms | p99 ms | messages | count result |");
    println!("|---|---|---|---|---|---|");
    let ids = Arc::new(filled.ids);
    for (label, shape) in shapes(&ids) {
        for count in [false, true] {
            // The last run's result, as a check of what was asked.
            let seen = Arc::new(std::sync::Mutex::new((0usize, None)));
            let rng = Arc::new(std::sync::Mutex::new(StdRng::seed_from_u64(o.seed + 7)));
            let (median, p99) = time(&o, || {
                let (filter, page) = shape(&mut rng.lock().unwrap(), count);
                let storage = storage.clone();
                let seen = seen.clone();
                async move {
                    let r = storage
                        .query_archive(MEASURED, &filter, &page)
                        .await
                        .expect("query_archive");
                    *seen.lock().unwrap() = (r.messages.len(), r.count);
                }
            })
            .await;
            let (n, c) = *seen.lock().unwrap();
            println!(
                "| {label} | {} | {median:.2} | {p99:.2} | {n} | {} |",
                if count { "yes" } else { "no" },
                c.map_or("-".to_string(), |c| c.to_string())
            );
        }
    }
    let found = Arc::new(std::sync::Mutex::new(true));
    let (median, p99) = time(&o, || {
        let id = ids[rng.gen_range(0..ids.len())].to_string();
        let storage = storage.clone();
        let found = found.clone();
        async move {
            let yes = storage
                .archive_contains(MEASURED, &id)
                .await
                .expect("archive_contains");
            let mut f = found.lock().unwrap();
            *f = *f && yes;
        }
    })
    .await;
    println!(
        "| archive_contains (random existing id) | - | {median:.2} | {p99:.2} | {} | - |",
        if *found.lock().unwrap() {
            "found"
        } else {
            "MISSING"
        }
    );
    let (median, p99) = time(&o, || {
        let storage = storage.clone();
        async move {
            storage
                .archive_bounds(MEASURED)
                .await
                .expect("archive_bounds");
        }
    })
    .await;
    println!("| archive_bounds | - | {median:.2} | {p99:.2} | 2 | - |");
    storage.close().await;
    if let Some(pg) = pg {
        tokio::task::spawn_blocking(move || pg.stop())
            .await
            .unwrap()
            .expect("stop PostgreSQL");
    }
}
