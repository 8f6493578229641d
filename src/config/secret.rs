//! A string that must never be shown: not in logs, the TUI, the journal or `config check`.
//!
//! `Debug` and `Display` print a fixed mask, and serializing (which is how `config check` prints
//! the resolved config) writes the mask too. The only way to the value is [`Secret::expose`],
//! which keeps every use of the raw value easy to find.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

pub const MASK: &str = "<redacted>";

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A fresh random secret: 32 bytes from the OS generator, hex encoded.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Secret(hex::encode(bytes))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { MASK })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "" } else { MASK })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { MASK })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), MASK);
        assert_eq!(format!("{s:?}"), MASK);
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{MASK}\""));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn generated_secrets_differ() {
        let a = Secret::generate();
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a, Secret::generate());
    }
}
