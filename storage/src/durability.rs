//! Group commit. Writers apply their batch and take a sequence number; one
//! flusher thread fsyncs and publishes the highest sequence number that is
//! now durable. Every writer that committed before a flush started is
//! released by that flush, so under load one fsync acknowledges many writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::StorageError;
use crate::backend::Backend;

/// What the flusher has made durable so far.
#[derive(Clone, Debug, Default)]
pub(crate) struct Flushed {
    pub(crate) seq: u64,
    /// Set once a flush has failed; it never clears (see `Poisoned`).
    pub(crate) failure: Option<Arc<str>>,
}

/// Run by the flusher after each flush with the sequence number it made
/// durable, once nothing more was committed for [`LINGER`]; the store uses
/// it to give back a shared engine's writer lease.
pub(crate) type AfterFlush = Box<dyn Fn(&Durability, u64) + Send + Sync>;

/// How long the flusher waits for more commits before it runs the
/// after-flush hook. Giving the writer lease back and taking it again costs
/// two database round trips, which a host writing one change after another
/// (sign-ins) paid for every change; another host that wants the lease waits
/// at most this much longer for it.
pub(crate) const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

pub(crate) struct Durability {
    committed: AtomicU64,
    after_flush: Option<AfterFlush>,
    flushed: watch::Sender<Flushed>,
    wake: Mutex<bool>,
    wake_cv: Condvar,
    shutdown: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Durability {
    pub(crate) fn start(backend: Arc<dyn Backend>, after_flush: Option<AfterFlush>) -> Arc<Self> {
        let (tx, _) = watch::channel(Flushed::default());
        let d = Arc::new(Durability {
            committed: AtomicU64::new(0),
            after_flush,
            flushed: tx,
            wake: Mutex::new(false),
            wake_cv: Condvar::new(),
            shutdown: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let worker = Arc::clone(&d);
        let handle = std::thread::Builder::new()
            .name("cohort-flusher".into())
            .spawn(move || worker.run(backend))
            .expect("spawning the flusher thread");
        *d.thread.lock() = Some(handle);
        d
    }

    /// Records one more applied batch and wakes the flusher. Called with the
    /// store's writer lock held, so sequence numbers follow commit order.
    pub(crate) fn committed(&self) -> u64 {
        let seq = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        let mut pending = self.wake.lock();
        *pending = true;
        self.wake_cv.notify_one();
        seq
    }

    /// The highest sequence number handed out so far.
    pub(crate) fn last_committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// The highest sequence number made durable so far.
    pub(crate) fn last_flushed(&self) -> u64 {
        self.flushed.borrow().seq
    }

    pub(crate) fn failure(&self) -> Option<Arc<str>> {
        self.flushed.borrow().failure.clone()
    }

    /// Resolves once `seq` is durable, or with the flush error that prevents it.
    pub(crate) async fn wait(&self, seq: u64) -> Result<(), StorageError> {
        let mut rx = self.flushed.subscribe();
        let state = rx
            .wait_for(|f| f.seq >= seq || f.failure.is_some())
            .await
            .map_err(|_| StorageError::Poisoned("the flusher stopped".into()))?;
        match &state.failure {
            Some(msg) if state.seq < seq => Err(StorageError::Poisoned(msg.to_string())),
            _ => Ok(()),
        }
    }

    fn run(&self, backend: Arc<dyn Backend>) {
        loop {
            {
                let mut pending = self.wake.lock();
                while !*pending && !self.shutdown.load(Ordering::SeqCst) {
                    self.wake_cv.wait(&mut pending);
                }
                *pending = false;
            }
            // Everything committed before this load is covered by the flush.
            let target = self.committed.load(Ordering::SeqCst);
            let already = self.flushed.borrow().seq;
            if target > already {
                match backend.flush() {
                    Ok(()) => {
                        self.flushed.send_modify(|f| f.seq = target);
                        if let Some(hook) = &self.after_flush {
                            let mut pending = self.wake.lock();
                            self.wake_cv.wait_while_for(
                                &mut pending,
                                |p| !*p && !self.shutdown.load(Ordering::SeqCst),
                                LINGER,
                            );
                            let more = *pending;
                            drop(pending);
                            // More commits: the next flush runs the hook.
                            if !more {
                                hook(self, target);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "flush to stable storage failed; refusing further writes");
                        self.flushed
                            .send_modify(|f| f.failure = Some(Arc::from(e.to_string())));
                        // This process writes no more, so the hosts that
                        // share the engine must not wait for it: give the
                        // writer lease back (what never reached the engine
                        // was never acknowledged).
                        if backend.shared()
                            && let Err(e) = backend.release_writer()
                        {
                            tracing::warn!(error = %e, "giving back the writer lease failed");
                        }
                        return;
                    }
                }
            }
            if self.shutdown.load(Ordering::SeqCst)
                && self.committed.load(Ordering::SeqCst) <= target
            {
                return;
            }
        }
    }

    /// Flushes what is pending and stops the flusher thread.
    pub(crate) fn stop(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        {
            let _pending = self.wake.lock();
            self.wake_cv.notify_one();
        }
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
    }
}
