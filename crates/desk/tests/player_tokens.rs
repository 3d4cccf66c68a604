//! Player tokens signed by the casino backend: each configured algorithm verifies
//! its own tokens and refuses everything else.
#![allow(missing_docs)]

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pitboss_desk::{AuthError, PlayerTokenConfig};
use serde_json::json;

const ES_PRIVATE: &[u8] = include_bytes!("fixtures/es256-private.pem");
const ES_PUBLIC: &[u8] = include_bytes!("fixtures/es256-public.pem");
const RS_PRIVATE: &[u8] = include_bytes!("fixtures/rs256-private.pem");
const RS_PUBLIC: &[u8] = include_bytes!("fixtures/rs256-public.pem");
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(exp_offset: i64) -> serde_json::Value {
    json!({
        "sub": "42", "iss": "casino", "aud": "pitboss", "exp": now() + exp_offset,
        "name": "Deniz", "lang": "tr", "vip_tier": 9, "jurisdiction": "MT", "self_excluded": true
    })
}

fn config(alg: &str, key: &[u8]) -> PlayerTokenConfig {
    PlayerTokenConfig::new(alg, key, "casino".into(), "pitboss".into(), 30).unwrap()
}

#[test]
fn es256_rs256_and_hs256_tokens_verify_with_their_configured_key() {
    let cases = [
        (
            "ES256",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(ES_PRIVATE).unwrap(),
            ES_PUBLIC,
        ),
        (
            "RS256",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RS_PRIVATE).unwrap(),
            RS_PUBLIC,
        ),
        (
            "HS256",
            Algorithm::HS256,
            EncodingKey::from_secret(SECRET),
            SECRET,
        ),
    ];
    for (name, alg, key, verify_key) in cases {
        let token = encode(&Header::new(alg), &claims(300), &key).unwrap();
        let card = config(name, verify_key).verify(&token).unwrap();
        assert_eq!(card.id.0, "p:42", "{name}");
        assert_eq!(card.name.as_deref(), Some("Deniz"));
        assert_eq!(card.language.as_deref(), Some("tr"));
        assert_eq!(card.vip_tier, 5, "tiers are clipped to the maximum");
        assert_eq!(card.jurisdiction.as_deref(), Some("MT"));
        assert!(card.self_excluded && card.verified);
    }
}

#[test]
fn the_configured_algorithm_wins_over_the_token_header() {
    // An HS256 token "signed" with the RS256 public key as the secret: the classic
    // algorithm-confusion forgery. A server configured for RS256 refuses it.
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims(300),
        &EncodingKey::from_secret(RS_PUBLIC),
    )
    .unwrap();
    assert!(matches!(
        config("RS256", RS_PUBLIC).verify(&forged),
        Err(AuthError::Invalid(_))
    ));
    // A token signed by another EC key is refused.
    let other = encode(
        &Header::new(Algorithm::RS256),
        &claims(300),
        &EncodingKey::from_rsa_pem(RS_PRIVATE).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        config("ES256", ES_PUBLIC).verify(&other),
        Err(AuthError::Invalid(_))
    ));
}

#[test]
fn expiry_issuer_audience_and_subject_are_required() {
    let cfg = config("HS256", SECRET);
    let key = EncodingKey::from_secret(SECRET);
    let sign = |c: serde_json::Value| encode(&Header::new(Algorithm::HS256), &c, &key).unwrap();
    assert_eq!(cfg.verify(&sign(claims(-120))), Err(AuthError::Expired));
    // Within the leeway (30 s) a just-expired token still passes.
    assert!(cfg.verify(&sign(claims(-5))).is_ok());
    let mut c = claims(300);
    c.as_object_mut().unwrap().remove("exp");
    assert!(
        matches!(cfg.verify(&sign(c)), Err(AuthError::Invalid(_))),
        "exp is required"
    );
    let mut c = claims(300);
    c["iss"] = json!("someone");
    assert!(matches!(cfg.verify(&sign(c)), Err(AuthError::Invalid(_))));
    let mut c = claims(300);
    c["aud"] = json!("other");
    assert!(matches!(cfg.verify(&sign(c)), Err(AuthError::Invalid(_))));
    let mut c = claims(300);
    c.as_object_mut().unwrap().remove("sub");
    assert!(matches!(cfg.verify(&sign(c)), Err(AuthError::Invalid(_))));
}

#[test]
fn unsafe_configurations_are_refused() {
    assert!(PlayerTokenConfig::new("HS256", b"short", "i".into(), "a".into(), 30).is_err());
    assert!(PlayerTokenConfig::new("HS256", SECRET, "i".into(), "a".into(), 61).is_err());
    assert!(PlayerTokenConfig::new("none", SECRET, "i".into(), "a".into(), 0).is_err());
    assert!(PlayerTokenConfig::new("RS256", b"not a pem", "i".into(), "a".into(), 0).is_err());
}

#[test]
fn both_language_claims_and_any_vip_tier_are_read() {
    let hs = config("HS256", SECRET);
    let sign = |claims: &serde_json::Value| {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    };
    let mut c = claims(300);
    c["language"] = json!("ru");
    c["vip_tier"] = json!(300);
    let card = hs.verify(&sign(&c)).unwrap();
    assert_eq!(
        card.language.as_deref(),
        Some("ru"),
        "language wins over lang"
    );
    assert_eq!(
        card.vip_tier,
        pitboss_desk::MAX_VIP_TIER,
        "clipped, not refused"
    );
    for bad in [json!(-1), json!(1.5), json!("gold")] {
        c["vip_tier"] = bad.clone();
        assert!(
            matches!(hs.verify(&sign(&c)), Err(AuthError::Invalid(_))),
            "vip_tier {bad}"
        );
    }
}
