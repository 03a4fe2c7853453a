//! Live delivery inside one MAX instance: a post wakes the open streams of its chat at once, an
//! unlink ends the streams of the account at once. Other instances notice the same changes through
//! the database within [`POLL`], so the hub is an accelerator, never the source of truth.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// How often an open stream re-reads the database when nothing woke it.
pub const POLL: Duration = Duration::from_secs(2);

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message was posted to a chat.
    Posted(Arc<str>),
    /// An account left chats (unlink): its streams re-check membership.
    Left(Arc<str>),
    /// The instance is stopping: streams close (without `end`, so browsers reconnect elsewhere).
    Shutdown,
}

/// The in-process event bus.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: broadcast::Sender<Event>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Hub {
    fn default() -> Self {
        Self { tx: broadcast::channel(1024).0, stopping: Arc::default() }
    }
}

impl Hub {
    /// Tells the open streams.
    pub fn publish(&self, event: Event) {
        // No subscriber is fine: nobody is watching.
        let _ = self.tx.send(event);
    }

    /// Ends every open stream: a graceful shutdown would otherwise wait for them forever.
    pub fn shut_down(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        self.publish(Event::Shutdown);
    }

    /// True once [`Hub::shut_down`] was called.
    pub fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A new receiver.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
