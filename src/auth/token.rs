//! Opaque secrets handed to clients (session tokens, reset tokens) and the digests stored in
//! their place: a stolen table holds nothing that can be presented back.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

/// 256 random bits from the OS-seeded CSPRNG, URL-safe, behind `prefix`.
pub fn generate(prefix: &str) -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The SHA-256 digest that is stored and looked up instead of the token itself. High-entropy
/// tokens need no salt or slow hash: there is nothing to guess.
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    #[test]
    fn tokens_are_long_distinct_and_prefixed() {
        let a = super::generate("ses_");
        let b = super::generate("ses_");
        assert!(a.expose_secret().starts_with("ses_"));
        assert!(a.expose_secret().len() >= 4 + 43);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(super::digest("x").len(), 32);
    }
}
