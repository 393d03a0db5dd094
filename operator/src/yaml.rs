//! Multi-document YAML output shared by `crds`, `render` and tests.

use serde::Serialize;

/// Serialises each item as one YAML document, separated by `---`.
pub fn multi_doc<T: Serialize>(items: &[T]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for item in items {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(item)?);
    }
    Ok(out)
}
