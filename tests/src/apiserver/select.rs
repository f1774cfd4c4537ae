//! Field and label selectors as kube-apiserver reads them (`fieldSelector`,
//! `labelSelector` query parameters), and the query string's percent-encoding.

use serde_json::Value;

/// Decodes a query string's `%XX` escapes and `+` (a space in form encoding).
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    value: String,
    equal: bool,
}

/// A parsed `fieldSelector`: every term must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields(Vec<FieldTerm>);

impl Fields {
    /// Parses `a=b,c!=d,e==f`; `supported` are the fields this resource may be selected
    /// by (the API server refuses others: `field label not supported: …`).
    pub fn parse(text: &str, supported: &[&str]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').filter(|t| !t.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                ));
            };
            if !supported.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push(FieldTerm {
                field: field.to_owned(),
                value: value.to_owned(),
                equal,
            });
        }
        Ok(Self(terms))
    }

    /// Whether `object` matches: a field that is absent reads as `""`, a boolean as
    /// `true`/`false`.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|term| {
            let mut value = object;
            for part in term.field.split('.') {
                value = &value[part];
            }
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            (text == term.value) == term.equal
        })
    }

    /// No term at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equal(String, String),
    NotEqual(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(Vec<Requirement>);

/// Splits at commas outside parentheses.
fn terms(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn set(values: &str) -> Option<Vec<String>> {
    let inner = values.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

impl Labels {
    /// Parses `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, joined by
    /// commas.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in terms(text) {
            let bad = || format!("unable to parse requirement: {term}");
            let requirement = if let Some(key) = term.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEqual(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("==") {
                Requirement::Equal(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once('=') {
                Requirement::Equal(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once(" notin ") {
                Requirement::NotIn(k.trim().to_owned(), set(v).ok_or_else(bad)?)
            } else if let Some((k, v)) = term.split_once(" in ") {
                Requirement::In(k.trim().to_owned(), set(v).ok_or_else(bad)?)
            } else if term.contains(' ') {
                return Err(bad());
            } else {
                Requirement::Exists(term.to_owned())
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    /// Whether `object`'s `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |key: &str| labels[key].as_str();
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equal(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEqual(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }

    /// No requirement at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn selectors_match_as_the_api_server_does() {
        let pod = json!({"metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
                         "spec": {"nodeName": "pi-1", "hostNetwork": false}});
        let fields = |text| {
            Fields::parse(
                text,
                &["metadata.name", "spec.nodeName", "spec.hostNetwork"],
            )
        };
        assert!(fields("spec.nodeName=pi-1").unwrap().matches(&pod));
        assert!(!fields("spec.nodeName!=pi-1").unwrap().matches(&pod));
        assert!(
            fields("spec.hostNetwork=false,metadata.name==web")
                .unwrap()
                .matches(&pod)
        );
        assert!(!fields("spec.nodeName=").unwrap().matches(&pod));
        assert_eq!(
            fields("spec.foo=x").unwrap_err(),
            "field label not supported: spec.foo"
        );
        let labels = |text| Labels::parse(text).unwrap().matches(&pod);
        assert!(labels("app=web,tier in (front, back)"));
        assert!(labels("app,!missing,tier notin (back)"));
        assert!(!labels("app!=web"));
        assert!(!labels("missing"));
        assert_eq!(decode("spec.nodeName%3Dpi-1"), "spec.nodeName=pi-1");
        assert_eq!(decode("tier+in+%28a%2Cb%29"), "tier in (a,b)");
    }
}
