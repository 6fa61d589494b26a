use super::*;
use crate::drive::testrt::{TestRt, pair};

#[test]
fn an_idle_line_holds_a_small_future_and_a_visitor_a_bounded_one() {
    let rt = TestRt::new();
    let shared = Arc::new(Shared::new(rt.clone(), &ServeOptions::default(), 1, String::new(), |_| {}));
    let ((a, _), (b, _)) = (pair(), pair());
    let line = line(a, shared.clone());
    let visitor = visitor(b, SocketAddr::from(([127, 0, 0, 1], 1)), shared);
    // Every idle tunnel connection holds one line future: 10 per tunnel, thousands of tunnels.
    assert!(size_of_val(&line) <= 256, "line future: {} bytes", size_of_val(&line));
    assert!(size_of_val(&visitor) <= 3072, "visitor future: {} bytes", size_of_val(&visitor));
}
