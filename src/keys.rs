//! Stats API keys: random, shown once, stored only as a hash.

/// Characters of a key that are kept in clear to tell keys apart.
pub const PREFIX_LEN: usize = 8;

/// A new random key, e.g. `tly_3f9a…` (32 random bytes, hex).
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("tly_{hex}"))
}

/// The stored form. Keys carry 256 random bits, so a fast hash is enough:
/// there is nothing to brute-force.
pub fn hash(key: &str) -> Vec<u8> {
    blake3::hash(key.as_bytes()).as_bytes().to_vec()
}
