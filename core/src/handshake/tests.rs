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
