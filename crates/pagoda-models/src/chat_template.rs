//! Chat templates: the Jinja template a checkpoint ships
//! (`tokenizer.chat_template` in GGUF, `chat_template` in
//! `tokenizer_config.json`), rendered with minijinja the way Hugging Face's
//! `apply_chat_template` renders it: `trim_blocks` and `lstrip_blocks` on,
//! Python string methods available, `raise_exception`, `strftime_now`, and
//! `bos_token` / `eos_token` / `add_generation_prompt` / `messages` / `tools`
//! in the context.

use minijinja::{Environment, Error, ErrorKind, Value};
use serde::Serialize;

use crate::error::{ModelError, Result};

const TEMPLATE_NAME: &str = "chat";

/// A compiled chat template with the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

/// What a render needs beyond the messages.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Append the header that opens the assistant's turn.
    pub add_generation_prompt: bool,
    /// Tool definitions, passed to the template as `tools`.
    pub tools: Option<serde_json::Value>,
    /// Further template variables (e.g. `enable_thinking`).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// Python's `strftime` for the directives chat templates use, on the current UTC time.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs, &format)
}

fn format_utc(secs: u64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('M') => out.push_str(&format!("{m:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token` and `eos_token` are the texts the
    /// template sees under those names.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| {
                ModelError::ChatTemplate(format!("the template does not compile: {e:#}"))
            })?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` (a list of `{role, content, ...}` objects) into the prompt text.
    pub fn render<M: Serialize>(&self, messages: &[M], options: &RenderOptions) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ModelError::ChatTemplate(e.to_string()))?;
        let mut ctx = serde_json::Map::new();
        for (k, v) in &options.extra {
            ctx.insert(k.clone(), v.clone());
        }
        let to_json =
            |v| serde_json::to_value(v).map_err(|e| ModelError::ChatTemplate(e.to_string()));
        ctx.insert("messages".into(), to_json(messages)?);
        ctx.insert(
            "add_generation_prompt".into(),
            options.add_generation_prompt.into(),
        );
        ctx.insert("bos_token".into(), self.bos_token.clone().into());
        ctx.insert("eos_token".into(), self.eos_token.clone().into());
        if let Some(tools) = &options.tools {
            ctx.insert("tools".into(), tools.clone());
        }
        template
            .render(Value::from_serialize(&ctx))
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidOperation => ModelError::ChatTemplate(format!(
                    "the template rejected the conversation: {}",
                    e.detail().unwrap_or("no reason given")
                )),
                _ => ModelError::ChatTemplate(format!("rendering failed: {e:#}")),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_like_python() {
        // 2024-07-26 00:00:00 UTC
        assert_eq!(format_utc(1_721_952_000, "%d %b %Y"), "26 Jul 2024");
        assert_eq!(
            format_utc(1_721_952_000 + 3723, "%Y-%m-%d %H:%M:%S %B"),
            "2024-07-26 01:02:03 July"
        );
    }

    #[test]
    fn raise_exception_becomes_a_clear_error() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "")
            .expect("compiles");
        let err = t
            .render::<serde_json::Value>(&[], &RenderOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("roles must alternate"), "{err}");
    }

    #[test]
    fn a_broken_template_fails_to_compile() {
        assert!(ChatTemplate::new("{% for x in %}", "", "").is_err());
    }
}
