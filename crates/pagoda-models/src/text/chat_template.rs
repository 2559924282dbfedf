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

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`, which is
/// what Hugging Face's `tojson` filter calls (minijinja's own `tojson` is
/// compact and HTML-escapes, so templates would render differently).
fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut json = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    if sort_keys == Some(true) {
        json.sort_all_objects();
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonJson::new(indent));
    serde::Serialize::serialize(&json, &mut ser)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let text = String::from_utf8(out)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(Value::from_safe_string(text))
}

/// A serde_json formatter with Python's `json.dumps` separators:
/// `", "` and `": "` on one line, or `","` and `": "` with an indent.
struct PythonJson {
    indent: Option<Vec<u8>>,
    depth: usize,
    has_value: bool,
}

impl PythonJson {
    fn new(indent: Option<usize>) -> Self {
        Self {
            indent: indent.map(|n| vec![b' '; n]),
            depth: 0,
            has_value: false,
        }
    }

    fn newline<W: ?Sized + std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        if let Some(indent) = &self.indent {
            w.write_all(b"\n")?;
            for _ in 0..self.depth {
                w.write_all(indent)?;
            }
        }
        Ok(())
    }

    fn open<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        bracket: &[u8],
    ) -> std::io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    fn close<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        bracket: &[u8],
    ) -> std::io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        self.has_value = true;
        w.write_all(bracket)
    }

    fn item<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if !first {
            w.write_all(if self.indent.is_some() { b"," } else { b", " })?;
        }
        self.newline(w)
    }
}

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
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
        env.add_filter("tojson", tojson);
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

    fn render(source: &str, value: serde_json::Value) -> String {
        let t = ChatTemplate::new(source, "", "").expect("compiles");
        let mut options = RenderOptions::default();
        options.extra.insert("v".into(), value);
        t.render::<serde_json::Value>(&[], &options)
            .expect("renders")
    }

    #[test]
    fn tojson_writes_like_python_json_dumps() {
        let v = serde_json::json!({"b": [1, 2.5, "x<y>&"], "a": {"k": null, "t": true}, "e": [], "é": "東京"});
        assert_eq!(
            render("{{ v | tojson }}", v.clone()),
            r#"{"b": [1, 2.5, "x<y>&"], "a": {"k": null, "t": true}, "e": [], "é": "東京"}"#
        );
        assert_eq!(
            render(
                "{{ v | tojson(indent=2) }}",
                serde_json::json!({"a": [1, {"b": 2}], "c": {}})
            ),
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": 2\n    }\n  ],\n  \"c\": {}\n}"
        );
        assert_eq!(
            render(
                "{{ v | tojson(sort_keys=true) }}",
                serde_json::json!({"b": 1, "a": 2})
            ),
            r#"{"a": 2, "b": 1}"#
        );
    }

    #[test]
    fn a_broken_template_fails_to_compile() {
        assert!(ChatTemplate::new("{% for x in %}", "", "").is_err());
    }
}
