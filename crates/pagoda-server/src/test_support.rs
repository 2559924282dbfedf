//! Test support: the real chat templates and their cases kept in
//! `tests/fixtures/templates`.

/// The text of `tests/fixtures/templates/<name>`.
pub fn template_fixture(name: &str) -> String {
    let path = format!(
        "{}/../../tests/fixtures/templates/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
