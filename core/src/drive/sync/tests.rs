use std::future::{Future, pending, ready};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use super::*;
use crate::drive::testrt::poll_once;

#[test]
fn a_bell_rung_before_the_wait_is_kept_once() {
    let bell = Bell::default();
    bell.ring();
    bell.ring();
    let mut wait = Box::pin(bell.rung());
    assert!(poll_once(&mut wait).0.is_ready(), "the permit was kept");
    drop(wait);
    let mut again = Box::pin(bell.rung());
    assert!(poll_once(&mut again).0.is_pending(), "two rings are one permit");
}

#[test]
fn a_bell_wakes_its_waiter() {
    let bell = Bell::default();
    let mut wait = Box::pin(bell.rung());
    let (poll, woken) = poll_once(&mut wait);
    assert!(poll.is_pending() && !woken.woken());
    bell.ring();
    assert!(woken.woken(), "the ring woke the waiting task");
    assert!(poll_once(&mut wait).0.is_ready());
}

#[test]
fn a_oneshot_delivers_its_value_and_wakes() {
    let (tx, mut rx) = oneshot();
    let (poll, woken) = poll_once(&mut rx);
    assert!(poll.is_pending());
    assert!(tx.send(5).is_ok());
    assert!(woken.woken());
    assert_eq!(poll_once(&mut rx).0, Poll::Ready(Some(5)));
}

#[test]
fn a_sender_dropped_unsent_is_seen_as_none() {
    let (tx, mut rx) = oneshot::<u8>();
    let (_, woken) = poll_once(&mut rx);
    drop(tx);
    assert!(woken.woken(), "the receiver is woken when its sender goes");
    assert_eq!(poll_once(&mut rx).0, Poll::Ready(None));
}

#[test]
fn closing_a_receiver_returns_a_value_that_raced_in_and_refuses_later_ones() {
    let (tx, mut rx) = oneshot();
    assert!(tx.send(1).is_ok());
    assert_eq!(rx.close(), Some(1), "a value sent before the close is handed back");
    let (tx, mut rx) = oneshot();
    assert_eq!(rx.close(), None);
    assert_eq!(tx.send(2), Err(2), "a closed receiver takes nothing");
    let (tx, rx) = oneshot();
    drop(rx);
    assert_eq!(tx.send(3), Err(3), "nor does a dropped one");
}

#[test]
fn a_mailbox_delivers_in_order_from_any_sender() {
    let mailbox = Mailbox::default();
    let other = mailbox.clone();
    let mut first = Box::pin(mailbox.recv());
    let (poll, woken) = poll_once(&mut first);
    assert!(poll.is_pending());
    other.send(1);
    assert!(woken.woken());
    mailbox.send(2);
    assert_eq!(poll_once(&mut first).0, Poll::Ready(1));
    assert_eq!(poll_once(&mut Box::pin(mailbox.recv())).0, Poll::Ready(2));
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn an_aborted_task_ends_at_its_next_poll_and_drops_what_it_holds() {
    let dropped = Arc::new(AtomicBool::new(false));
    let held = DropFlag(dropped.clone());
    let (abort, task) = abortable(async move {
        let _held = held;
        pending::<()>().await;
    });
    let mut task = Box::pin(task);
    let (poll, woken) = poll_once(&mut task);
    assert!(poll.is_pending() && !dropped.load(Ordering::SeqCst));
    abort.abort();
    assert!(woken.woken(), "aborting wakes the task");
    assert!(poll_once(&mut task).0.is_ready());
    assert!(dropped.load(Ordering::SeqCst), "what the task held is dropped with it");
}

#[test]
fn an_abort_handle_dropped_lets_the_task_run() {
    let (abort, task) = abortable(ready(()));
    drop(abort);
    assert!(poll_once(&mut Box::pin(task)).0.is_ready());
}

#[test]
fn select_biased_prefers_the_first_when_both_are_ready() {
    let mut both = Box::pin(select_biased(ready(1), ready(2)));
    assert_eq!(poll_once(&mut both).0, Poll::Ready(Either::First(1)));
    let mut second = Box::pin(select_biased(pending::<u8>(), ready(2)));
    assert_eq!(poll_once(&mut second).0, Poll::Ready(Either::Second(2)));
    let mut neither = pin!(select_biased(pending::<u8>(), pending::<u8>()));
    let waker = std::task::Waker::noop();
    assert!(neither.as_mut().poll(&mut std::task::Context::from_waker(waker)).is_pending());
}
