//! The end-to-end suite: every case below runs once per runtime pairing, as
//! `<server runtime>_<client runtime>::<group>::<case>` (e.g.
//! `cargo test -p aether-tests tokio_smol::forwarding`).

mod boundaries;
mod client_modes;
mod common;
mod expect;
mod forwarding;
mod halfclose;
mod leaving;
mod limits;
mod origin_faults;
mod parking;
mod protocol;
mod registration;
mod requests;
mod resilience;
mod routing;
mod security;
mod streaming;

/// One `#[test]` per case of each group, under one pairing.
macro_rules! suite {
    ($pair:ident; $($group:ident { $($case:ident),* $(,)? })*) => {
        $(
            mod $group {
                $(
                    #[test]
                    fn $case() {
                        aether_tests::run(aether_tests::Pair::$pair, crate::$group::$case)
                    }
                )*
            }
        )*
    };
}

/// The whole suite, once per pairing of server runtime and client runtime.
macro_rules! all_pairings {
    ($($body:tt)*) => {
        mod tokio_tokio { suite!(TT; $($body)*); }
        mod tokio_smol { suite!(TS; $($body)*); }
        mod smol_tokio { suite!(ST; $($body)*); }
        mod smol_smol { suite!(SS; $($body)*); }
    };
}

all_pairings! {
    halfclose {
        one_by_one, at_once, after_keep_alive_and_body, upgraded_visitor_half_closes,
        upgraded_origin_half_closes,
    }
    parking { client_parks_on_full }
    requests {
        origin_keep_alive_reused, connect_405, pipelined_smuggle, second_request_408, expect_on_refused,
    }
    boundaries { request_line, head_bytes, header_count, queue_length, handshake_line, offline_grace }
    origin_faults {
        extra_bytes_after_response, cl_and_te_response, oversized_response_head, unsolicited_101,
        upgrade_declined,
    }
    client_modes { legacy_client, tokenless_server }
    expect { origin_answers_early, origin_sends_no_continue, http10_expect }
    leaving {
        while_queued, between_grant_and_delivery, mid_request, mid_response, rest_drained, rest_over_budget,
        rest_too_slow, queued_behind_a_leaver,
    }
    registration { random_name, named, invalid_names, taken_while_connected }
    forwarding {
        methods_and_bodies, chunked_forwarded_as_received, target_byte_for_byte, forwarded_headers,
        head_204_304_chunked_close, http10_visitor, keep_alive_100_sequential, pipelined,
        concurrent_200, expect_continue,
    }
    streaming {
        large_upload_and_download, sse_arrives_incrementally, upgrade_echo_beside_requests,
        upgrade_refills_pool,
    }
    resilience {
        origin_down_502, client_killed, visitors_answered_when_client_dies, visitors_abandon_midway,
        server_restarted, kept_origin_closed_silently,
    }
    routing { path_mode_and_status, domain_mode, secure_mode }
    security { handshake_needs_the_token, silent_and_long_handshakes_closed }
    protocol { hand_driven_tunnel, broken_responses, legacy_handshake, tunnel_limit }
    limits {
        ambiguous_heads_refused, bad_chunks_refused, oversize_heads, head_timeout_408,
        queue_timeout_504, queue_full_503, abandoned_waiter_leaves_the_queue,
    }
}
