//! The layers the decoder families are built from, each over a flattened
//! batch of token rows: [`linear`] projections (whatever the weight's
//! storage), the token [`embedding`], RMS [`norm`], rotary position
//! embeddings ([`rope`]), the [`swiglu`] feed-forward block, the mixture of
//! experts ([`moe`]: DeepSeek, Qwen3-MoE, Mixtral), and paged
//! [`attention`] over the KV pool of [`kv_cache`].

pub(crate) mod attention;
pub(crate) mod embedding;
pub(crate) mod kv_cache;
pub(crate) mod linear;
pub mod moe;
pub(crate) mod norm;
pub(crate) mod rope;
pub(crate) mod swiglu;
