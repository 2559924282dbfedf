//! Structured output: what a choice's text must match (a JSON schema, any
//! JSON object, a regular expression or a Lark grammar), compiled by
//! llguidance against the model's vocabulary.
//!
//! [`GrammarCompiler`] is built once per model (it indexes every token's
//! bytes in a trie); [`GrammarCompiler::compile`] turns a [`GrammarSpec`]
//! into a [`Grammar`], refusing what cannot be enforced before the request
//! is queued. Each choice then walks its own copy of the compiled parser
//! (see [`crate::constraint`]).

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{ParserFactory, TokenParser};
use pagoda_models::Tokenizer;

/// What a choice's output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// Any JSON object (`response_format: json_object`).
    JsonObject,
    /// A JSON value valid against this schema.
    JsonSchema {
        /// The schema.
        schema: serde_json::Value,
        /// OpenAI's strict mode: the output has exactly the properties the
        /// schema names (an object schema without `additionalProperties`
        /// allows no others). Either way every keyword is enforced, and
        /// one that cannot be is an error naming it.
        strict: bool,
    },
    /// Text matching this regular expression (whole output).
    Regex(String),
    /// Text of this Lark grammar (llguidance's dialect: `start` is the
    /// root rule; `%json {…}` embeds a JSON schema).
    Lark(String),
}

impl GrammarSpec {
    /// The size of its text in bytes (a schema as compact JSON).
    pub fn size(&self) -> usize {
        match self {
            GrammarSpec::JsonObject => 0,
            GrammarSpec::JsonSchema { schema, .. } => schema.to_string().len(),
            GrammarSpec::Regex(rx) => rx.len(),
            GrammarSpec::Lark(lark) => lark.len(),
        }
    }

    /// A short name of the kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GrammarSpec::JsonObject => "json_object",
            GrammarSpec::JsonSchema { .. } => "json_schema",
            GrammarSpec::Regex(_) => "regex",
            GrammarSpec::Lark(_) => "lark",
        }
    }
}

/// Why a grammar could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrammarError {
    /// The model's vocabulary could not be indexed for grammars.
    #[error("structured output is unavailable for this model's tokenizer: {0}")]
    Vocabulary(String),
    /// The grammar is invalid, or uses a feature that cannot be enforced;
    /// the message is llguidance's (it names the keyword or the rule).
    #[error("{0}")]
    Invalid(String),
}

/// Compiles grammars for one model's vocabulary.
pub struct GrammarCompiler {
    factory: ParserFactory,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler")
            .field(
                "vocab_size",
                &self.factory.tok_env().tok_trie().vocab_size(),
            )
            .finish()
    }
}

impl GrammarCompiler {
    /// Indexes `tokenizer`'s tokens; `vocab_size` is the width of the
    /// model's logits (ids past the tokenizer's are never allowed) and
    /// `eos_ids` the ids that may end a choice once its grammar is complete.
    pub fn new(
        tokenizer: &Tokenizer,
        vocab_size: usize,
        eos_ids: &[u32],
    ) -> Result<Self, GrammarError> {
        let vocab = |e: String| GrammarError::Vocabulary(e);
        let json = tokenizer
            .inner()
            .to_string(false)
            .map_err(|e| vocab(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| vocab(e.to_string()))?;
        // llguidance's reader asserts on vocabularies it does not expect.
        let bytes = std::panic::catch_unwind(|| llguidance::token_bytes_from_tokenizer_json(&json))
            .map_err(|_| vocab("the vocabulary has tokens of an unknown kind".into()))?
            .map_err(|e| vocab(e.to_string()))?;
        let mut words = bytes;
        if words.len() > vocab_size {
            return Err(vocab(format!(
                "the tokenizer has {} tokens but the model only {vocab_size} logits",
                words.len()
            )));
        }
        words.resize(vocab_size, Vec::new());
        let eos = *eos_ids
            .first()
            .ok_or_else(|| vocab("the model has no end-of-sequence token".into()))?;
        let info = TokRxInfo::new(vocab_size as u32, eos);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(eos_ids);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| vocab(e.to_string()))?;
        factory.quiet();
        Ok(Self { factory })
    }

    /// Compiles `spec`; an error names what cannot be enforced.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Grammar, GrammarError> {
        let size = spec.size();
        if size > MAX_GRAMMAR_BYTES {
            return Err(GrammarError::Invalid(format!(
                "the grammar is {size} bytes; at most {MAX_GRAMMAR_BYTES} are accepted"
            )));
        }
        let top = match spec {
            GrammarSpec::JsonObject => TopLevelGrammar::from_json_schema(with_layout(
                serde_json::json!({"type": "object"}),
                true,
            )),
            GrammarSpec::JsonSchema { schema, strict } => {
                TopLevelGrammar::from_json_schema(with_layout(schema.clone(), *strict))
            }
            GrammarSpec::Regex(rx) => TopLevelGrammar::from_regex(rx),
            GrammarSpec::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        };
        // A grammar llguidance cannot handle must be an error, not a panic
        // of the server.
        let parser = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.factory.create_parser(top)
        }))
        .map_err(|_| GrammarError::Invalid("the grammar could not be compiled".into()))?
        .map_err(|e| GrammarError::Invalid(e.to_string()))?;
        probe(&parser)?;
        Ok(Grammar {
            parser: Arc::new(parser),
            kind: spec.kind(),
        })
    }
}

/// `schema` with pagoda's JSON layout — `", "` and `": "` between items,
/// no other whitespace (free whitespace lets a sampled model pad forever) —
/// unless the schema sets its own `x-guidance` options; strict schemas have
/// their objects closed.
/// The largest grammar accepted, in bytes of its text (a JSON schema as
/// JSON, a regex, a Lark grammar): 64 KiB. Larger ones are refused before
/// they are compiled.
pub const MAX_GRAMMAR_BYTES: usize = 64 * 1024;

/// Whether a compiled grammar can begin: its first mask must compute and
/// allow some token (or the end). A grammar that compiles but can produce
/// nothing (`[^\s\S]`, a schema that only refers to itself) or that is too
/// large to step through (its lexer runs out of fuel) is refused here,
/// before the request is queued, rather than failing at its first step.
fn probe(parser: &TokenParser) -> Result<(), GrammarError> {
    let mut matcher = llguidance::Matcher::new(Ok(parser.deep_clone()));
    let mask = matcher
        .compute_mask_or_eos()
        .map_err(|e| GrammarError::Invalid(format!("the grammar cannot start: {e}")))?;
    if mask.is_zero() {
        return Err(GrammarError::Invalid(
            "the grammar matches no text: no token can begin it".into(),
        ));
    }
    Ok(())
}

fn with_layout(mut schema: serde_json::Value, strict: bool) -> serde_json::Value {
    if strict {
        close_objects(&mut schema);
    }
    let layout = serde_json::json!({
        "item_separator": ", ",
        "key_separator": ": ",
        "whitespace_flexible": false,
    });
    if let (Some(obj), Some(layout)) = (schema.as_object_mut(), layout.as_object()) {
        let options = obj
            .entry("x-guidance")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(options) = options.as_object_mut() {
            for (key, value) in layout {
                options.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    }
    schema
}

/// A Lark rule body that matches JSON valid against `schema`, written with
/// the same layout (and, when `strict`, closed objects) as
/// [`GrammarSpec::JsonSchema`]: for grammars that embed JSON, such as a
/// forced tool call.
pub fn lark_json(schema: &serde_json::Value, strict: bool) -> String {
    format!("%json {}", with_layout(schema.clone(), strict))
}

/// Gives every object schema in `schema` that names its `properties` but
/// not `additionalProperties` an `additionalProperties: false`, walking the
/// keywords that hold subschemas. The parts of an `allOf` describe one
/// object together, so neither they nor the schema holding them are closed
/// at that level (each would reject the others' properties); what they
/// nest is.
fn close_objects(schema: &mut serde_json::Value) {
    close_objects_at(schema, true);
}

fn close_objects_at(schema: &mut serde_json::Value, close_here: bool) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let composed = obj.contains_key("allOf");
    if close_here
        && !composed
        && obj.contains_key("properties")
        && !obj.contains_key("additionalProperties")
    {
        obj.insert("additionalProperties".into(), false.into());
    }
    for (key, value) in obj.iter_mut() {
        match key.as_str() {
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                if let Some(map) = value.as_object_mut() {
                    map.values_mut().for_each(close_objects);
                }
            }
            "allOf" => {
                if let Some(list) = value.as_array_mut() {
                    list.iter_mut().for_each(|v| close_objects_at(v, false));
                }
            }
            "anyOf" | "oneOf" | "prefixItems" => {
                if let Some(list) = value.as_array_mut() {
                    list.iter_mut().for_each(close_objects);
                }
            }
            "items"
            | "additionalProperties"
            | "not"
            | "contains"
            | "if"
            | "then"
            | "else"
            | "propertyNames"
            | "unevaluatedProperties"
            | "unevaluatedItems" => close_objects(value),
            _ => {}
        }
    }
}

/// A compiled grammar, shared by every choice of a request.
#[derive(Clone)]
pub struct Grammar {
    parser: Arc<TokenParser>,
    kind: &'static str,
}

impl Grammar {
    /// A fresh parser at the start of the output.
    pub(crate) fn start(&self) -> llguidance::Matcher {
        llguidance::Matcher::new(Ok(self.parser.deep_clone()))
    }

    /// The kind of grammar (`json_schema`, `regex`…).
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammar").field("kind", &self.kind).finish()
    }
}

impl PartialEq for Grammar {
    /// The same compiled grammar.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.parser, &other.parser)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_closes_objects_but_not_the_parts_of_an_all_of() {
        let mut schema = serde_json::json!({
            "type": "object",
            "properties": {"inner": {"type": "object", "properties": {"x": {}}}},
            "$defs": {"D": {"properties": {"y": {}}}},
            "anyOf": [{"properties": {"z": {}}}],
        });
        close_objects(&mut schema);
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["properties"]["inner"]["additionalProperties"], false);
        assert_eq!(schema["$defs"]["D"]["additionalProperties"], false);
        assert_eq!(schema["anyOf"][0]["additionalProperties"], false);

        let mut composed = serde_json::json!({
            "allOf": [
                {"properties": {"a": {}, "deep": {"properties": {"q": {}}}}},
                {"properties": {"b": {}}},
            ],
            "properties": {"c": {}},
        });
        close_objects(&mut composed);
        assert!(composed.get("additionalProperties").is_none());
        assert!(composed["allOf"][0].get("additionalProperties").is_none());
        assert!(composed["allOf"][1].get("additionalProperties").is_none());
        assert_eq!(
            composed["allOf"][0]["properties"]["deep"]["additionalProperties"],
            false
        );
    }
}
