//! Where session tasks run: one tokio runtime for all, or several
//! single-threaded runtimes ("shards"), one per core, each with its own
//! I/O driver and timer, sessions spread over them by number.
//!
//! Why shards: measured against the relay on 2 cores, a single
//! multi-threaded runtime funnels every socket readiness event through the
//! one thread that holds the I/O driver; with thousands of connections that
//! each carry a few stanzas per second (no batching per wake-up), that
//! thread, not the CPU, limits the rate. Per-core runtimes have a driver
//! each and no cross-thread wake-ups. The README has the figures.

use std::future::Future;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Shards {
    handles: Vec<Handle>,
    stops: std::sync::Mutex<Vec<oneshot::Sender<()>>>,
}

impl Shards {
    /// Starts `n` (at least 1) runtime threads.
    pub fn start(n: usize, name: &str) -> std::io::Result<Shards> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
                })?;
        }
        Ok(Shards {
            handles,
            stops: std::sync::Mutex::new(stops),
        })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Ends every shard thread (tasks still running are dropped).
    pub fn stop(&self) {
        if let Ok(mut stops) = self.stops.lock() {
            for s in stops.drain(..) {
                let _ = s.send(());
            }
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns session `i`'s task on its shard, or on the ambient runtime.
#[derive(Clone)]
pub enum Spawner {
    Ambient,
    Shards(Arc<Shards>),
}

impl Spawner {
    /// `shards` = 0: the ambient (multi-threaded) runtime; else that many
    /// single-threaded runtimes.
    pub fn new(shards: usize, name: &str) -> std::io::Result<Spawner> {
        if shards == 0 {
            Ok(Spawner::Ambient)
        } else {
            Ok(Spawner::Shards(Arc::new(Shards::start(shards, name)?)))
        }
    }

    pub fn spawn<F>(&self, i: usize, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Spawner::Ambient => tokio::spawn(future),
            Spawner::Shards(s) => match s.handles.get(i % s.handles.len().max(1)) {
                Some(h) => h.spawn(future),
                None => tokio::spawn(future),
            },
        }
    }

    pub fn stop(&self) {
        if let Spawner::Shards(s) = self {
            s.stop();
        }
    }
}

/// The default number of shards: one per available core.
pub fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_their_shard_and_report_back() {
        let spawner = Spawner::new(3, "test-shard").unwrap();
        let mut joins = Vec::new();
        for i in 0..9 {
            joins.push(spawner.spawn(i, async move {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                (i, std::thread::current().name().map(str::to_string))
            }));
        }
        for j in joins {
            let (i, name) = j.await.unwrap();
            assert_eq!(
                name.as_deref(),
                Some(format!("test-shard-{}", i % 3).as_str())
            );
        }
        spawner.stop();
        let ambient = Spawner::new(0, "x").unwrap();
        assert_eq!(ambient.spawn(0, async { 7 }).await.unwrap(), 7);
    }
}
