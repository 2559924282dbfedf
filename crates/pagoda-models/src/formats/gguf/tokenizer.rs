//! Rebuilds a model's tokenizer from GGUF metadata (`tokenizer.ggml.*`) into
//! a `tokenizers::Tokenizer` that encodes like llama.cpp's
//! (`src/llama-vocab.cpp`): byte-level BPE (`tokenizer.ggml.model = "gpt2"`)
//! with the pre-tokenizer the `tokenizer.ggml.pre` key names, or
//! SentencePiece (`"llama"`: Llama 2, Mistral, Gemma), built in
//! [`crate::formats::gguf::spm_tokenizer`]. Both share the special tokens,
//! the begin/end tokens and the BOS template here.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::{ModelError, Result};
use crate::formats::gguf::meta::GgufMeta;
use crate::text::tokenizer::Tokenizer;

/// llama.cpp's token types (`llama_token_type`).
pub(crate) const TOKEN_TYPE_NORMAL: i64 = 1;
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Llama 3's split: contractions, letter runs, digits in groups of up to three.
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split (also DeepSeek-R1-Distill-Qwen's): like Llama 3 but one digit at a time.
const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How text is split before BPE, by `tokenizer.ggml.pre`.
enum PreTokenizer {
    /// GPT-2's byte-level regex.
    Gpt2,
    /// Every digit on its own, then GPT-2's regex (SmolLM2, StarCoder).
    DigitsThenGpt2,
    /// A custom split regex, then byte-level mapping without GPT-2's regex.
    Regex { pattern: &'static str, nfc: bool },
}

fn pre_tokenizer_for(path: &Path, name: &str) -> Result<PreTokenizer> {
    Ok(match name {
        "default" | "gpt2" | "gpt-2" => PreTokenizer::Gpt2,
        "smollm" | "starcoder" | "refact" => PreTokenizer::DigitsThenGpt2,
        "llama-bpe" | "llama3" | "smaug-bpe" => PreTokenizer::Regex {
            pattern: REGEX_LLAMA3,
            nfc: false,
        },
        "qwen2" | "deepseek-r1-qwen" => PreTokenizer::Regex {
            pattern: REGEX_QWEN2,
            nfc: true,
        },
        other => {
            return Err(ModelError::Unsupported {
                path: path.to_path_buf(),
                what: "pre-tokenizer (tokenizer.ggml.pre)",
                value: format!(
                    "`{other}` (supported: gpt2, smollm, starcoder, refact, llama-bpe, qwen2, deepseek-r1-qwen)"
                ),
            })
        }
    })
}

pub(crate) fn tokenizer_error(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(format!("{}: {e}", path.display()))
}

/// Builds the tokenizer described by a GGUF file's metadata.
pub fn tokenizer_from_gguf(meta: GgufMeta<'_>) -> Result<Tokenizer> {
    let path = meta.path();
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let types = meta
        .optional("tokenizer.ggml.token_type", |m, k| m.ints(k))?
        .unwrap_or_default();
    let inner = match meta.str("tokenizer.ggml.model")? {
        "gpt2" => byte_level_bpe(meta, &tokens)?,
        "llama" => crate::formats::gguf::spm_tokenizer::sentencepiece(meta, &tokens, &types)?,
        model => {
            return Err(ModelError::Unsupported {
                path: path.to_path_buf(),
                what: "tokenizer model (tokenizer.ggml.model)",
                value: format!(
                "`{model}` (supported: gpt2, i.e. byte-level BPE, and llama, i.e. SentencePiece)"
            ),
            })
        }
    };
    finish(meta, inner, &tokens, &types)
}

/// The byte-level BPE of a `gpt2` tokenizer, with its pre-tokenizer.
fn byte_level_bpe(meta: GgufMeta<'_>, tokens: &[&str]) -> Result<tokenizers::Tokenizer> {
    let path = meta.path();
    let merges = meta
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| ModelError::Metadata {
                    path: path.to_path_buf(),
                    key: "tokenizer.ggml.merges".into(),
                    reason: format!("merge `{m}` is not two tokens separated by a space"),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| tokenizer_error(path, e))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);

    let pre_name = meta
        .optional("tokenizer.ggml.pre", |m, k| m.str(k))?
        .unwrap_or("default");
    let pre: PreTokenizerWrapper = match pre_tokenizer_for(path, pre_name)? {
        PreTokenizer::Gpt2 => ByteLevel::new(false, true, true).into(),
        PreTokenizer::DigitsThenGpt2 => Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])
        .into(),
        PreTokenizer::Regex { pattern, nfc } => {
            if nfc {
                inner
                    .with_normalizer(Some(NFC))
                    .map_err(|e| tokenizer_error(path, e))?;
            }
            let split = Split::new(
                SplitPattern::Regex(pattern.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| tokenizer_error(path, e))?;
            Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into()
        }
    };
    inner.with_pre_tokenizer(Some(pre));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(inner)
}

/// Adds the special and user-defined tokens, the begin/end tokens and the
/// BOS template to a tokenizer's model.
fn finish(
    meta: GgufMeta<'_>,
    mut inner: tokenizers::Tokenizer,
    tokens: &[&str],
    types: &[i64],
) -> Result<Tokenizer> {
    let path = meta.path();
    // Control tokens are special (skipped when decoding for display);
    // user-defined ones are ordinary text that must never be split.
    let mut specials = Vec::new();
    let mut user_defined = Vec::new();
    for (i, &ty) in types.iter().enumerate() {
        let Some(text) = tokens.get(i) else { break };
        match ty {
            TOKEN_TYPE_CONTROL => specials.push(AddedToken::from(text.to_string(), true)),
            TOKEN_TYPE_USER_DEFINED => {
                user_defined.push(AddedToken::from(text.to_string(), false).normalized(false))
            }
            _ => {}
        }
    }
    inner
        .add_special_tokens(specials)
        .map_err(|e| tokenizer_error(path, e))?;
    inner
        .add_tokens(user_defined)
        .map_err(|e| tokenizer_error(path, e))?;

    let token_at = |key: &str| -> Result<Option<crate::text::tokenizer::SpecialToken>> {
        match meta.optional(key, |m, k| m.u32(k))? {
            None => Ok(None),
            Some(id) => {
                Tokenizer::special(&inner, id)
                    .map(Some)
                    .ok_or_else(|| ModelError::Metadata {
                        path: path.to_path_buf(),
                        key: key.to_string(),
                        reason: format!("id {id} is outside the vocabulary of {}", tokens.len()),
                    })
            }
        }
    };
    let bos = token_at("tokenizer.ggml.bos_token_id")?;
    let eos = token_at("tokenizer.ggml.eos_token_id")?;
    let eot = token_at("tokenizer.ggml.eot_token_id")?;

    let add_bos = meta
        .optional("tokenizer.ggml.add_bos_token", |m, k| m.bool(k))?
        .unwrap_or(false);
    if let (true, Some(bos)) = (add_bos, &bos) {
        let template = TemplateProcessing::builder()
            .try_single(format!("{} $A", bos.text))
            .map_err(|e| tokenizer_error(path, e))?
            .special_tokens(vec![(bos.text.clone(), bos.id)])
            .build()
            .map_err(|e| tokenizer_error(path, e))?;
        inner.with_post_processor(Some(template));
    }

    let stop_ids = eot.iter().map(|t| t.id).collect();
    Ok(Tokenizer::new(inner, bos, eos, stop_ids))
}
