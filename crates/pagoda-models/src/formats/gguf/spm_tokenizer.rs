//! SentencePiece vocabularies in GGUF (`tokenizer.ggml.model = "llama"`:
//! Llama 2, Mistral, Gemma), encoded as llama.cpp's `llm_tokenizer_spm`
//! does (`src/llama-vocab.cpp`):
//!
//! - spaces become `▁` (U+2581), and — when `tokenizer.ggml.add_space_prefix`
//!   is set, its default — one `▁` is put before every stretch of text that
//!   starts the input or follows a special token;
//! - the text is cut into characters, and adjacent pieces are merged while
//!   their concatenation is in the vocabulary, the one whose result scores
//!   highest (`tokenizer.ggml.scores`) first, the leftmost on a tie;
//! - a character that no token covers becomes its UTF-8 bytes as `<0xXX>`
//!   tokens (byte fallback).
//!
//! That merge order is a BPE whose merges are ranked by the score of the
//! token they make, which is how it is built here: every split of every
//! normal token into two tokens is a merge, ranked by the token's score
//! (Hugging Face's `convert_slow_tokenizer` derives the `tokenizer.json` of
//! these models the same way). Decoding turns `▁` back into spaces, joins
//! byte tokens into UTF-8 and drops the one space the prefix added.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::utils::Sequence as NormalizerSequence;
use tokenizers::normalizers::NormalizerWrapper;

use crate::error::{ModelError, Result};
use crate::formats::gguf::meta::GgufMeta;
use crate::formats::gguf::tokenizer::{tokenizer_error, TOKEN_TYPE_NORMAL};

/// SentencePiece's word-boundary mark, which stands for a space.
const SPACE_MARK: &str = "\u{2581}";

/// The SentencePiece model of a GGUF file, as a `tokenizers` BPE with byte
/// fallback, its normalizer and its decoder.
pub(crate) fn sentencepiece(
    meta: GgufMeta<'_>,
    tokens: &[&str],
    types: &[i64],
) -> Result<tokenizers::Tokenizer> {
    let path = meta.path();
    let scores = meta.floats("tokenizer.ggml.scores")?;
    if scores.len() != tokens.len() {
        return Err(ModelError::Metadata {
            path: path.to_path_buf(),
            key: "tokenizer.ggml.scores".into(),
            reason: format!("{} scores for {} tokens", scores.len(), tokens.len()),
        });
    }
    let add_space_prefix = meta
        .optional("tokenizer.ggml.add_space_prefix", |m, k| m.bool(k))?
        .unwrap_or(true);
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab.clone(), merges(tokens, types, &scores, &vocab))
        .byte_fallback(true);
    if let Some(unk) = meta
        .optional("tokenizer.ggml.unknown_token_id", |m, k| m.u32(k))?
        .and_then(|id| tokens.get(id as usize))
    {
        builder = builder.unk_token(unk.to_string());
    }
    let bpe = builder.build().map_err(|e| tokenizer_error(path, e))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);

    let escape: NormalizerWrapper = Replace::new(" ", SPACE_MARK)
        .map_err(|e| tokenizer_error(path, e))?
        .into();
    let normalizer: NormalizerWrapper = if add_space_prefix {
        NormalizerSequence::new(vec![Prepend::new(SPACE_MARK.to_string()).into(), escape]).into()
    } else {
        escape
    };
    inner
        .with_normalizer(Some(normalizer))
        .map_err(|e| tokenizer_error(path, e))?;
    let unescape: DecoderWrapper = Replace::new(SPACE_MARK, " ")
        .map_err(|e| tokenizer_error(path, e))?
        .into();
    let mut decoders = vec![unescape, ByteFallback::new().into(), Fuse::new().into()];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
}

/// Every way a normal token is two tokens joined, ranked by the joined
/// token's score (highest first); ties keep the order of the token ids,
/// then of the split points.
fn merges(tokens: &[&str], types: &[i64], scores: &[f32], vocab: &Vocab) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, u32, String, String)> = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        let normal = types.get(id).is_none_or(|&t| t == TOKEN_TYPE_NORMAL);
        if !normal {
            continue;
        }
        for (at, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(at);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                ranked.push((scores[id], id as u32, left.to_string(), right.to_string()));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, _, l, r)| (l, r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_are_ranked_by_the_score_of_what_they_make() {
        let tokens = ["<unk>", "a", "b", "c", "ab", "bc", "abc"];
        let types = [2, 1, 1, 1, 1, 1, 1];
        let scores = [0.0, -1.0, -1.0, -1.0, -3.0, -2.0, -2.5];
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let m = merges(&tokens, &types, &scores, &vocab);
        let pairs: Vec<(&str, &str)> = m.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        // "bc" (-2.0), then "abc" as a+bc and ab+c (-2.5), then "ab" (-3.0).
        assert_eq!(
            pairs,
            vec![("b", "c"), ("a", "bc"), ("ab", "c"), ("a", "b")]
        );
    }
}
