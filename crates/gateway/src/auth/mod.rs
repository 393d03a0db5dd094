//! Bearer token authentication against the trusted issuers' JWKS.

mod jwks;
mod verified;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use carerecord_config::Issuer;
use carerecord_fhir::ScopeSet;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

pub use jwks::{JwksCache, JwksError};
use verified::VerifiedTokens;

use crate::caller::Caller;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

/// Why a token was not accepted. Logged; the caller only learns "invalid token".
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token is not a JWT: {0}")]
    Malformed(jsonwebtoken::errors::Error),
    #[error("the token's issuer is not trusted")]
    UntrustedIssuer,
    #[error("no key of the issuer matches the token's kid")]
    UnknownKey,
    #[error("the key does not allow the token's algorithm")]
    AlgorithmNotAllowed,
    #[error("the token did not verify: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("the issuer's keys could not be read: {0}")]
    Keys(#[from] JwksError),
}

/// One trusted issuer and its keys.
pub struct TrustedIssuer {
    pub config: Issuer,
    pub keys: JwksCache,
}

/// Verifies bearer tokens.
pub struct Authenticator {
    issuers: Vec<TrustedIssuer>,
    verified: VerifiedTokens,
}

impl Authenticator {
    pub fn new(issuers: &[Issuer], http: reqwest::Client, min_refresh: Duration) -> Self {
        Self {
            issuers: issuers
                .iter()
                .map(|i| TrustedIssuer { config: i.clone(), keys: JwksCache::new(i, http.clone(), min_refresh) })
                .collect(),
            verified: VerifiedTokens::default(),
        }
    }

    /// Fetches every issuer's keys now, so the first request does not wait.
    pub async fn prefetch(&self) {
        for issuer in &self.issuers {
            if let Err(error) = issuer.keys.refresh().await {
                tracing::warn!(issuer = %issuer.config.issuer, %error, "cannot fetch the issuer's keys yet");
            }
        }
    }

    /// The caller a token names, if it verifies against a trusted issuer.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        let now = Instant::now();
        if let Some(caller) = self.verified.get(token, now) {
            return Ok(caller);
        }
        let header = jsonwebtoken::decode_header(token).map_err(AuthError::Malformed)?;
        // The issuer is read before verification only to choose whose keys
        // verify; the verification then requires that same `iss`.
        let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(AuthError::Malformed)?;
        let iss = unverified.get("iss").and_then(Value::as_str).ok_or(AuthError::UntrustedIssuer)?;
        let issuer = self.issuers.iter().find(|i| i.config.issuer == iss).ok_or(AuthError::UntrustedIssuer)?;
        let (key, algorithms) = issuer.keys.key_for(header.kid.as_deref(), header.alg).await?;
        if !algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let claims = verify(token, &key, header.alg, &issuer.config)?;
        let caller = caller_of(&claims, &issuer.config);
        if let Some(lifetime) = remaining_life(&claims) {
            self.verified.insert(token, caller.clone(), now, lifetime);
        }
        Ok(caller)
    }
}

fn verify(token: &str, key: &jsonwebtoken::DecodingKey, alg: Algorithm, issuer: &Issuer) -> Result<Value, AuthError> {
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[&issuer.issuer]);
    validation.set_audience(&[&issuer.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECONDS;
    jsonwebtoken::decode::<Value>(token, key, &validation).map(|data| data.claims).map_err(AuthError::Invalid)
}

/// How much longer a verified token is valid: until `exp` plus the leeway
/// verification allowed. `None` if it has no room left (or `exp` is absurd).
fn remaining_life(claims: &Value) -> Option<Duration> {
    let exp = claims.get("exp").and_then(Value::as_u64)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let left = exp.checked_add(LEEWAY_SECONDS)?.checked_sub(now)?;
    (left > 0).then(|| Duration::from_secs(left))
}

/// The caller a verified token's claims describe.
pub fn caller_of(claims: &Value, issuer: &Issuer) -> Caller {
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    // SMART puts scopes in `scope` (space-separated); some issuers use an `scp` list.
    let scope = match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) => s.clone(),
        (_, Some(Value::Array(items))) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    };
    let organisation = match claims.get(&issuer.organisation_claim) {
        Some(Value::String(s)) => Some(s.clone()),
        // One organisation only: a list of several would let the caller pick.
        Some(Value::Array(items)) if items.len() == 1 => items[0].as_str().map(str::to_string),
        _ => None,
    };
    Caller {
        issuer: issuer.issuer.clone(),
        subject: text("sub").unwrap_or_default(),
        client_id: text("client_id").or_else(|| text("azp")),
        organisation,
        scopes: ScopeSet::parse(&scope),
    }
}

/// Algorithms a JWK may verify: its own `alg` if it names one, else those of
/// its key type. Never `none` (jsonwebtoken has no such algorithm) and never
/// HMAC: a shared secret in a public key set would let anyone sign.
pub fn algorithms_for(jwk: &jsonwebtoken::jwk::Jwk) -> Vec<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm};
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => vec![],
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
        _ => vec![],
    };
    let named = match jwk.common.key_algorithm {
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::RS384) => Some(Algorithm::RS384),
        Some(KeyAlgorithm::RS512) => Some(Algorithm::RS512),
        Some(KeyAlgorithm::PS256) => Some(Algorithm::PS256),
        Some(KeyAlgorithm::PS384) => Some(Algorithm::PS384),
        Some(KeyAlgorithm::PS512) => Some(Algorithm::PS512),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::ES384) => Some(Algorithm::ES384),
        Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
        // An encryption key, or an HMAC key: verifies nothing here.
        Some(_) => return vec![],
        None => None,
    };
    match named {
        Some(alg) => by_type.into_iter().filter(|a| *a == alg).collect(),
        None => by_type,
    }
}
