//! What the served chat template renders of tool use, read once from its
//! source at load (not rescanned per request).

/// What a chat template renders of tool use, read from its source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TemplateSupport {
    /// It reads the `tools` variable (function definitions).
    pub tools: bool,
    /// It renders assistant turns' `tool_calls`.
    pub calls: bool,
}

impl TemplateSupport {
    /// What the template with this source renders.
    pub fn of(source: &str) -> Self {
        Self {
            tools: source.contains("tools"),
            calls: source.contains("tool_calls"),
        }
    }
}
