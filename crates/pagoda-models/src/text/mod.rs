//! Text in and out of a model: the [`tokenizer`] and its special tokens,
//! incremental detokenization ([`detokenizer`]) and chat templates
//! ([`chat_template`]).

pub(crate) mod chat_template;
pub(crate) mod detokenizer;
pub(crate) mod tokenizer;
