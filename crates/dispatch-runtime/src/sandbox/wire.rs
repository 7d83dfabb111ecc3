//! Byte strings on the stage's wire: a path, an argument or an environment
//! variable is a JSON string when it is UTF-8 (nearly always), else the
//! array of its bytes. serde's own form for `Vec<u8>` and `CString` is the
//! array, a number per byte: a tool call's spec was ~13.5 KB of them, and
//! the stage parsed each byte as a number.
//!
//! Used as `#[serde(with = "wire::one")]` (a `Vec<u8>` or a `CString`),
//! `wire::many` (a `Vec` of them) and `wire::pairs` (an environment).

use std::ffi::CString;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// A byte string as it is held.
pub(super) trait Text: Sized {
    fn bytes(&self) -> &[u8];
    fn from_vec(bytes: Vec<u8>) -> Result<Self, String>;
}

impl Text for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn from_vec(bytes: Vec<u8>) -> Result<Self, String> {
        Ok(bytes)
    }
}

impl Text for CString {
    fn bytes(&self) -> &[u8] {
        self.as_bytes()
    }
    fn from_vec(bytes: Vec<u8>) -> Result<Self, String> {
        CString::new(bytes).map_err(|e| e.to_string())
    }
}

/// Serializes through [`put`].
struct Ref<'a, T>(&'a T);

impl<T: Text> Serialize for Ref<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        put(self.0.bytes(), s)
    }
}

/// Deserializes through [`Bytes`].
struct Own<T>(T);

impl<'de, T: Text> Deserialize<'de> for Own<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = d.deserialize_any(Bytes)?;
        T::from_vec(bytes).map(Own).map_err(de::Error::custom)
    }
}

fn put<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => s.serialize_str(text),
        Err(_) => s.serialize_bytes(bytes),
    }
}

/// A string or an array of bytes, as bytes.
struct Bytes;

impl<'de> Visitor<'de> for Bytes {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an array of bytes")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        Ok(v.as_bytes().to_vec())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Vec<u8>, E> {
        Ok(v.into_bytes())
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

/// One byte string.
pub(super) mod one {
    use super::*;

    pub fn serialize<T: Text, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        put(v.bytes(), s)
    }
    pub fn deserialize<'de, T: Text, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        Own::<T>::deserialize(d).map(|o| o.0)
    }
}

/// A list of byte strings.
pub(super) mod many {
    use super::*;

    pub fn serialize<T: Text, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(Ref))
    }
    pub fn deserialize<'de, T: Text, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        let list = Vec::<Own<T>>::deserialize(d)?;
        Ok(list.into_iter().map(|o| o.0).collect())
    }
}

/// Pairs of byte strings (an environment).
pub(super) mod pairs {
    use super::*;

    pub fn serialize<T: Text, S: Serializer>(v: &[(T, T)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(k, v)| (Ref(k), Ref(v))))
    }
    pub fn deserialize<'de, T: Text, D: Deserializer<'de>>(d: D) -> Result<Vec<(T, T)>, D::Error> {
        let list = Vec::<(Own<T>, Own<T>)>::deserialize(d)?;
        Ok(list.into_iter().map(|(k, v)| (k.0, v.0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Sample {
        #[serde(with = "one")]
        program: Vec<u8>,
        #[serde(with = "one")]
        cwd: CString,
        #[serde(with = "many")]
        args: Vec<Vec<u8>>,
        #[serde(with = "many")]
        seal: Vec<CString>,
        #[serde(with = "pairs")]
        env: Vec<(Vec<u8>, Vec<u8>)>,
    }

    fn sample(odd: &[u8]) -> Sample {
        Sample {
            program: b"/bin/sh".to_vec(),
            cwd: CString::new(odd.to_vec()).expect("no NUL"),
            args: vec![b"-c".to_vec(), odd.to_vec(), b"\"quoted\"\n".to_vec()],
            seal: vec![CString::new("/newroot/tmp").expect("no NUL")],
            env: vec![
                (b"PATH".to_vec(), b"/usr/bin".to_vec()),
                (b"X".to_vec(), odd.to_vec()),
            ],
        }
    }

    #[test]
    fn utf8_is_a_string_and_other_bytes_an_array_both_come_back_exact() {
        let odd = std::ffi::OsStr::from_bytes(b"caf\xe9/\xff").as_bytes();
        let s = sample(odd);
        let json = serde_json::to_string(&s).expect("serializes");
        assert!(json.contains(r#""program":"/bin/sh""#), "{json}");
        assert!(json.contains(r#"["PATH","/usr/bin"]"#), "{json}");
        assert!(json.contains("[99,97,102,233,47,255]"), "{json}");
        let back: Sample = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, s);
        let plain = sample("é/ü".as_bytes());
        let json = serde_json::to_string(&plain).expect("serializes");
        assert!(json.contains(r#""cwd":"é/ü""#), "{json}");
        assert_eq!(
            serde_json::from_str::<Sample>(&json).expect("reads back"),
            plain
        );
    }

    #[test]
    fn a_nul_in_a_c_string_is_an_error_not_a_panic() {
        let json = r#"{"program":"x","cwd":"a\u0000b","args":[],"seal":[],"env":[]}"#;
        let err = serde_json::from_str::<Sample>(json).expect_err("a NUL is refused");
        assert!(err.to_string().contains("nul"), "{err}");
    }
}
