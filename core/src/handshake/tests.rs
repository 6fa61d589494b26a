use super::*;
use proptest::prelude::*;

fn token() -> Token {
    Token::from_bytes([0xab; 16])
}

fn decode_split(
    input: &[u8],
    cuts: &[usize],
    legacy: bool,
) -> (Result<Option<Hello>, HandshakeError>, BytesMut) {
    let mut dec = HelloDecoder::new(Instant::now(), &Limits::default(), legacy);
    let mut buf = BytesMut::new();
    let mut last = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(last, input.len());
        buf.extend_from_slice(&input[last..cut]);
        last = cut;
        match dec.decode(&mut buf) {
            Ok(None) => continue,
            other => {
                buf.extend_from_slice(&input[last..]);
                return (other, buf);
            }
        }
    }
    (Ok(None), buf)
}

#[test]
fn hello_round_trip_keeps_trailing_bytes() {
    let hello = Hello { id: TunnelId::parse("happy-blue-tiger").unwrap(), token: Some(token()) };
    let mut wire = BytesMut::new();
    encode_hello(&hello, &mut wire);
    wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let (got, rest) = decode_split(&wire, &[], false);
    assert_eq!(got, Ok(Some(hello)));
    assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n");
}

#[test]
fn bare_id_only_in_legacy_mode() {
    assert_eq!(decode_split(b"myapp\n", &[], false).0, Err(HandshakeError::MissingToken));
    let (got, _) = decode_split(b"myapp\r\n", &[], true);
    assert_eq!(got, Ok(Some(Hello { id: TunnelId::parse("myapp").unwrap(), token: None })));
}

#[test]
fn malformed_lines() {
    let t = token().to_hex();
    assert_eq!(
        decode_split(format!("myapp {t} x\n").as_bytes(), &[], false).0,
        Err(HandshakeError::Malformed)
    );
    assert_eq!(decode_split(b"My-App\n", &[], true).0, Err(HandshakeError::BadId(IdError::BadChar)));
    assert_eq!(
        decode_split(b"myapp zz\n", &[], false).0,
        Err(HandshakeError::BadToken(TokenError::BadLength))
    );
    assert_eq!(decode_split(b"\n", &[], true).0, Err(HandshakeError::BadId(IdError::TooShort)));
}

#[test]
fn only_a_missing_or_broken_token_gets_a_verdict() {
    let bad = Some(Verdict::BadToken);
    for e in [
        HandshakeError::MissingToken,
        HandshakeError::BadToken(TokenError::BadLength),
        HandshakeError::BadToken(TokenError::BadDigit),
    ] {
        assert_eq!(e.verdict(), bad, "{e:?}");
    }
    for e in [
        HandshakeError::TooLong,
        HandshakeError::TimedOut,
        HandshakeError::Malformed,
        HandshakeError::BadId(IdError::TooShort),
        HandshakeError::UnknownVerdict,
    ] {
        assert_eq!(e.verdict(), None, "{e:?}");
    }
}

#[test]
fn too_long_without_newline_and_with() {
    assert_eq!(decode_split(&[b'a'; 256], &[100, 200], false).0, Err(HandshakeError::TooLong));
    let mut long = vec![b'a'; 300];
    long.push(b'\n');
    assert_eq!(decode_split(&long, &[], false).0, Err(HandshakeError::TooLong));
    // 255 bytes plus newline is exactly the limit: it is read as a line (and fails the id rule).
    let mut edge = vec![b'a'; 255];
    edge.push(b'\n');
    assert_eq!(decode_split(&edge, &[], true).0, Err(HandshakeError::BadId(IdError::TooLong)));
}

#[test]
fn deadline_from_limits() {
    let now = Instant::now();
    let dec = HelloDecoder::new(now, &Limits::default(), false);
    assert_eq!(dec.deadline(), Some(now + Limits::default().handshake_timeout));
    assert_eq!(dec.check_deadline(now), Ok(()));
    assert_eq!(dec.check_deadline(now + Limits::default().handshake_timeout), Err(HandshakeError::TimedOut));
}

#[test]
fn verdicts_round_trip() {
    for v in [Verdict::Accepted, Verdict::UnknownTunnel, Verdict::BadToken, Verdict::Full] {
        let mut wire = BytesMut::new();
        encode_verdict(v, &mut wire);
        wire.extend_from_slice(b"HTTP");
        let mut dec = VerdictDecoder::new(&Limits::default());
        assert_eq!(dec.decode(&mut wire), Ok(Some(v)));
        assert_eq!(&wire[..], b"HTTP");
    }
    let mut dec = VerdictDecoder::new(&Limits::default());
    assert_eq!(
        dec.decode(&mut BytesMut::from(&b"rejected maybe\n"[..])),
        Err(HandshakeError::UnknownVerdict)
    );
}

#[test]
fn each_error_message_names_its_problem() {
    let (id, token) = (IdError::TooShort, TokenError::BadLength);
    let (id_says, token_says) = (id.to_string(), token.to_string());
    let cases = [
        (HandshakeError::TooLong, vec!["handshake", "too long"]),
        (HandshakeError::TimedOut, vec!["handshake", "deadline"]),
        (HandshakeError::Malformed, vec!["handshake", "<id> <token>"]),
        (HandshakeError::BadId(id), vec!["handshake", &id_says]),
        (HandshakeError::BadToken(token), vec!["handshake", &token_says]),
        (HandshakeError::MissingToken, vec!["handshake", "no token", "legacy"]),
        (HandshakeError::UnknownVerdict, vec!["verdict"]),
    ];
    let mut said = std::collections::HashSet::new();
    for (err, words) in &cases {
        let text = err.to_string();
        for word in words {
            assert!(text.contains(word), "{err:?} says {text:?}, which does not name {word:?}");
        }
        assert!(said.insert(text.clone()), "two errors read the same: {text:?}");
    }
    // The id and token messages carry the rule that was broken.
    assert!(HandshakeError::BadId(IdError::BadChar).to_string().contains("a-z, 0-9 or -"));
    assert!(HandshakeError::BadToken(TokenError::BadLength).to_string().contains("32 hex digits"));
}

/// Valid tunnel ids (4 to 63 of `a-z 0-9 -`, no hyphen at either end, per SPEC §3).
fn any_id() -> impl Strategy<Value = TunnelId> {
    "[a-z0-9][a-z0-9-]{2,61}[a-z0-9]"
        .prop_map(|s| TunnelId::parse(&s).expect("the generator follows the rule"))
}

proptest! {
    #[test]
    fn any_hello_survives_encoding_whatever_the_pieces(
        id in any_id(),
        token in proptest::option::of(any::<[u8; 16]>().prop_map(Token::from_bytes)),
        crlf in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
        mut cuts in proptest::collection::vec(0usize..120, 0..8),
        bytewise in any::<bool>(),
    ) {
        let hello = Hello { id, token };
        let mut wire = BytesMut::new();
        encode_hello(&hello, &mut wire);
        let line = wire.len();
        prop_assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1, "one line, ending in a newline");
        if crlf {
            // A client that ends its line with CRLF is read the same.
            wire.truncate(line - 1);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(&tail);
        if bytewise {
            cuts = (0..wire.len()).collect();
        }
        cuts.sort_unstable();
        let (got, rest) = decode_split(&wire, &cuts, true);
        prop_assert_eq!(got, Ok(Some(hello.clone())));
        prop_assert_eq!(&rest[..], &tail[..], "every byte after the line is left for the tunnel");
        // Without legacy handshakes a tokenless line is refused; a line with a token reads the same.
        let (strict, _) = decode_split(&wire, &cuts, false);
        match hello.token {
            Some(_) => prop_assert_eq!(strict, Ok(Some(hello))),
            None => prop_assert_eq!(strict, Err(HandshakeError::MissingToken)),
        }
    }
}

proptest! {
    #[test]
    fn result_does_not_depend_on_splits(
        line in prop_oneof![
            Just(format!("happy-blue-tiger {}\n", Token::from_bytes([7; 16]))),
            Just("legacy-id\n".to_string()),
            "[a-z0-9 \\-]{0,300}\n?",
        ],
        tail in proptest::collection::vec(any::<u8>(), 0..40),
        mut cuts in proptest::collection::vec(0usize..400, 0..8),
        legacy in any::<bool>(),
    ) {
        cuts.sort_unstable();
        let mut input = line.into_bytes();
        input.extend_from_slice(&tail);
        let whole = decode_split(&input, &[], legacy);
        let split = decode_split(&input, &cuts, legacy);
        prop_assert_eq!(&whole.0, &split.0);
        if matches!(whole.0, Ok(Some(_))) {
            // Exactly the bytes after the first newline are left for the tunnel.
            let nl = input.iter().position(|&b| b == b'\n').unwrap();
            prop_assert_eq!(&whole.1[..], &input[nl + 1..]);
            prop_assert_eq!(&split.1[..], &input[nl + 1..]);
        }
    }
}
