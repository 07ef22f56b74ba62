//! Dashboard sign-in: password hashes, random tokens and the limits on
//! sign-in attempts ([`limiter`]). Storage of users and sessions is
//! `store::users`; cookies and forms are `http`'s.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use subtle::ConstantTimeEq;

pub mod limiter;

pub use limiter::LoginLimiter;

/// Password hashes cost 19 MiB and about 20 ms each, on purpose; at most
/// this many are computed at once, so a flood of sign-ins from many
/// addresses waits in line instead of exhausting a small server's memory.
pub const CONCURRENT_PASSWORD_CHECKS: usize = 2;

/// Shorter passwords are refused.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longer ones too: hashing is deliberately slow, and this bounds it.
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the password needs at least {MIN_PASSWORD_CHARS} characters")]
    PasswordTooShort,
    #[error("the password may have at most {MAX_PASSWORD_BYTES} bytes")]
    PasswordTooLong,
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// The longest email address (RFC 5321's path limit, less its brackets).
pub const MAX_EMAIL_BYTES: usize = 254;

/// A trimmed email address, if it looks like one.
pub fn valid_email(email: &str) -> Option<String> {
    let e = email.trim();
    let ok = e.len() <= MAX_EMAIL_BYTES
        && e.split_once('@')
            .is_some_and(|(local, host)| !local.is_empty() && host.contains('.'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| e.to_string())
}

/// The Argon2id PHC string of `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AuthError::PasswordTooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::PasswordTooLong);
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A PHC string no password matches, verified when an email is unknown so
/// that a wrong email takes as long as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let mut pw = [0u8; 24];
        let _ = getrandom::fill(&mut pw);
        let pw: String = pw.iter().map(|b| format!("{b:02x}")).collect();
        hash_password(&pw).unwrap_or_default()
    })
}

/// 32 random bytes as 64 hex characters: session, CSRF, setup and share tokens.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The stored form of a session token: it has 256 random bits, so a fast
/// hash is enough.
pub fn token_hash(token: &str) -> Vec<u8> {
    blake3::hash(token.as_bytes()).as_bytes().to_vec()
}

/// Compares secrets without leaking, through timing, how much of them matched.
pub fn tokens_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_round_trip() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &phc));
        assert!(!verify_password("correct horse batterx", &phc));
        assert!(!verify_password("x", "not a phc string"));
        assert!(matches!(
            hash_password("short"),
            Err(AuthError::PasswordTooShort)
        ));
    }

    #[test]
    fn tokens_are_random_and_compare_exactly() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(tokens_equal(&a, &a.clone()));
        assert!(!tokens_equal(&a, &b));
        assert!(!tokens_equal(&a, &a[..10]));
    }
}
