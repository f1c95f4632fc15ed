//! API key generation.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore as _;

/// A fresh agent API key: `pcs_` followed by 32 random bytes from the OS, base64url
/// without padding (43 characters). The prefix makes leaked keys easy to spot by secret
/// scanners; 256 bits of entropy make PBKDF2 brute force of a stolen verifier hopeless.
pub fn generate_api_key() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!("pcs_{}", URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_prefix_length_and_charset_and_differ() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert_ne!(a, b);
        let body = a.strip_prefix("pcs_").expect("prefix");
        assert_eq!(body.len(), 43);
        assert!(body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(body).expect("base64url").len(), 32);
    }
}
