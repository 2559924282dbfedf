//! Typed access to GGUF metadata; every error names the file and the key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;

use crate::error::{ModelError, Result};

/// The metadata table of one GGUF file.
#[derive(Debug, Clone, Copy)]
pub struct GgufMeta<'a> {
    path: &'a Path,
    values: &'a HashMap<String, Value>,
}

impl<'a> GgufMeta<'a> {
    /// Wraps the metadata of the file at `path`.
    pub fn new(path: &'a Path, values: &'a HashMap<String, Value>) -> Self {
        Self { path, values }
    }

    /// The file the metadata came from.
    pub fn path(&self) -> &'a Path {
        self.path
    }

    fn error(&self, key: &str, reason: impl Into<String>) -> ModelError {
        ModelError::Metadata {
            path: PathBuf::from(self.path),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// Whether `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    fn value(&self, key: &str) -> Result<&'a Value> {
        self.values
            .get(key)
            .ok_or_else(|| self.error(key, "the key is missing"))
    }

    /// An unsigned integer of any width.
    pub fn u64(&self, key: &str) -> Result<u64> {
        let v = self.value(key)?;
        let n = match v {
            Value::U8(x) => Some(*x as u64),
            Value::U16(x) => Some(*x as u64),
            Value::U32(x) => Some(*x as u64),
            Value::U64(x) => Some(*x),
            Value::I8(x) => u64::try_from(*x).ok(),
            Value::I16(x) => u64::try_from(*x).ok(),
            Value::I32(x) => u64::try_from(*x).ok(),
            Value::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.ok_or_else(|| self.error(key, format!("expected a non-negative integer, found {v:?}")))
    }

    /// A count or size that must fit in `usize`.
    pub fn usize(&self, key: &str) -> Result<usize> {
        usize::try_from(self.u64(key)?).map_err(|_| self.error(key, "the value is too large"))
    }

    /// A token id.
    pub fn u32(&self, key: &str) -> Result<u32> {
        u32::try_from(self.u64(key)?).map_err(|_| self.error(key, "the value is too large"))
    }

    /// A float of either width.
    pub fn f32(&self, key: &str) -> Result<f32> {
        match self.value(key)? {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            other => Err(self.error(key, format!("expected a float, found {other:?}"))),
        }
    }

    /// A boolean.
    pub fn bool(&self, key: &str) -> Result<bool> {
        match self.value(key)? {
            Value::Bool(b) => Ok(*b),
            other => Err(self.error(key, format!("expected a boolean, found {other:?}"))),
        }
    }

    /// A string.
    pub fn str(&self, key: &str) -> Result<&'a str> {
        match self.value(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.error(key, format!("expected a string, found {other:?}"))),
        }
    }

    /// An array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&'a str>> {
        match self.value(key)? {
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.as_str()),
                    other => Err(self.error(key, format!("expected strings, found {other:?}"))),
                })
                .collect(),
            other => Err(self.error(key, format!("expected an array, found {other:?}"))),
        }
    }

    /// An array of integers (token types).
    pub fn ints(&self, key: &str) -> Result<Vec<i64>> {
        match self.value(key)? {
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::I32(x) => Ok(*x as i64),
                    Value::U32(x) => Ok(*x as i64),
                    Value::I64(x) => Ok(*x),
                    Value::U64(x) => Ok(*x as i64),
                    Value::I8(x) => Ok(*x as i64),
                    Value::U8(x) => Ok(*x as i64),
                    Value::I16(x) => Ok(*x as i64),
                    Value::U16(x) => Ok(*x as i64),
                    other => Err(self.error(key, format!("expected integers, found {other:?}"))),
                })
                .collect(),
            other => Err(self.error(key, format!("expected an array, found {other:?}"))),
        }
    }

    /// An array of numbers (token scores), as f32.
    pub fn floats(&self, key: &str) -> Result<Vec<f32>> {
        match self.value(key)? {
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::F32(x) => Ok(*x),
                    Value::F64(x) => Ok(*x as f32),
                    Value::I32(x) => Ok(*x as f32),
                    other => Err(self.error(key, format!("expected numbers, found {other:?}"))),
                })
                .collect(),
            other => Err(self.error(key, format!("expected an array, found {other:?}"))),
        }
    }

    /// `Some` of the value when the key is present, `None` when absent, an
    /// error when present with the wrong type.
    pub fn optional<T>(
        &self,
        key: &str,
        get: impl Fn(&Self, &str) -> Result<T>,
    ) -> Result<Option<T>> {
        if self.has(key) {
            get(self, key).map(Some)
        } else {
            Ok(None)
        }
    }
}
