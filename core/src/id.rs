//! Tunnel ids and ownership tokens.
//!
//! A [`TunnelId`] is the public name of a tunnel: the subdomain in domain mode,
//! the first path segment in path mode. The rule is the seed's: 4 to 63 bytes of
//! `a-z 0-9 -`, neither starting nor ending with `-`. Random ids are
//! `adjective-color-animal`, drawn from a caller-supplied [`Rng`].
//!
//! A [`Token`] is the secret that proves ownership of a tunnel. It is made from
//! OS entropy handed in by the adapter (never from [`Rng`]), travels as 32
//! lowercase hex digits, and is compared in constant time.

use std::fmt;

use crate::entropy::Rng;

/// Shortest valid tunnel id, in bytes.
pub const MIN_ID_LEN: usize = 4;
/// Longest valid tunnel id, in bytes (one DNS label).
pub const MAX_ID_LEN: usize = 63;

/// Why a string is not a valid tunnel id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// Fewer than 4 bytes.
    TooShort,
    /// More than 63 bytes.
    TooLong,
    /// A byte outside `a-z 0-9 -` (upper case included).
    BadChar,
    /// Starts or ends with `-`.
    EdgeHyphen,
}

impl IdError {
    /// The rule, as said to whoever sent the bad name.
    pub const RULE: &'static str = "a tunnel name is 4 to 63 characters of lowercase letters, digits and hyphens, and does not start or end with a hyphen";
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            IdError::TooShort => "too short",
            IdError::TooLong => "too long",
            IdError::BadChar => "contains a character that is not a-z, 0-9 or -",
            IdError::EdgeHyphen => "starts or ends with a hyphen",
        };
        write!(f, "invalid tunnel name ({what}): {}", Self::RULE)
    }
}

impl std::error::Error for IdError {}

/// A validated tunnel name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelId(String);

impl TunnelId {
    /// Validates `name` against the id rule.
    pub fn parse(name: &str) -> Result<Self, IdError> {
        Self::parse_bytes(name.as_bytes())
    }

    /// Validates raw bytes (from a Host header, a path or a handshake line) against the id rule.
    pub fn parse_bytes(name: &[u8]) -> Result<Self, IdError> {
        if name.len() < MIN_ID_LEN {
            return Err(IdError::TooShort);
        }
        if name.len() > MAX_ID_LEN {
            return Err(IdError::TooLong);
        }
        if !name.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(IdError::BadChar);
        }
        if name[0] == b'-' || name[name.len() - 1] == b'-' {
            return Err(IdError::EdgeHyphen);
        }
        // Every byte is ASCII, so this cannot fail; no unwrap on peer data all the same.
        String::from_utf8(name.to_vec()).map(TunnelId).map_err(|_| IdError::BadChar)
    }

    /// A random `adjective-color-animal` id.
    pub fn random(rng: &mut Rng) -> Self {
        let pick = |rng: &mut Rng, words: &[&'static str]| words[rng.below(words.len() as u64) as usize];
        let name = format!("{}-{}-{}", pick(rng, ADJECTIVES), pick(rng, COLORS), pick(rng, ANIMALS));
        debug_assert!(Self::parse(&name).is_ok(), "word lists make invalid id {name}");
        TunnelId(name)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for TunnelId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TunnelId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TunnelId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Length of a token in bytes (32 hex digits on the wire).
pub const TOKEN_LEN: usize = 16;

/// The secret that proves ownership of a tunnel.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token([u8; TOKEN_LEN]);

/// Why a string is not a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not exactly 32 digits.
    BadLength,
    /// A byte that is not a lowercase hex digit.
    BadDigit,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::BadLength => write!(f, "a tunnel token is exactly {} hex digits", TOKEN_LEN * 2),
            TokenError::BadDigit => f.write_str("a tunnel token has only the digits 0-9 and a-f"),
        }
    }
}

impl std::error::Error for TokenError {}

impl Token {
    /// A token made of these (OS-random) bytes.
    pub fn from_bytes(bytes: [u8; TOKEN_LEN]) -> Self {
        Token(bytes)
    }

    /// Parses the 32 lowercase hex digits of the wire form.
    pub fn parse(hex: &[u8]) -> Result<Self, TokenError> {
        if hex.len() != TOKEN_LEN * 2 {
            return Err(TokenError::BadLength);
        }
        let digit = |b: u8| match b {
            b'0'..=b'9' => Ok(b - b'0'),
            b'a'..=b'f' => Ok(b - b'a' + 10),
            _ => Err(TokenError::BadDigit),
        };
        let mut out = [0u8; TOKEN_LEN];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
        }
        Ok(Token(out))
    }

    /// Equality that takes the same time wherever the first difference is.
    pub fn ct_eq(&self, other: &Token) -> bool {
        let diff = self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // black_box keeps the optimiser from turning the fold back into an early-exit compare.
        std::hint::black_box(diff) == 0
    }

    /// The wire form: 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Token {
    // Secrets stay out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

impl serde::Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Token::parse(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

const ADJECTIVES: &[&str] = &[
    "able", "agile", "amber", "ample", "brave", "brisk", "calm", "candid", "clever", "cosmic", "cozy",
    "crisp", "daring", "deft", "eager", "early", "fancy", "fond", "frank", "fresh", "gentle", "glad",
    "grand", "happy", "hardy", "humble", "jolly", "keen", "kind", "lively", "lucky", "mellow", "merry",
    "mighty", "modest", "neat", "nimble", "noble", "plucky", "polite", "proud", "quick", "quiet", "rapid",
    "ready", "regal", "rustic", "shy", "silent", "sleek", "smart", "snappy", "solid", "spry", "steady",
    "sunny", "swift", "tidy", "trusty", "vivid", "warm", "wise", "witty", "zesty",
];

const COLORS: &[&str] = &[
    "amber", "aqua", "azure", "beige", "black", "blue", "bronze", "brown", "coral", "crimson", "cyan",
    "gold", "gray", "green", "indigo", "ivory", "jade", "khaki", "lemon", "lilac", "lime", "magenta",
    "maroon", "mint", "navy", "olive", "orange", "pink", "plum", "purple", "red", "ruby", "rust", "sand",
    "silver", "teal", "violet", "white", "yellow",
];

const ANIMALS: &[&str] = &[
    "badger", "beaver", "bison", "camel", "cat", "cobra", "crane", "crow", "deer", "dingo", "dog", "dolphin",
    "duck", "eagle", "eel", "falcon", "ferret", "finch", "fox", "frog", "gecko", "goat", "goose", "hare",
    "hawk", "heron", "horse", "ibex", "jackal", "koala", "lemur", "lion", "llama", "lynx", "mole", "moose",
    "newt", "otter", "owl", "panda", "parrot", "pelican", "puffin", "quail", "rabbit", "raven", "seal",
    "shark", "sloth", "snail", "swan", "tiger", "toad", "trout", "turtle", "viper", "walrus", "weasel",
    "whale", "wolf", "wombat", "yak", "zebra",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::Rng;
    use proptest::prelude::*;

    /// The seed's rule, written independently as a reference: the regex
    /// `^(?:[a-z0-9][a-z0-9\-]{1,61}[a-z0-9]|[a-z0-9]{4,63})$` plus the 4..=63 length check.
    fn seed_rule(s: &str) -> bool {
        let b = s.as_bytes();
        let inner = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let any = |c: u8| inner(c) || c == b'-';
        let alt1 = b.len() >= 3
            && b.len() <= 63
            && inner(b[0])
            && inner(b[b.len() - 1])
            && b.iter().all(|&c| any(c));
        let alt2 = (4..=63).contains(&b.len()) && b.iter().all(|&c| inner(c));
        (4..=63).contains(&b.len()) && (alt1 || alt2)
    }

    #[test]
    fn id_rule_examples() {
        assert!(TunnelId::parse("myapp").is_ok());
        assert!(TunnelId::parse("a--b").is_ok());
        assert!(TunnelId::parse(&"a".repeat(63)).is_ok());
        assert_eq!(TunnelId::parse("abc"), Err(IdError::TooShort));
        assert_eq!(TunnelId::parse(&"a".repeat(64)), Err(IdError::TooLong));
        assert_eq!(TunnelId::parse("MyApp"), Err(IdError::BadChar));
        assert_eq!(TunnelId::parse("my.app"), Err(IdError::BadChar));
        assert_eq!(TunnelId::parse("-app"), Err(IdError::EdgeHyphen));
        assert_eq!(TunnelId::parse("app-"), Err(IdError::EdgeHyphen));
        assert!(IdError::BadChar.to_string().contains("4 to 63"));
    }

    proptest! {
        #[test]
        fn id_rule_matches_the_seed(s in prop_oneof!["[a-zA-Z0-9.\\-_]{0,70}", "[a-z0-9-]{0,70}"]) {
            prop_assert_eq!(TunnelId::parse(&s).is_ok(), seed_rule(&s));
        }

        #[test]
        fn random_ids_are_valid_three_words(seed in any::<u64>()) {
            let id = TunnelId::random(&mut Rng::new(seed));
            prop_assert!(TunnelId::parse(id.as_str()).is_ok());
            prop_assert_eq!(id.as_str().split('-').count(), 3);
        }

        #[test]
        fn token_hex_round_trips(bytes in any::<[u8; TOKEN_LEN]>()) {
            let t = Token::from_bytes(bytes);
            let hex = t.to_hex();
            prop_assert_eq!(hex.len(), 32);
            let back = Token::parse(hex.as_bytes()).unwrap();
            prop_assert!(back.ct_eq(&t));
        }
    }

    #[test]
    fn token_rejects_bad_wire_forms() {
        assert_eq!(Token::parse(b"00"), Err(TokenError::BadLength));
        assert_eq!(Token::parse(&[b'A'; 32]), Err(TokenError::BadDigit));
        let a = Token::from_bytes([1; 16]);
        let mut other = [1; 16];
        other[15] = 2;
        assert!(!a.ct_eq(&Token::from_bytes(other)));
        assert_eq!(format!("{a:?}"), "Token(..)");
    }

    #[test]
    fn random_ids_vary() {
        let mut rng = Rng::new(42);
        let ids: std::collections::HashSet<_> = (0..200).map(|_| TunnelId::random(&mut rng)).collect();
        assert!(ids.len() > 190, "only {} distinct ids in 200 draws", ids.len());
    }
}
