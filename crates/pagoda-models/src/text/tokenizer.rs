//! A model's tokenizer: a `tokenizers::Tokenizer` plus the special tokens a
//! server needs to know about (begin/end of sequence).

use crate::error::{ModelError, Result};

/// A token id with its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialToken {
    /// The id.
    pub id: u32,
    /// The token's text, e.g. `<|im_end|>`.
    pub text: String,
}

/// The tokenizer of a loaded model.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<SpecialToken>,
    eos: Option<SpecialToken>,
    stop_ids: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("stop_ids", &self.stop_ids)
            .finish()
    }
}

impl Tokenizer {
    /// Wraps `inner` with its special tokens. `stop_ids` are every id that
    /// ends generation (the eos token and any other the checkpoint declares).
    pub fn new(
        inner: tokenizers::Tokenizer,
        bos: Option<SpecialToken>,
        eos: Option<SpecialToken>,
        mut stop_ids: Vec<u32>,
    ) -> Self {
        if let Some(eos) = &eos {
            if !stop_ids.contains(&eos.id) {
                stop_ids.insert(0, eos.id);
            }
        }
        Self {
            inner,
            bos,
            eos,
            stop_ids,
        }
    }

    /// Looks up `id` and pairs it with its text.
    pub fn special(inner: &tokenizers::Tokenizer, id: u32) -> Option<SpecialToken> {
        inner.id_to_token(id).map(|text| SpecialToken { id, text })
    }

    /// Encodes `text`. With `add_special_tokens`, the tokenizer's own
    /// post-processing applies (e.g. a BOS token for models that want one);
    /// text produced by a chat template already carries its special tokens
    /// and is encoded without.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes `ids` into text, dropping special tokens when `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token's text.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The begin-of-sequence token, if the model has one.
    pub fn bos(&self) -> Option<&SpecialToken> {
        self.bos.as_ref()
    }

    /// The end-of-sequence token, if the model has one.
    pub fn eos(&self) -> Option<&SpecialToken> {
        self.eos.as_ref()
    }

    /// Every id that ends generation.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
