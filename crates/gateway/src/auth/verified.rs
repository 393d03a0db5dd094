//! Tokens already verified, so a caller's next request with the same token
//! skips the signature check (an RSA verification costs more than the rest of
//! a read's decision).
//!
//! A token is remembered by the SHA-256 of its whole text, so only the exact
//! token that verified is ever accepted from here, and only until its `exp`
//! (plus the leeway verification allows), and never longer than `MAX_AGE`:
//! an issuer's key removed from its JWKS stops admitting its tokens within
//! that bound at most.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::caller::Caller;

/// The longest a verified token is trusted without verifying it again.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// Tokens remembered at most; a full cache drops the expired, and if that is
/// not enough, everything (a burst of new tokens costs verifications, never memory).
pub const CAPACITY: usize = 4096;

type Digest = [u8; 32];

/// Verified tokens and the callers they name.
#[derive(Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<Digest, (Caller, Instant)>>,
}

impl VerifiedTokens {
    /// The caller a token named when it verified, if it is still valid at `now`.
    pub fn get(&self, token: &str, now: Instant) -> Option<Caller> {
        let entries = self.entries.lock().expect("the verified-token lock is never poisoned");
        match entries.get(&digest(token)) {
            Some((caller, until)) if now < *until => Some(caller.clone()),
            _ => None,
        }
    }

    /// Remembers a token that verified, valid for `lifetime` from `now` (its
    /// remaining life by `exp`), capped at `MAX_AGE`.
    pub fn insert(&self, token: &str, caller: Caller, now: Instant, lifetime: Duration) {
        let until = now + lifetime.min(MAX_AGE);
        let mut entries = self.entries.lock().expect("the verified-token lock is never poisoned");
        if entries.len() >= CAPACITY {
            entries.retain(|_, (_, until)| now < *until);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(digest(token), (caller, until));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

fn digest(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

#[cfg(test)]
mod tests {
    use carerecord_fhir::ScopeSet;

    use super::*;

    fn caller(subject: &str) -> Caller {
        Caller {
            issuer: "https://idp".into(),
            subject: subject.into(),
            client_id: None,
            organisation: Some("QOP".into()),
            scopes: ScopeSet::parse("system/*.rs"),
        }
    }

    #[test]
    fn a_verified_token_names_its_caller_until_it_expires() {
        let cache = VerifiedTokens::default();
        let now = Instant::now();
        cache.insert("a.b.c", caller("alice"), now, Duration::from_secs(60));
        assert_eq!(cache.get("a.b.c", now + Duration::from_secs(59)), Some(caller("alice")));
        assert_eq!(cache.get("a.b.c", now + Duration::from_secs(60)), None);
    }

    #[test]
    fn a_different_token_is_not_admitted() {
        let cache = VerifiedTokens::default();
        let now = Instant::now();
        cache.insert("a.b.c", caller("alice"), now, Duration::from_secs(60));
        assert_eq!(cache.get("a.b.d", now), None);
    }

    #[test]
    fn a_long_lived_token_is_verified_again_after_max_age() {
        let cache = VerifiedTokens::default();
        let now = Instant::now();
        cache.insert("a.b.c", caller("alice"), now, Duration::from_secs(86_400));
        assert_eq!(cache.get("a.b.c", now + MAX_AGE), None);
    }

    #[test]
    fn a_full_cache_never_grows_past_its_capacity() {
        let cache = VerifiedTokens::default();
        let now = Instant::now();
        for n in 0..CAPACITY + 10 {
            cache.insert(&format!("token-{n}"), caller("alice"), now, Duration::from_secs(60));
        }
        assert!(cache.len() <= CAPACITY);
        assert_eq!(cache.get(&format!("token-{}", CAPACITY + 9), now), Some(caller("alice")));
    }
}
