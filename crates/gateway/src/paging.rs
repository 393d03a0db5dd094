//! Page ids bound to the caller. The store's page ids (`_getpages`) are
//! bearer capabilities: anyone holding one reads that page. The gateway hands
//! out `<id>.<mac>` instead, where the MAC covers the id, the caller and the
//! route (tenant or agreement), and accepts a page only from the caller it was
//! issued to, on the route it was issued on.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

/// The key page ids are bound with. Replicas behind one Service must share it
/// (from a mounted Secret); a random key per process works with one replica.
#[derive(Clone)]
pub struct PageKey(hmac::Key);

impl std::fmt::Debug for PageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageKey(..)")
    }
}

impl PageKey {
    /// A key from secret bytes (at least 32).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// A fresh random key.
    pub fn random() -> Self {
        let rng = ring::rand::SystemRandom::new();
        // Generation only fails when the OS has no randomness; nothing safe can run then.
        Self(hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the OS random source failed"))
    }

    fn message(page_id: &str, caller: &str, route: &str) -> Vec<u8> {
        // Unit separators keep the fields apart: no field can end in another.
        format!("v1\u{1f}{route}\u{1f}{caller}\u{1f}{page_id}").into_bytes()
    }

    /// The token handed to `caller` for the store's `page_id` on `route`.
    pub fn bind(&self, page_id: &str, caller: &str, route: &str) -> String {
        let tag = hmac::sign(&self.0, &Self::message(page_id, caller, route));
        format!("{page_id}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The store's page id, when `token` was issued to `caller` on `route`.
    pub fn open(&self, token: &str, caller: &str, route: &str) -> Option<String> {
        let (page_id, tag) = token.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.0, &Self::message(page_id, caller, route), &tag).ok()?;
        Some(page_id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_page_opens_for_its_caller() {
        let key = PageKey::from_secret(&[7; 32]);
        let token = key.bind("abc-123", "alice", "agreement:A");
        assert_eq!(key.open(&token, "alice", "agreement:A").as_deref(), Some("abc-123"));
    }

    #[test]
    fn a_bound_page_does_not_open_for_another_caller() {
        let key = PageKey::from_secret(&[7; 32]);
        let token = key.bind("abc-123", "alice", "agreement:A");
        assert_eq!(key.open(&token, "bob", "agreement:A"), None);
    }

    #[test]
    fn a_bound_page_does_not_open_on_another_route() {
        let key = PageKey::from_secret(&[7; 32]);
        let token = key.bind("abc-123", "alice", "agreement:A");
        assert_eq!(key.open(&token, "alice", "tenant"), None);
    }

    #[test]
    fn a_raw_store_page_id_does_not_open() {
        let key = PageKey::from_secret(&[7; 32]);
        assert_eq!(key.open("abc-123", "alice", "tenant"), None);
    }

    #[test]
    fn another_key_does_not_open() {
        let token = PageKey::from_secret(&[7; 32]).bind("p", "alice", "tenant");
        assert_eq!(PageKey::from_secret(&[8; 32]).open(&token, "alice", "tenant"), None);
    }
}
