//! Graceful shutdown: one [`Shutdown`] tells every listener and connection
//! to drain and waits for them, each holding a [`Drain`].

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Tells every listener and connection to drain, and waits for them.
pub struct Shutdown {
    signal: watch::Sender<bool>,
    alive: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
}

/// A listener's or connection's view of [`Shutdown`]: holding one keeps
/// the drain waiting, so it is dropped when the work it guards ends.
#[derive(Clone)]
pub struct Drain {
    signal: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (signal, _) = watch::channel(false);
        let (alive, done) = mpsc::channel(1);
        Self {
            signal,
            alive,
            done,
        }
    }
}

impl Shutdown {
    pub fn drain_handle(&self) -> Drain {
        Drain {
            signal: self.signal.subscribe(),
            _alive: self.alive.clone(),
        }
    }

    /// Stops every accept loop, asks HTTP connections to finish their
    /// requests and close, and waits up to `grace` for every [`Drain`] to
    /// be dropped. True when everything ended in time.
    pub async fn drain(self, grace: Duration) -> bool {
        let Shutdown {
            signal,
            alive,
            mut done,
        } = self;
        signal.send_replace(true);
        drop(alive);
        // `recv` yields `None` once every sender (every Drain) is gone.
        tokio::time::timeout(grace, done.recv()).await.is_ok()
    }
}

impl Drain {
    /// Completes once draining has started; never if the [`Shutdown`] was
    /// dropped without draining.
    pub async fn signaled(&self) {
        let mut rx = self.signal.clone();
        if rx.wait_for(|draining| *draining).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }
}
