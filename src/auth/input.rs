//! Checks of what clients type: addresses and passwords.

use secrecy::{ExposeSecret, SecretString};

use super::error::AuthError;
use crate::telemetry::mask_email;

pub const PASSWORD_MIN_CHARS: usize = 6;
pub const PASSWORD_MAX_CHARS: usize = 128;

/// An email address as the service keeps it: trimmed, lower-cased and of a valid form. Parsed
/// once at the edge; its `Debug` masks it, so it cannot reach a log whole.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Trims and lower-cases an address and checks its form (400 naming the field otherwise).
    pub fn parse(raw: &str) -> Result<Email, AuthError> {
        normalize_email(raw).map(Email)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mask_email(&self.0))
    }
}

fn normalize_email(raw: &str) -> Result<String, AuthError> {
    let email = raw.trim().to_lowercase();
    let invalid =
        || AuthError::InvalidInput(String::from("field `email`: not a valid email address."));
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(invalid)?;
    let domain_ok = domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.contains('@')
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    if domain_ok && local_ok {
        Ok(email)
    } else {
        Err(invalid())
    }
}

/// 6 to 128 characters (40005 otherwise).
pub fn check_password(password: &SecretString) -> Result<(), AuthError> {
    let length = password.expose_secret().chars().count();
    if (PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&length) {
        Ok(())
    } else {
        Err(AuthError::PasswordLength)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalized_or_refused() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "a b@example.com",
            "alice@localhost",
            "alice@@example.com",
            "alice@exa mple.com",
            "a..b@example.com",
            "x@-bad-.com",
            "'; DROP TABLE users; --@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(65))).is_err());
        let parsed = Email::parse(" Bob@Example.com").unwrap();
        assert_eq!(parsed.as_str(), "bob@example.com");
        assert_eq!(format!("{parsed:?}"), "b***@example.com");
    }

    #[test]
    fn passwords_have_six_to_128_characters() {
        let check = |s: &str| check_password(&SecretString::from(s.to_owned())).is_ok();
        assert!(!check("12345"));
        assert!(check("123456"));
        assert!(check(&"密".repeat(128)));
        assert!(!check(&"x".repeat(129)));
    }
}
