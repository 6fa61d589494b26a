//! Routing: what a visitor's request is for, from its Host, method and target.
//!
//! ```text
//! domain mode (--domain D)            path mode (no domain)
//!   Host <id>.D   → Proxy(id, target)   /<id>/rest    → Proxy(id, "/rest")
//!   Host D / other:                     /<id>         → Proxy(id, "/")
//!     /?new, /?new=<name> → Register    /?new, /?new=<name> → Register
//!     /<name>             → Register    /             → Landing
//!     /                   → Landing     /api/status, /api/tunnels/<id>/status
//!     /api/status, /api/tunnels/<id>/status
//! ```
//!
//! The target reaches the origin byte for byte: nothing is decoded, merged or
//! normalised; only the path-mode `/<id>` prefix (and the scheme and authority
//! of an absolute-form target) is dropped. Routing does not know which tunnels
//! exist: an unknown `<id>` is the registry's 404, not this module's.

use std::fmt;

use crate::http::Method;
use crate::http::rewrite::TargetRewrite;
use crate::id::{IdError, TunnelId};

/// How the server is addressed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteConfig {
    /// `--domain`: tunnels are `<id>.<domain>`; `None` routes by path.
    pub domain: Option<String>,
}

/// What a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Register a tunnel: a random name, or this one.
    Register {
        /// The requested name, if any.
        name: Option<TunnelId>,
    },
    /// The bare `/`: redirect to the landing page.
    Landing,
    /// `GET /api/status`.
    ServerStatus,
    /// `GET /api/tunnels/<id>/status`.
    TunnelStatus(TunnelId),
    /// Forward to a tunnel, changing the target as said.
    Proxy {
        /// The tunnel.
        tunnel: TunnelId,
        /// How the target changes on the way.
        target: TargetRewrite,
    },
}

/// Why a request has no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// A name asked for at registration breaks the id rule (403).
    InvalidName(IdError),
    /// Nothing lives at this path or host (404).
    NotFound,
    /// The server's own endpoints answer GET and HEAD only; CONNECT is not proxied (405).
    MethodNotAllowed,
}

impl RouteError {
    /// The status to answer with.
    pub fn status(self) -> u16 {
        match self {
            RouteError::InvalidName(_) => 403,
            RouteError::NotFound => 404,
            RouteError::MethodNotAllowed => 405,
        }
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::InvalidName(e) => e.fmt(f),
            RouteError::NotFound => f.write_str("no such tunnel or endpoint"),
            RouteError::MethodNotAllowed => f.write_str("method not allowed here"),
        }
    }
}

impl std::error::Error for RouteError {}

/// The host name of a Host value: port and trailing dot removed, ASCII lower-cased.
fn host_name(host: &[u8]) -> Vec<u8> {
    let host = host.trim_ascii();
    let name = if host.starts_with(b"[") {
        // An IPv6 literal: the port, if any, follows the bracket.
        host.iter().position(|&b| b == b']').map_or(host, |i| &host[..=i])
    } else {
        host.iter().rposition(|&b| b == b':').map_or(host, |i| &host[..i])
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    name.to_ascii_lowercase()
}

/// Splits an absolute-form target into its authority and how many bytes precede the path.
fn absolute_form(target: &[u8]) -> Option<(&[u8], usize)> {
    let lower = |n: usize| target.get(..n).map(<[u8]>::to_ascii_lowercase);
    let scheme = if lower(7).as_deref() == Some(b"http://") {
        7
    } else if lower(8).as_deref() == Some(b"https://") {
        8
    } else {
        return None;
    };
    let rest = &target[scheme..];
    let end = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
    Some((&rest[..end], scheme + end))
}

/// The `new` parameter of a query: `None` if absent, `Some(None)` for `new` or `new=`, else the name.
fn new_param(query: &[u8]) -> Option<Option<&[u8]>> {
    query.split(|&b| b == b'&').find_map(|pair| match pair.strip_prefix(b"new") {
        Some([]) | Some(b"=") => Some(None),
        Some([b'=', name @ ..]) => Some(Some(name)),
        _ => None,
    })
}

/// Decides what a request is for.
pub fn route(
    cfg: &RouteConfig,
    method: Method,
    host: Option<&[u8]>,
    target: &[u8],
) -> Result<Route, RouteError> {
    if method == Method::Connect {
        return Err(RouteError::MethodNotAllowed);
    }
    let (host, prefix) = match absolute_form(target) {
        Some((authority, len)) => (Some(authority), len),
        None => (host, 0),
    };
    let keep = TargetRewrite { skip: prefix, lead_slash: prefix > 0 && target.get(prefix) != Some(&b'/') };
    if let (Some(domain), Some(host)) = (&cfg.domain, host) {
        let name = host_name(host);
        if let Some(label) = name.strip_suffix(domain.as_bytes()).and_then(|l| l.strip_suffix(b".")) {
            let tunnel = TunnelId::parse_bytes(label).map_err(|_| RouteError::NotFound)?;
            return Ok(Route::Proxy { tunnel, target: keep });
        }
    }
    let rest = &target[prefix..];
    let (path, query) = match rest.iter().position(|&b| b == b'?') {
        Some(q) => (&rest[..q], Some(&rest[q + 1..])),
        None => (rest, None),
    };
    let path = if path.is_empty() { &b"/"[..] } else { path };
    // No allocation per request: the longest route has four segments, a fifth only says "longer".
    let mut parts: [&[u8]; 5] = [&[]; 5];
    let mut count = 0;
    for (slot, segment) in parts.iter_mut().zip(path.split(|&b| b == b'/').skip(1)) {
        *slot = segment;
        count += 1;
    }
    let segments = &parts[..count];
    let api = |route: Route| {
        if matches!(method, Method::Get | Method::Head) {
            Ok(route)
        } else {
            Err(RouteError::MethodNotAllowed)
        }
    };
    match segments {
        [b""] => match query.and_then(new_param) {
            Some(None) => api(Route::Register { name: None }),
            Some(Some(name)) => {
                let name = TunnelId::parse_bytes(name).map_err(RouteError::InvalidName)?;
                api(Route::Register { name: Some(name) })
            }
            None => api(Route::Landing),
        },
        [b"api", b"status"] => api(Route::ServerStatus),
        [b"api", b"tunnels", id, b"status"] => {
            let id = TunnelId::parse_bytes(id).map_err(|_| RouteError::NotFound)?;
            api(Route::TunnelStatus(id))
        }
        [first, ..] if cfg.domain.is_none() => {
            let tunnel = TunnelId::parse_bytes(first).map_err(|_| RouteError::NotFound)?;
            let skip = prefix + 1 + first.len();
            let lead_slash = target.get(skip) != Some(&b'/');
            Ok(Route::Proxy { tunnel, target: TargetRewrite { skip, lead_slash } })
        }
        [name] => {
            let name = TunnelId::parse_bytes(name).map_err(RouteError::InvalidName)?;
            api(Route::Register { name: Some(name) })
        }
        _ => Err(RouteError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn path_mode() -> RouteConfig {
        RouteConfig { domain: None }
    }

    fn domain_mode() -> RouteConfig {
        RouteConfig { domain: Some("tunnel.example.com".into()) }
    }

    fn id(s: &str) -> TunnelId {
        TunnelId::parse(s).unwrap()
    }

    fn get(cfg: &RouteConfig, host: &str, target: &str) -> Result<Route, RouteError> {
        route(cfg, Method::Get, Some(host.as_bytes()), target.as_bytes())
    }

    /// The target the origin sees after the rewrite routing chose.
    fn forwarded(target: &str, rw: TargetRewrite) -> String {
        format!("{}{}", if rw.lead_slash { "/" } else { "" }, &target[rw.skip..])
    }

    #[test]
    fn registration_forms() {
        for cfg in [path_mode(), domain_mode()] {
            assert_eq!(get(&cfg, "tunnel.example.com", "/?new"), Ok(Route::Register { name: None }));
            assert_eq!(get(&cfg, "tunnel.example.com", "/?new="), Ok(Route::Register { name: None }));
            assert_eq!(get(&cfg, "x", "/?a=1&new=myapp"), Ok(Route::Register { name: Some(id("myapp")) }));
            assert_eq!(
                get(&cfg, "x", "/?new=My_App"),
                Err(RouteError::InvalidName(IdError::BadChar)),
                "403 with the rule"
            );
            assert_eq!(get(&cfg, "x", "/?newer=1"), Ok(Route::Landing));
            assert_eq!(get(&cfg, "x", "/"), Ok(Route::Landing));
            assert_eq!(route(&cfg, Method::Other, Some(b"x"), b"/?new"), Err(RouteError::MethodNotAllowed));
        }
        // localtunnel's GET /<name> registers only in domain mode; in path mode it is a proxied path.
        assert_eq!(
            get(&domain_mode(), "tunnel.example.com", "/myapp"),
            Ok(Route::Register { name: Some(id("myapp")) })
        );
        assert_eq!(
            get(&domain_mode(), "tunnel.example.com", "/ab"),
            Err(RouteError::InvalidName(IdError::TooShort))
        );
        assert!(matches!(get(&path_mode(), "h", "/myapp"), Ok(Route::Proxy { .. })));
    }

    #[test]
    fn status_endpoints() {
        for cfg in [path_mode(), domain_mode()] {
            assert_eq!(get(&cfg, "tunnel.example.com", "/api/status"), Ok(Route::ServerStatus));
            assert_eq!(
                get(&cfg, "tunnel.example.com", "/api/tunnels/myapp/status"),
                Ok(Route::TunnelStatus(id("myapp")))
            );
            assert_eq!(get(&cfg, "tunnel.example.com", "/api/tunnels/NO/status"), Err(RouteError::NotFound));
        }
    }

    #[test]
    fn domain_routing_by_host() {
        let cfg = domain_mode();
        for host in ["myapp.tunnel.example.com", "MyApp.Tunnel.Example.com:8080", "myapp.tunnel.example.com."]
        {
            let Ok(Route::Proxy { tunnel, target }) = get(&cfg, host, "/api/status?x") else {
                panic!("{host}")
            };
            assert_eq!(tunnel, id("myapp"));
            assert_eq!(
                forwarded("/api/status?x", target),
                "/api/status?x",
                "every path on a tunnel host is proxied"
            );
        }
        assert_eq!(get(&cfg, "a.b.tunnel.example.com", "/"), Err(RouteError::NotFound));
        assert_eq!(get(&cfg, "eviltunnel.example.com", "/"), Ok(Route::Landing), "not a subdomain of D");
        assert_eq!(get(&cfg, "127.0.0.1:8080", "/api/status"), Ok(Route::ServerStatus));
        assert_eq!(get(&cfg, "[::1]:8080", "/"), Ok(Route::Landing));
    }

    #[test]
    fn path_routing_keeps_target_bytes() {
        let cfg = path_mode();
        let cases = [
            ("/myapp/a%2Fb//c/./../d?q=%2F&x", "/a%2Fb//c/./../d?q=%2F&x"),
            ("/myapp", "/"),
            ("/myapp/", "/"),
            ("/myapp?q=1", "/?q=1"),
            ("http://h/myapp/x?y", "/x?y"),
            ("HTTP://h/myapp", "/"),
        ];
        for (target, want) in cases {
            let Ok(Route::Proxy { tunnel, target: rw }) = get(&cfg, "h", target) else { panic!("{target}") };
            assert_eq!(tunnel, id("myapp"), "{target}");
            assert_eq!(forwarded(target, rw), want, "{target}");
        }
        assert_eq!(get(&cfg, "h", "/no/x"), Err(RouteError::NotFound));
        assert_eq!(get(&cfg, "h", "/favicon.ico"), Err(RouteError::NotFound));
        assert_eq!(route(&cfg, Method::Connect, Some(b"h"), b"h:443"), Err(RouteError::MethodNotAllowed));
    }

    #[test]
    fn absolute_form_host_wins_in_domain_mode() {
        let Ok(Route::Proxy { tunnel, target }) =
            get(&domain_mode(), "other", "http://myapp.tunnel.example.com/p?q")
        else {
            panic!()
        };
        assert_eq!(tunnel, id("myapp"));
        assert_eq!(forwarded("http://myapp.tunnel.example.com/p?q", target), "/p?q");
    }

    proptest! {
        /// Path mode: whatever follows `/<id>` reaches the origin unchanged.
        #[test]
        fn path_mode_forwards_rest_verbatim(rest in "([/?][!-~]{0,40})?") {
            let target = format!("/myapp{rest}");
            let Ok(Route::Proxy { tunnel, target: rw }) = get(&path_mode(), "h", &target) else { panic!("{target}") };
            prop_assert_eq!(tunnel, id("myapp"));
            let want = if rest.is_empty() || rest.starts_with('?') { format!("/{rest}") } else { rest.clone() };
            prop_assert_eq!(forwarded(&target, rw), want);
        }

        /// Routing is total on noise, and in path mode a target `/<name><rest>` whose name is a valid id
        /// is proxied to that tunnel with `<rest>` forwarded byte for byte (`/` when empty), SPEC §5.
        #[test]
        fn total_on_noise(
            host in proptest::collection::vec(any::<u8>(), 0..40),
            noise in proptest::collection::vec(any::<u8>(), 0..60),
            name in prop_oneof!["[a-z0-9]{4,12}", "[a-z0-9-]{0,66}"],
            rest in proptest::collection::vec(any::<u8>(), 0..40),
            sep in prop_oneof![Just(None), Just(Some(b'/')), Just(Some(b'?'))],
            shape in 0..3u8,
            domain in any::<bool>(),
        ) {
            let cfg = if domain { domain_mode() } else { path_mode() };
            // Mostly `/<name>[/?]<rest>`, sometimes raw noise.
            let rest: Vec<u8> = match sep { Some(s) => [&[s][..], &rest].concat(), None => Vec::new() };
            let target = if shape == 0 { noise } else { [b"/", name.as_bytes(), &rest].concat() };
            let got = route(&cfg, Method::Get, Some(&host), &target);
            if let Ok(Route::Proxy { target: rw, .. }) = &got {
                prop_assert!(rw.skip <= target.len());
            }
            if shape != 0 && !domain {
                match TunnelId::parse(&name) {
                    Ok(want) => {
                        let Ok(Route::Proxy { tunnel, target: rw }) = got else {
                            return Err(TestCaseError::fail(format!("{target:?} not proxied: {got:?}")));
                        };
                        prop_assert_eq!(tunnel, want);
                        let sent = [if rw.lead_slash { &b"/"[..] } else { b"" }, &target[rw.skip..]].concat();
                        let expected = if rest.first() == Some(&b'/') { rest.clone() } else { [b"/", &rest[..]].concat() };
                        prop_assert_eq!(sent, expected);
                    }
                    Err(_) => prop_assert!(!matches!(got, Ok(Route::Proxy { .. })), "invalid name proxied"),
                }
            }
        }
    }
}
