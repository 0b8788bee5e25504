//! The token format's unit tests.
use super::*;

fn issue(prefix: &str) -> SecretToken {
    let f = TokenFormat::new(prefix).expect("valid prefix");
    f.generate(KeyId::random().expect("entropy"))
        .expect("entropy")
}

#[test]
fn the_one_block_hash_is_sha256() {
    let input: Vec<u8> = (0..=80u8).map(|i| b'A' + i % 50).collect();
    for len in 0..=input.len() {
        let ours = KeyHash::of(&input[..len]);
        let theirs: [u8; 32] = Sha256::digest(&input[..len]).into();
        assert_eq!(ours.as_bytes(), &theirs, "length {len}");
    }
}

#[test]
fn a_block_proves_its_hash_and_no_other() {
    let token = issue("sk");
    let token = token.expose_secret().as_bytes();
    let hash = KeyHash::of(token);
    let block = |t: &[u8]| {
        let mut b = [0u8; 64];
        assert!(KeyHash::pad(t, &mut b), "fits");
        b
    };
    let mut b = block(token);
    assert!(hash.proven_by(&mut b));
    assert_eq!(b, [0u8; 64], "scrubbed");
    for i in 0..32 {
        for bit in 0..8 {
            let mut other = *hash.as_bytes();
            other[i] ^= 1 << bit;
            let other = KeyHash::from_bytes(other);
            assert!(!other.proven_by(&mut block(token)), "byte {i} bit {bit}");
        }
    }
}

#[test]
fn constant_time_compare_sees_every_byte() {
    let a = KeyHash::of(b"sk_test");
    assert!(a.ct_eq(&a));
    for i in 0..32 {
        for bit in 0..8 {
            let mut b = *a.as_bytes();
            b[i] ^= 1 << bit;
            assert!(!a.ct_eq(&KeyHash::from_bytes(b)), "byte {i} bit {bit}");
        }
    }
}

#[test]
fn checksum_check_agrees_with_checksum() {
    for n in 0..2_000u32 {
        let signed = format!("sk_{n:08}_abc");
        let sum = checksum(signed.as_bytes());
        assert!(checksum_matches(signed.as_bytes(), &sum));
        let mut other = sum;
        other[5] = if other[5] == b'0' { b'1' } else { b'0' };
        assert!(!checksum_matches(signed.as_bytes(), &other));
    }
}

#[test]
fn default_token_has_the_documented_shape() {
    let t = issue("sk");
    let s = t.expose_secret();
    assert_eq!(s.len(), 44);
    assert!(s.starts_with("sk_"));
    assert_eq!(&s[11..12], "_");
    assert!(s[3..11].bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(s[12..].bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(t.display_prefix().as_str(), &s[..12]);
}

#[test]
fn issued_tokens_parse_and_hash_stably() {
    let f = TokenFormat::default();
    let t = f
        .generate(KeyId::random().expect("entropy"))
        .expect("entropy");
    let p = f.parse(t.expose_secret()).expect("parses");
    assert_eq!(p.display_prefix(), t.display_prefix());
    assert!(p.hash().ct_eq(&KeyHash::of(t.expose_secret().as_bytes())));
    let padded = format!("  {}\n", t.expose_secret());
    assert!(f.parse(&padded).expect("trimmed").hash().ct_eq(&p.hash()));
}

#[test]
fn any_single_character_change_is_rejected() {
    let f = TokenFormat::default();
    let t = f
        .generate(KeyId::random().expect("entropy"))
        .expect("entropy");
    let s = t.expose_secret().as_bytes().to_vec();
    for i in 0..s.len() {
        for &c in b"0aZ_-" {
            if s[i] == c {
                continue;
            }
            let mut m = s.clone();
            m[i] = c;
            let m = String::from_utf8(m).expect("ascii");
            assert!(f.parse(&m).is_err(), "changed byte {i} to {c} was accepted");
        }
    }
}

#[test]
fn other_prefixes_are_rejected() {
    let t = issue("rk");
    assert!(TokenFormat::default().parse(t.expose_secret()).is_err());
    assert!(TokenFormat::new("rk")
        .expect("valid")
        .parse(t.expose_secret())
        .is_ok());
}

#[test]
fn prefix_rules() {
    assert!(TokenFormat::new("").is_err());
    assert!(TokenFormat::new("sk_").is_err());
    assert!(TokenFormat::new("abcdefghijk").is_err());
    assert!(TokenFormat::new("é").is_err());
    let longest = TokenFormat::new("abcdefghij").expect("10 is allowed");
    assert!(longest.token_len() <= 55, "must fit one SHA-256 block");
}

#[test]
fn secrets_are_redacted() {
    let t = issue("sk");
    let secret_part = &t.expose_secret()[12..];
    for shown in [format!("{t:?}"), format!("{t}")] {
        assert!(!shown.contains(secret_part), "{shown}");
        assert!(shown.contains(t.display_prefix().as_str()));
    }
    let h = KeyHash::of(b"x");
    assert!(!format!("{h:?}").contains(&h.to_hex()[..8]));
}

#[test]
fn hash_hex_round_trips() {
    let h = KeyHash::of(b"abc");
    assert_eq!(
        h.to_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(KeyHash::from_hex(&h.to_hex()).expect("hex").ct_eq(&h));
    assert!(KeyHash::from_hex("zz").is_none());
    assert!(KeyHash::from_hex(&"é".repeat(32)).is_none());
}

#[test]
fn key_id_parsing() {
    let id = KeyId::random().expect("entropy");
    assert_eq!(id.as_str().parse::<KeyId>(), Ok(id));
    assert!("short".parse::<KeyId>().is_err());
    assert!("abcdefg!".parse::<KeyId>().is_err());
    assert!("abcdéfg".parse::<KeyId>().is_err());
}

#[test]
fn scanner_regex_names_the_shape() {
    assert_eq!(
        TokenFormat::default().scanner_regex(),
        r"\bsk_[0-9A-Za-z]{8}_[0-9A-Za-z]{32}\b"
    );
}

/// The shape check's alphabet is exactly ASCII letters and digits: every
/// byte value, alone and at every position of an id-sized and a
/// body-sized run of good ones.
#[test]
fn base62_is_exactly_ascii_alphanumeric() {
    for b in 0..=u8::MAX {
        let want = b.is_ascii_alphanumeric();
        assert_eq!(is_base62(&[b]), want, "byte {b:#04x}");
        for len in [ID_LEN, BODY_LEN] {
            for at in 0..len {
                let mut run = vec![b'a'; len];
                run[at] = b;
                assert_eq!(is_base62(&run), want, "byte {b:#04x} at {at} of {len}");
            }
        }
    }
    assert!(is_base62(ALPHABET));
    assert!(is_base62(&[]));
}
