//! Credentials: visitor tokens and agent session tokens (HMAC-signed by this server
//! with keys kept in the store, so they survive restarts and are shared by every
//! node), player tokens signed by the casino backend (JWT, algorithm and key from
//! configuration only), and agent passwords (argon2).
//!
//! It does not own accounts (the store does) or decide what a role may do (the
//! desk does).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use pitboss_protocol::{PlayerCard, PlayerId};
use serde::Deserialize;
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Why credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Forged, malformed, for the wrong audience or issuer, or for no account.
    #[error("invalid credentials: {0}")]
    Invalid(String),
    /// Correctly signed but expired.
    #[error("token expired")]
    Expired,
    /// This kind of credential is not configured on this server.
    #[error("{0} is not enabled on this server")]
    NotConfigured(&'static str),
    /// The credentials could not be checked now (the store did not answer, or
    /// every password thread is busy): nothing is known to be wrong with them.
    #[error("cannot check the credentials now: {0}")]
    Unavailable(String),
}

/// The server's own signing keys.
#[derive(Clone)]
pub struct Keys {
    visitor: Vec<u8>,
    agent: Vec<u8>,
}

impl Keys {
    /// Keys from raw secrets (at least 32 bytes each).
    pub fn new(visitor: Vec<u8>, agent: Vec<u8>) -> Self {
        Self { visitor, agent }
    }

    fn sign(key: &[u8], payload: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any size");
        mac.update(payload.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }

    fn verify(key: &[u8], payload: &str, signature: &str) -> bool {
        let Ok(sig) = B64.decode(signature) else {
            return false;
        };
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any size");
        mac.update(payload.as_bytes());
        // `verify_slice` compares in constant time.
        mac.verify_slice(&sig).is_ok()
    }

    /// A new visitor: a fresh id and the token that names it.
    pub fn new_visitor(&self) -> (Uuid, String) {
        let id = Uuid::new_v4();
        (id, self.visitor_token(id))
    }

    /// The token naming visitor `id`.
    pub fn visitor_token(&self, id: Uuid) -> String {
        let payload = format!("v1.{id}");
        let sig = Self::sign(&self.visitor, &payload);
        format!("{payload}.{sig}")
    }

    /// The visitor a token names.
    pub fn check_visitor(&self, token: &str) -> Result<Uuid, AuthError> {
        let (payload, sig) = token
            .rsplit_once('.')
            .ok_or_else(|| AuthError::Invalid("malformed visitor token".into()))?;
        if !Self::verify(&self.visitor, payload, sig) {
            return Err(AuthError::Invalid("bad visitor token signature".into()));
        }
        payload
            .strip_prefix("v1.")
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| AuthError::Invalid("malformed visitor token".into()))
    }

    /// A session token for agent `login`, valid until `expires_ms` (Unix ms), and
    /// only while the account's credential (`AgentAccount::credential`: its
    /// password hash and last sign-out) is `credential`: a new password or a
    /// sign-out ends every session issued before it.
    pub fn agent_token(&self, login: &str, expires_ms: u64, credential: &str) -> String {
        let payload = format!(
            "a1.{}.{expires_ms}.{}",
            B64.encode(login),
            self.credential_mark(credential)
        );
        let sig = Self::sign(&self.agent, &payload);
        format!("{payload}.{sig}")
    }

    /// Bytes of the credential MAC a session token carries.
    const MARK_BYTES: usize = 12;

    /// The keyed hash of a credential (a password hash, and when the account
    /// last signed out) that a session token carries a part of: enough to tell
    /// a changed password or a sign-out, nothing that helps guess a password.
    fn credential_mac(&self, credential: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.agent).expect("HMAC takes keys of any size");
        mac.update(b"credential\n");
        mac.update(credential.as_bytes());
        mac
    }

    /// The mark a session token issued under `credential` carries.
    fn credential_mark(&self, credential: &str) -> String {
        let full = self.credential_mac(credential).finalize().into_bytes();
        B64.encode(&full[..Self::MARK_BYTES])
    }

    /// The agent login a session token names, if it is genuine and unexpired at
    /// `now_ms`, with the mark of the password it was issued under (check it with
    /// [`Keys::same_credential`] against the account).
    pub fn check_agent(&self, token: &str, now_ms: u64) -> Result<(String, String), AuthError> {
        let (payload, sig) = token
            .rsplit_once('.')
            .ok_or_else(|| AuthError::Invalid("malformed session token".into()))?;
        if !Self::verify(&self.agent, payload, sig) {
            return Err(AuthError::Invalid("bad session token signature".into()));
        }
        let mut parts = payload.split('.');
        let (Some("a1"), Some(login), Some(exp), Some(mark), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(AuthError::Invalid("malformed session token".into()));
        };
        let exp: u64 = exp
            .parse()
            .map_err(|_| AuthError::Invalid("malformed session token".into()))?;
        if exp <= now_ms {
            return Err(AuthError::Expired);
        }
        let login = B64
            .decode(login)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| AuthError::Invalid("malformed session token".into()))?;
        Ok((login, mark.to_owned()))
    }

    /// Whether a session's `mark` (from [`Keys::check_agent`]) was issued under
    /// this credential (compared in constant time).
    pub fn same_credential(&self, mark: &str, credential: &str) -> bool {
        match B64.decode(mark) {
            Ok(bytes) if bytes.len() == Self::MARK_BYTES => self
                .credential_mac(credential)
                .verify_truncated_left(&bytes)
                .is_ok(),
            _ => false,
        }
    }
}

/// How the casino backend signs player tokens. The algorithm and key come from
/// here, never from the token's header.
#[derive(Clone)]
pub struct PlayerTokenConfig {
    /// HS256, RS256 or ES256.
    pub algorithm: jsonwebtoken::Algorithm,
    /// The shared secret (HS256) or the PEM public key (RS256, ES256).
    pub key: jsonwebtoken::DecodingKey,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (at most 60).
    pub leeway_secs: u64,
}

impl PlayerTokenConfig {
    /// Builds the configuration from the algorithm's name and key material: the
    /// secret itself for HS256, a PEM public key for RS256 and ES256.
    pub fn new(
        algorithm: &str,
        key: &[u8],
        issuer: String,
        audience: String,
        leeway_secs: u64,
    ) -> Result<Self, String> {
        use jsonwebtoken::{Algorithm, DecodingKey};
        let (algorithm, key) = match algorithm.to_ascii_uppercase().as_str() {
            "HS256" => {
                if key.len() < 32 {
                    return Err("an HS256 player-token secret must be at least 32 bytes".into());
                }
                (Algorithm::HS256, DecodingKey::from_secret(key))
            }
            "RS256" => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(public_pem(key, "RS256")?)
                    .map_err(|e| format!("RS256 public key: {e}"))?,
            ),
            "ES256" => (
                Algorithm::ES256,
                DecodingKey::from_ec_pem(public_pem(key, "ES256")?)
                    .map_err(|e| format!("ES256 public key: {e}"))?,
            ),
            other => return Err(format!("unsupported player-token algorithm {other:?}")),
        };
        if leeway_secs > 60 {
            return Err("player-token leeway may be at most 60 seconds".into());
        }
        Ok(Self {
            algorithm,
            key,
            issuer,
            audience,
            leeway_secs,
        })
    }

    /// The validation of every player token: the configured algorithm, issuer and
    /// audience; `exp`, `iss`, `aud` and `sub` required; `exp` and, when present,
    /// `nbf` checked with the same leeway.
    fn validation(&self) -> jsonwebtoken::Validation {
        let mut validation = jsonwebtoken::Validation::new(self.algorithm);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation
    }

    /// Checks a player token and returns the player it vouches for.
    pub fn verify(&self, token: &str) -> Result<PlayerCard, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let validation = self.validation();
        let data = jsonwebtoken::decode::<PlayerClaims>(token, &self.key, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                kind => {
                    // The reason in the casino's terms, not the library's.
                    let why = match kind {
                        ErrorKind::InvalidSignature => "bad signature",
                        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                            "not signed with the configured algorithm"
                        }
                        ErrorKind::InvalidIssuer => "wrong issuer (iss)",
                        ErrorKind::InvalidAudience => "wrong audience (aud)",
                        ErrorKind::ImmatureSignature => "not valid yet (nbf)",
                        ErrorKind::MissingRequiredClaim(claim) => {
                            return AuthError::Invalid(format!(
                                "player token: claim {claim} missing{}",
                                if claim == "exp" {
                                    " or not a number"
                                } else {
                                    ""
                                }
                            ))
                        }
                        ErrorKind::InvalidClaimFormat(claim) => {
                            return AuthError::Invalid(format!(
                                "player token: claim {claim} not a number"
                            ))
                        }
                        _ => "malformed",
                    };
                    tracing::debug!(err = %e, "player token refused");
                    AuthError::Invalid(format!("player token: {why}"))
                }
            },
        )?;
        let c = data.claims;
        if c.sub.is_empty() || c.sub.len() > 128 {
            return Err(AuthError::Invalid("player token: bad sub".into()));
        }
        Ok(PlayerCard {
            id: PlayerId::verified(&c.sub),
            name: c.name.map(|n| clip(&n, 100)),
            language: c.language.or(c.lang).and_then(|l| player_language(&l)),
            vip_tier: c
                .vip_tier
                .map_or(0, |t| t.min(u64::from(MAX_VIP_TIER)) as u8),
            jurisdiction: c.jurisdiction.map(|j| clip(&j, 16)),
            self_excluded: c.self_excluded.unwrap_or(false),
            verified: true,
        })
    }
}

/// The PEM labels of private keys. The key library reads the public half out of
/// some of them without complaint, and every token then fails as "bad signature":
/// a node given one refuses to start instead.
const PRIVATE_KEY_LABELS: [&str; 4] = [
    "-----BEGIN PRIVATE KEY-----",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----BEGIN EC PRIVATE KEY-----",
    "-----BEGIN ENCRYPTED PRIVATE KEY-----",
];

/// `key` if it is not a private key in PEM; the node verifies tokens with the
/// casino's public key, and the private one stays with the casino's signer.
fn public_pem<'k>(key: &'k [u8], algorithm: &str) -> Result<&'k [u8], String> {
    let text = String::from_utf8_lossy(key);
    if PRIVATE_KEY_LABELS.iter().any(|label| text.contains(label)) {
        return Err(format!(
            "the {algorithm} player-token key file holds a private key: give the public \
             key instead (keep the private one with the casino's signer; derive the \
             public one with `openssl pkey -in private.pem -pubout -out public.pem`)"
        ));
    }
    Ok(key)
}

/// The highest VIP tier a token may claim; higher claims are clipped to it.
pub const MAX_VIP_TIER: u8 = 5;

/// The claims Pitboss reads from a player token. Registered claims (`exp`, `iss`,
/// `aud`) are checked by the validation itself.
#[derive(Debug, Deserialize)]
struct PlayerClaims {
    sub: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    language: Option<String>,
    /// The alias of `language`; when a token has both, `language` wins.
    #[serde(default)]
    lang: Option<String>,
    /// Any tier a casino uses; above [`MAX_VIP_TIER`] counts as that.
    #[serde(default)]
    vip_tier: Option<u64>,
    #[serde(default)]
    jurisdiction: Option<String>,
    #[serde(default)]
    self_excluded: Option<bool>,
}

/// A player's language as `hello` or a player token gives it: trimmed, clipped to
/// 16 characters and lowercased, like the tags it is matched against; `None` when
/// nothing is left.
pub(crate) fn player_language(raw: &str) -> Option<String> {
    let language = clip(raw.trim(), 16).to_ascii_lowercase();
    (!language.is_empty()).then_some(language)
}

/// At most `max` characters of `s`.
pub(crate) fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Password work (argon2: tens of milliseconds of CPU and 19 MiB of memory each,
/// on purpose) runs on a few threads of its own, fed by a bounded queue. On the
/// runtime's blocking pool a flood of logins would start a thread per request,
/// each keeping its 19 MiB in the allocator afterwards, and take every core; here
/// it costs at most `PASSWORD_THREADS` of each, and what does not fit in the queue
/// is refused at once ([`PasswordsBusy`]).
const PASSWORD_THREADS: usize = 2;

/// Password checks waiting for a thread; beyond it, refused.
const PASSWORD_QUEUE: usize = 32;

/// Too many password checks are waiting: try again in a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks at once")]
pub struct PasswordsBusy;

type PasswordJob = Box<dyn FnOnce() + Send>;

/// The password threads' queue, started on first use.
fn password_queue() -> &'static std::sync::mpsc::SyncSender<PasswordJob> {
    static QUEUE: std::sync::OnceLock<std::sync::mpsc::SyncSender<PasswordJob>> =
        std::sync::OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<PasswordJob>(PASSWORD_QUEUE);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for n in 0..PASSWORD_THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pitboss-password-{n}"))
                .spawn(move || loop {
                    // The lock only hands out the next job; it is released
                    // before the job runs.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(%err, "cannot start a password thread");
            }
        }
        tx
    })
}

/// Runs `work` on a password thread.
async fn on_password_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PasswordsBusy> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    password_queue()
        .try_send(Box::new(move || {
            let _ = tx.send(work());
        }))
        .map_err(|_| PasswordsBusy)?;
    rx.await.map_err(|_| PasswordsBusy)
}

/// [`verify_password`] on a password thread.
pub async fn check_password(password: String, phc: String) -> Result<bool, PasswordsBusy> {
    on_password_thread(move || verify_password(&password, &phc)).await
}

/// [`hash_password`] on a password thread.
pub async fn new_password_hash(password: String) -> Result<Result<String, String>, PasswordsBusy> {
    on_password_thread(move || hash_password(&password)).await
}

/// The largest argon2 memory a stored hash may ask for, in 1 KiB blocks (64 MiB;
/// ours ask for 19 MiB).
const MAX_ARGON2_BLOCKS: usize = 64 * 1024;

thread_local! {
    /// This thread's argon2 memory, kept for the next hash. Allocating it for
    /// each hash leaves the allocator holding 19 MiB more after every login on
    /// some threads; reused, it is one buffer per password thread.
    static ARGON2_MEMORY: std::cell::RefCell<Vec<argon2::Block>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The argon2 hash of `password` under `argon2`'s parameters and `salt`, into an
/// output of `len` bytes, computed in this thread's kept memory.
fn argon2_output(
    argon2: &argon2::Argon2<'_>,
    blocks: usize,
    password: &str,
    salt: &[u8],
    len: usize,
) -> Option<argon2::password_hash::Output> {
    if blocks > MAX_ARGON2_BLOCKS {
        return None;
    }
    ARGON2_MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        argon2::password_hash::Output::init_with(len, |out| {
            argon2
                .hash_password_into_with_memory(
                    password.as_bytes(),
                    salt,
                    out,
                    &mut memory[..blocks],
                )
                .map_err(|_| argon2::password_hash::Error::Crypto)
        })
        .ok()
    })
}

/// Hashes a password with argon2id and the default parameters (a fresh salt
/// each time) into a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    let params = argon2::Params::default();
    let argon2 = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params.clone(),
    );
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|e| e.to_string())?;
    let output = argon2_output(
        &argon2,
        params.block_count(),
        password,
        raw_salt,
        argon2::Params::DEFAULT_OUTPUT_LEN,
    )
    .ok_or("argon2 failed")?;
    let hash = PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(argon2::Version::V0x13.into()),
        params: (&params)
            .try_into()
            .map_err(|e: argon2::password_hash::Error| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches an argon2 PHC string (from [`hash_password`]);
/// the comparison is constant-time.
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::PasswordHash;
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = match hash.version.map(argon2::Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = argon2::Params::try_from(&hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(raw_salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    let argon2 = argon2::Argon2::new(algorithm, version, params);
    argon2_output(&argon2, blocks, password, raw_salt, expected.len())
        .is_some_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(vec![1; 32], vec![2; 32])
    }

    #[test]
    fn visitor_tokens_round_trip_and_forgeries_fail() {
        let k = keys();
        let (id, token) = k.new_visitor();
        assert_eq!(k.check_visitor(&token), Ok(id));
        let other = Keys::new(vec![9; 32], vec![2; 32]);
        assert!(other.check_visitor(&token).is_err());
        let forged = format!(
            "v1.{}.{}",
            Uuid::new_v4(),
            token.rsplit_once('.').unwrap().1
        );
        assert!(k.check_visitor(&forged).is_err());
        assert!(k.check_visitor("garbage").is_err());
    }

    #[test]
    fn agent_tokens_expire_and_cannot_be_forged() {
        let k = keys();
        let t = k.agent_token("ayla", 1_000, "$argon2id$first");
        let (login, mark) = k.check_agent(&t, 999).unwrap();
        assert_eq!(login, "ayla");
        assert!(k.same_credential(&mark, "$argon2id$first"));
        assert!(
            !k.same_credential(&mark, "$argon2id$second"),
            "a new password ends it"
        );
        assert!(!k.same_credential("", "$argon2id$first"));
        assert_eq!(k.check_agent(&t, 1_000), Err(AuthError::Expired));
        let tampered = t.replacen("1000", "9999", 1);
        assert!(matches!(
            k.check_agent(&tampered, 0),
            Err(AuthError::Invalid(_))
        ));
        // A visitor key cannot mint agent sessions.
        let v = Keys::new(vec![2; 32], vec![1; 32]);
        assert!(v.check_agent(&t, 0).is_err());
    }

    #[test]
    fn passwords_verify_only_with_the_right_password() {
        let h = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    /// Hashes stored by the argon2 crate's own hasher (every account created
    /// before the memory was kept) verify, and ours verify there.
    #[test]
    fn hashes_agree_with_the_argon2_crates_own() {
        use argon2::password_hash::{
            rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
        };
        let salt = SaltString::generate(&mut OsRng);
        let theirs = argon2::Argon2::default()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("correct horse", &theirs));
        assert!(!verify_password("correct hors", &theirs));
        let ours = hash_password("correct horse").unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2::Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(argon2::Argon2::default()
            .verify_password(b"wrong", &parsed)
            .is_err());
    }

    /// Test keys, made for these tests only: private keys in the three PEM forms
    /// a casino might hand over by mistake, and an ES256 key pair.
    const EC_PRIVATE_SEC1: &str = include_str!("../tests/fixtures/es256-private-sec1.pem");
    const EC_PRIVATE_PKCS8: &str = include_str!("../tests/fixtures/es256-private.pem");
    const EC_PUBLIC: &str = include_str!("../tests/fixtures/es256-public.pem");
    const RSA_PRIVATE_PKCS1: &str = include_str!("../tests/fixtures/rs256-private-pkcs1.pem");

    const SECRET: &[u8] = b"a-shared-secret-of-at-least-32-bytes";

    fn hs256(leeway_secs: u64) -> PlayerTokenConfig {
        PlayerTokenConfig::new(
            "HS256",
            SECRET,
            "casino".into(),
            "pitboss".into(),
            leeway_secs,
        )
        .unwrap()
    }

    /// A token with `claims`, signed with `key` under `alg`.
    fn token(
        alg: jsonwebtoken::Algorithm,
        key: &jsonwebtoken::EncodingKey,
        claims: serde_json::Value,
    ) -> String {
        jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, key).unwrap()
    }

    /// Standard claims valid now, with `extra` merged in (`null` removes one).
    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let now = jsonwebtoken::get_current_timestamp();
        let mut claims = serde_json::json!({
            "sub": "c-42", "iss": "casino", "aud": "pitboss", "exp": now + 300,
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }

    #[test]
    fn a_token_not_valid_yet_is_refused_beyond_the_leeway() {
        let config = hs256(30);
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
        let hs = jsonwebtoken::Algorithm::HS256;
        let now = jsonwebtoken::get_current_timestamp();
        let later = token(hs, &key, claims(serde_json::json!({ "nbf": now + 3600 })));
        assert_eq!(
            config.verify(&later).unwrap_err(),
            AuthError::Invalid("player token: not valid yet (nbf)".into())
        );
        // Within the leeway (the same as exp's), and in the past, it passes.
        let skewed = token(hs, &key, claims(serde_json::json!({ "nbf": now + 20 })));
        assert!(config.verify(&skewed).is_ok());
        let past = token(hs, &key, claims(serde_json::json!({ "nbf": now - 60 })));
        assert!(config.verify(&past).is_ok());
        let bad = token(hs, &key, claims(serde_json::json!({ "nbf": "soon" })));
        assert_eq!(
            config.verify(&bad).unwrap_err(),
            AuthError::Invalid("player token: claim nbf not a number".into())
        );
    }

    #[test]
    fn a_missing_claim_is_named() {
        let config = hs256(30);
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
        let hs = jsonwebtoken::Algorithm::HS256;
        let no_iss = token(hs, &key, claims(serde_json::json!({ "iss": null })));
        assert_eq!(
            config.verify(&no_iss).unwrap_err(),
            AuthError::Invalid("player token: claim iss missing".into())
        );
        let no_exp = token(hs, &key, claims(serde_json::json!({ "exp": "tomorrow" })));
        assert_eq!(
            config.verify(&no_exp).unwrap_err(),
            AuthError::Invalid("player token: claim exp missing or not a number".into())
        );
    }

    /// A private key where the public one belongs is refused when the node
    /// starts, not by "bad signature" on every token afterwards.
    #[test]
    fn a_private_key_is_refused_for_rs256_and_es256() {
        for (alg, pem) in [
            ("RS256", RSA_PRIVATE_PKCS1),
            ("ES256", EC_PRIVATE_SEC1),
            ("ES256", EC_PRIVATE_PKCS8),
        ] {
            let err = PlayerTokenConfig::new(alg, pem.as_bytes(), "c".into(), "p".into(), 30)
                .err()
                .unwrap_or_else(|| panic!("{alg}: a private key was taken"));
            assert!(
                err.contains("holds a private key") && err.contains("openssl pkey"),
                "{alg}: {err}"
            );
        }
        // The public key derived as the message says verifies the signer's tokens.
        let config = PlayerTokenConfig::new(
            "ES256",
            EC_PUBLIC.as_bytes(),
            "casino".into(),
            "pitboss".into(),
            30,
        )
        .unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(EC_PRIVATE_PKCS8.as_bytes()).unwrap();
        let signed = token(
            jsonwebtoken::Algorithm::ES256,
            &key,
            claims(serde_json::json!({})),
        );
        assert_eq!(
            config.verify(&signed).unwrap().id,
            PlayerId::verified("c-42")
        );
    }
}
