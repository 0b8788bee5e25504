//! Token parsing and verification: `TokenFormat::parse` never panics,
//! `verify` reports `Malformed` exactly when `parse` fails, and a string
//! verifies if and only if it is one of the issued tokens (surrounding ASCII
//! whitespace aside, which both trim). A second mode edits a real token
//! (bit flips, replaced, inserted, deleted bytes) and checks that no changed
//! token verifies, and that one replaced byte never even parses.
//!
//! Input: byte 0 picks the mode (bit 0), the `Keyward` (bit 1: cached with
//! prefix `sk`, or uncached with prefix `live0`) and the token to edit
//! (bits 2-3); the rest is the string, or 3-byte edits `op, pos, value`.

#![no_main]

use std::sync::OnceLock;

use keyward::{Actor, Catalog, Keyward, ManualClock, MemoryStore, NewKey, VerifyError};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

/// Most edits applied to one token.
const MAX_EDITS: usize = 64;

struct Instance {
    keys: Keyward,
    tokens: Vec<String>,
}

struct Fixture {
    rt: Runtime,
    instances: [Instance; 2],
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let catalog = Catalog::builder()
            .resource("contacts", ["read", "write"])
            .resource("users", ["read"])
            .build()
            .expect("a valid catalog");
        let instance = |prefix: &str, cache_ttl: chrono::Duration| {
            // A stopped clock: nothing expires, goes inactive or refills
            // while the fuzzer runs, so each input meets the same state.
            let keys = Keyward::builder(MemoryStore::new(), catalog.clone())
                .clock(ManualClock::default())
                .token_prefix(prefix)
                .cache_ttl(cache_ttl)
                // No read budget: the clock stands still and the fuzzer
                // sends made-up ids by the million (tests/flood.rs checks
                // the budget; this target, that verify agrees with parse).
                .unknown_id_reads(None)
                .build()
                .expect("a valid configuration");
            let admin = Actor::new("fuzz-admin", "acme")
                .permissions(catalog.all())
                .may_manage_keys(true);
            let tokens = rt.block_on(async {
                let mut tokens = Vec::new();
                for (name, permissions) in [
                    ("reader", &["contacts:read"][..]),
                    ("writer", &["contacts:write", "users:read"][..]),
                    ("nothing", &[][..]),
                ] {
                    let issued = keys
                        .create(
                            &admin,
                            NewKey::new(name).permissions(permissions.iter().copied()),
                        )
                        .await
                        .expect("a key");
                    tokens.push(issued.token.expose_secret().to_string());
                }
                tokens
            });
            Instance { keys, tokens }
        };
        let instances = [
            instance("sk", chrono::Duration::seconds(10)),
            // No cache: every well-formed token reads the store.
            instance("live0", chrono::Duration::zero()),
        ];
        Fixture { rt, instances }
    })
}

/// Applies 3-byte edits (`op, pos, value`) to `token`; returns the result
/// and whether the edits were exactly one in-place byte change.
fn edit(token: &[u8], edits: &[u8]) -> (Vec<u8>, bool) {
    let mut out = token.to_vec();
    let mut count = 0;
    let mut in_place = false;
    for e in edits.chunks_exact(3).take(MAX_EDITS) {
        let (op, pos, value) = (e[0], usize::from(e[1]), e[2]);
        count += 1;
        in_place = false;
        match op % 4 {
            0 if !out.is_empty() => {
                let i = pos % out.len();
                out[i] ^= 1 << (value % 8);
                in_place = true;
            }
            1 if !out.is_empty() => {
                let i = pos % out.len();
                out[i] = value;
                in_place = true;
            }
            2 => out.insert(pos % (out.len() + 1), value),
            _ if !out.is_empty() => {
                out.remove(pos % out.len());
            }
            _ => {}
        }
    }
    (out, count == 1 && in_place)
}

fn check(fx: &Fixture, inst: &Instance, input: &str) {
    let format = inst.keys.token_format();
    let parsed = format.parse(input);
    let trimmed = input.trim_ascii();
    if let Ok(p) = &parsed {
        // A parsed token has the format's length and shows its own start.
        assert_eq!(trimmed.len(), format.token_len());
        let display = p.display_prefix();
        assert!(trimmed.starts_with(display.as_str()));
        assert_eq!(
            &trimmed[format.prefix().len() + 1..][..8],
            p.id().as_str(),
            "id is not the token's"
        );
    }
    let issued = inst.tokens.iter().position(|t| t == trimmed);
    let verified = fx.rt.block_on(inst.keys.verify(input));
    assert_eq!(
        matches!(verified, Err(VerifyError::Malformed)),
        parsed.is_err(),
        "verify and parse disagree on {input:?}: {verified:?}"
    );
    match (&verified, issued) {
        (Ok(v), Some(i)) => {
            let expected = format.parse(&inst.tokens[i]).expect("issued tokens parse");
            assert_eq!(v.id(), expected.id(), "verified as another key");
        }
        (Ok(v), None) => panic!("{input:?} verified as key {} but was never issued", v.id()),
        (Err(e), Some(_)) => panic!("issued token {input:?} was refused: {e:?}"),
        (Err(_), None) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fx = fixture();
    let inst = &fx.instances[usize::from(mode >> 1 & 1)];
    if mode & 1 == 0 {
        let input = String::from_utf8_lossy(rest);
        check(fx, inst, &input);
        return;
    }
    let original = &inst.tokens[usize::from(mode >> 2 & 3) % inst.tokens.len()];
    let (edited, one_change) = edit(original.as_bytes(), rest);
    let input = String::from_utf8_lossy(&edited);
    if input.trim_ascii() != original.as_str() {
        // CRC-32 catches every change of up to 32 consecutive bits, so a
        // single changed byte is always a malformed token.
        if one_change {
            assert!(
                inst.keys.token_format().parse(&input).is_err(),
                "{input:?} differs from an issued token in one byte and still parses"
            );
        }
        let verified = fx.rt.block_on(inst.keys.verify(&input));
        assert!(
            verified.is_err(),
            "changed token {input:?} verified: {verified:?}"
        );
    }
    check(fx, inst, &input);
});
