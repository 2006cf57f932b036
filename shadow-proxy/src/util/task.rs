//! One shape for every background loop (in the manner of pingora's
//! `BackgroundService`): a [`Task`] is started once with the agent's
//! [`Shutdown`] and stops soon after it fires. The agent starts and stops
//! them all in one place (`crate::agent::tasks`).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::sync::watch;

/// The agent's stop signal, cloned into every task.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A signal and the sender that fires it.
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the signal fires (or its sender is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.0.clone()
    }

    /// A flag for plain threads that poll a bool between steps; set from a
    /// small task on the current runtime when the signal fires.
    pub fn flag(&self) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(self.is_set()));
        let (mut me, set) = (self.clone(), flag.clone());
        tokio::spawn(async move {
            me.wait().await;
            set.store(true, Ordering::Relaxed);
        });
        flag
    }
}

/// How a started task is waited for at shutdown.
#[derive(Debug)]
pub enum Running {
    Thread(std::thread::JoinHandle<()>),
    Async(tokio::task::JoinHandle<()>),
    /// Left to the process exit (a model fit cannot be interrupted; its
    /// output only replaces the old one by a rename).
    Detached,
}

/// A background loop.
pub trait Task: Send {
    /// Its name in logs.
    fn name(&self) -> &'static str;

    /// Starts the loop; it must return soon after `shutdown` fires.
    fn start(self: Box<Self>, shutdown: Shutdown) -> std::io::Result<Running>;
}
