//! Wake-ups between the driver's tasks, written once with a std `Mutex` and a `Waker`.
//!
//! A [`Bell`] (one waiter, one stored permit) wakes an idle tunnel connection or the hub's timer
//! loop; a [`oneshot`] carries one value (a verdict, a lease, a returned connection) and says when
//! its sender went without sending; a [`Mailbox`] queues the client tasks' inputs for the
//! supervisor loop; an [`Abort`] ends an [`abortable`] task at its next poll; [`select_biased`]
//! waits for the first of two futures, the first one winning a tie. They know nothing of
//! runtimes, sockets or time.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Locks `m`; a panic elsewhere must not take every task down with a poisoned lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps `cx`'s waker in `slot`, cloning only when it changed.
fn keep(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// One waiter, one permit: a ring with nobody waiting is kept until the next wait.
#[derive(Debug, Default)]
pub struct Bell(Mutex<(bool, Option<Waker>)>);

impl Bell {
    /// Wakes the waiter, or leaves a permit for the next wait (rings do not add up).
    pub fn ring(&self) {
        let waker = {
            let mut s = lock(&self.0);
            s.0 = true;
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ready (taking the permit) once the bell rang.
    pub fn poll_rung(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = lock(&self.0);
        if std::mem::take(&mut s.0) {
            return Poll::Ready(());
        }
        keep(&mut s.1, cx);
        Poll::Pending
    }

    /// Completes once the bell rang.
    pub async fn rung(&self) {
        poll_fn(|cx| self.poll_rung(cx)).await
    }
}

#[derive(Debug)]
struct One<T> {
    value: Option<T>,
    /// The sender sent or went.
    done: bool,
    /// The receiver closed or went: nothing more is taken.
    closed: bool,
    waker: Option<Waker>,
}

/// A one-value channel: see [`Sender`] and [`Receiver`].
pub fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let one = Arc::new(Mutex::new(One { value: None, done: false, closed: false, waker: None }));
    (Sender(one.clone()), Receiver(one))
}

/// Sends the one value; dropping it unsent makes the receiver see `None`.
#[derive(Debug)]
pub struct Sender<T>(Arc<Mutex<One<T>>>);

impl<T> Sender<T> {
    /// Hands `value` over; gives it back if the receiver closed or went.
    pub fn send(self, value: T) -> Result<(), T> {
        let waker = {
            let mut one = lock(&self.0);
            if one.closed {
                return Err(value);
            }
            one.value = Some(value);
            one.done = true;
            one.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut one = lock(&self.0);
            one.done = true;
            one.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Waits for the one value: `Some` once sent, `None` if the sender went without sending.
#[derive(Debug)]
pub struct Receiver<T>(Arc<Mutex<One<T>>>);

impl<T> Receiver<T> {
    /// Refuses any later send, and returns a value that was sent before (it raced in).
    pub fn close(&mut self) -> Option<T> {
        let mut one = lock(&self.0);
        one.closed = true;
        one.value.take()
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut one = lock(&self.0);
        if let Some(v) = one.value.take() {
            return Poll::Ready(Some(v));
        }
        if one.done || one.closed {
            return Poll::Ready(None);
        }
        keep(&mut one.waker, cx);
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // A value that raced in is dropped outside the lock (it may be a socket).
        let raced = self.close();
        drop(raced);
    }
}

/// Many senders, one receiver, unbounded: the client tasks' inputs to the supervisor loop.
#[derive(Debug)]
pub struct Mailbox<T>(Arc<Mutex<(VecDeque<T>, Option<Waker>)>>);

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new((VecDeque::new(), None))))
    }
}

impl<T> Mailbox<T> {
    /// Queues `value` and wakes the receiver.
    pub fn send(&self, value: T) {
        let waker = {
            let mut m = lock(&self.0);
            m.0.push_back(value);
            m.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The oldest value, once there is one.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<T> {
        let mut m = lock(&self.0);
        match m.0.pop_front() {
            Some(v) => Poll::Ready(v),
            None => {
                keep(&mut m.1, cx);
                Poll::Pending
            }
        }
    }

    /// Completes with the oldest value.
    pub async fn recv(&self) -> T {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
}

/// Ends an [`abortable`] task; dropping it lets the task run on.
#[derive(Debug, Clone)]
pub struct Abort(Arc<Bell>);

impl Abort {
    /// The task ends at its next poll, dropping what it holds.
    pub fn abort(&self) {
        self.0.ring();
    }
}

/// `task`, made to end early (dropping it) once its [`Abort`] is used.
pub fn abortable<F: Future<Output = ()>>(task: F) -> (Abort, impl Future<Output = ()>) {
    let bell = Arc::new(Bell::default());
    let abort = Abort(bell.clone());
    // The abort first: an aborted task does not take one more step.
    (abort, async move {
        let _ = select_biased(bell.rung(), task).await;
    })
}

/// Which of two futures completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first.
    First(A),
    /// The second.
    Second(B),
}

/// Waits for the first of `a` and `b` to complete, polling `a` first; the other is dropped.
pub async fn select_biased<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let (mut a, mut b) = (pin!(a), pin!(b));
    poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::First(v));
        }
        b.as_mut().poll(cx).map(Either::Second)
    })
    .await
}

#[cfg(test)]
mod tests;
