//! The API reference page of the book (`docs/src/reference/api.md`), rendered from the OpenAPI
//! document that `/openapi.json` serves ([`crate::routes::openapi`]). The router, the document
//! and this page are all made from one route table ([`crate::routes::OPERATIONS`]), so none of
//! them can list what the others do not.
//!
//! The page is committed, and a unit test renders it again and compares, the way
//! rust-analyzer's sourcegen tests keep generated files in step: when a route changes, the test
//! fails until `UPDATE_DOCS=1 cargo test -p vigil-api --lib reference` rewrites the page.
//!
//! The renderer knows nothing of vigil's routes; it reads only the document: the operations
//! under `paths` (grouped by their first path segment after the version, in path order, then
//! method order), their parameters, request bodies and responses, the component schemas they
//! refer to, and the security schemes. Which listener serves an operation is read from its
//! `x-vigil-listener` extension (`"workstation"` or `"both"`). Everything is sorted, so the page does not depend on the order of
//! the document's maps.

use std::fmt::Write;

use serde_json::Value;

/// HTTP methods in the order an operation's methods are listed.
const METHODS: [&str; 7] = ["get", "put", "post", "patch", "delete", "head", "options"];

/// Renders `document`, an OpenAPI 3.1 document as `/openapi.json` serves it, as the book's
/// Markdown API reference page.
pub fn markdown(document: &Value) -> String {
    let mut page = String::new();
    let info = &document["info"];
    let title = info["title"].as_str().unwrap_or("API");
    page.push_str(
        "<!-- Generated from the API's OpenAPI document (/openapi.json) by \
         vigil_api::reference::markdown (api/src/reference.rs). Do not edit by hand: change \
         api/src/routes.rs, then run `UPDATE_DOCS=1 cargo test -p vigil-api --lib reference`. -->\n\n",
    );
    page.push_str("# API reference\n\n");
    let _ = writeln!(
        page,
        "{title}, version {} (OpenAPI {}).\n",
        info["version"].as_str().unwrap_or("?"),
        document["openapi"].as_str().unwrap_or("?"),
    );
    if let Some(description) = info["description"].as_str() {
        let _ = writeln!(page, "{}\n", description.trim());
    }
    page.push_str(
        "This page lists every operation the document describes. The document itself is \
         `GET /openapi.json`, served on both listeners without a token. Refusals and errors are \
         JSON, `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}`; \
         [API refusals](refusals.md) lists every code.\n\n",
    );
    if let Some(servers) = document["servers"].as_array() {
        page.push_str("Servers:\n\n");
        for server in servers {
            let _ = writeln!(
                page,
                "- `{}`{}",
                server["url"].as_str().unwrap_or("?"),
                suffix(server["description"].as_str())
            );
        }
        page.push('\n');
    }
    page.push_str(
        "## Listeners\n\nvigil serves the API on two listeners: the metadata listener \
         (`api.listen`, TLS) and the workstation listener (`api.workstation_listen`, TLS that \
         requires the client certificate of a registered, unrevoked workstation). An operation \
         marked *workstation only* answers only on the second.\n\n",
    );
    render_security(&mut page, document);

    let operations = operations(document);
    page.push_str("## Operations\n\n");
    page.push_str("| method | path | operation | listener |\n| --- | --- | --- | --- |\n");
    for op in &operations {
        let _ = writeln!(
            page,
            "| `{}` | [`{}`](#{}) | `{}` | {} |",
            op.method.to_ascii_uppercase(),
            op.path,
            op.anchor(),
            op.id(),
            op.listener().short(),
        );
    }
    page.push('\n');

    let mut group = String::new();
    for op in &operations {
        if op.group() != group {
            group = op.group();
            let _ = writeln!(page, "## `{group}`\n");
        }
        render_operation(&mut page, document, op);
    }

    if let Some(schemas) = document["components"]["schemas"].as_object() {
        if !schemas.is_empty() {
            page.push_str("## Schemas\n\n");
            let mut names: Vec<&String> = schemas.keys().collect();
            names.sort();
            for name in names {
                let _ = writeln!(page, "### `{name}` {{#{}}}\n", schema_anchor(name));
                render_schema(&mut page, document, &schemas[name]);
            }
        }
    }
    while page.ends_with("\n\n") {
        page.pop();
    }
    page
}

/// One operation of the document: a method under a path.
struct Op<'a> {
    path: &'a str,
    method: &'a str,
    operation: &'a Value,
}

/// Where an operation answers.
enum Listener {
    Both,
    Workstation,
}

impl Listener {
    fn short(&self) -> &'static str {
        match self {
            Self::Both => "both",
            Self::Workstation => "*workstation only*",
        }
    }

    fn long(&self) -> &'static str {
        match self {
            Self::Both => "served on both listeners",
            Self::Workstation => {
                "served on the workstation listener only (over the metadata listener it is \
                 refused with `no_workstation`)"
            }
        }
    }
}

impl Op<'_> {
    fn id(&self) -> String {
        match self.operation["operationId"].as_str() {
            Some(id) => id.to_owned(),
            None => format!("{} {}", self.method, self.path),
        }
    }

    /// The heading's id: `op-` and the operation ID, with anything but letters, digits, `-`
    /// and `_` made `-`.
    fn anchor(&self) -> String {
        let id: String = self
            .id()
            .chars()
            .map(|c| match c {
                c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => c.to_ascii_lowercase(),
                _ => '-',
            })
            .collect();
        format!("op-{id}")
    }

    /// `/v1/cases` for `/v1/cases/{case_id}/records/{request_id}`: the version segment (when
    /// the path starts with one, such as `v1`) and the next.
    fn group(&self) -> String {
        let segments: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        let versioned = segments.first().is_some_and(|s| {
            s.len() > 1 && s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit())
        });
        let take = if versioned { 2 } else { 1 };
        format!("/{}", segments[..take.min(segments.len())].join("/"))
    }

    fn listener(&self) -> Listener {
        match self.operation["x-vigil-listener"].as_str() {
            Some("workstation") => Listener::Workstation,
            _ => Listener::Both,
        }
    }
}

/// Every operation, by path and then by method.
fn operations(document: &Value) -> Vec<Op<'_>> {
    let mut ops = Vec::new();
    let Some(paths) = document["paths"].as_object() else {
        return ops;
    };
    let mut names: Vec<&String> = paths.keys().collect();
    names.sort();
    for path in names {
        let Some(item) = paths[path].as_object() else {
            continue;
        };
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                ops.push(Op {
                    path,
                    method,
                    operation,
                });
            }
        }
    }
    ops
}

fn render_security(page: &mut String, document: &Value) {
    let Some(schemes) = document["components"]["securitySchemes"].as_object() else {
        return;
    };
    if schemes.is_empty() {
        return;
    }
    page.push_str("## Authentication\n\n");
    let mut names: Vec<&String> = schemes.keys().collect();
    names.sort();
    for name in names {
        let scheme = &schemes[name];
        let how = match (scheme["type"].as_str(), scheme["scheme"].as_str()) {
            (Some("http"), Some(s)) if s.eq_ignore_ascii_case("bearer") => {
                "HTTP bearer authentication: the header `Authorization: Bearer TOKEN`".to_owned()
            }
            (Some("http"), Some(s)) => format!("HTTP `{s}` authentication"),
            (Some(kind), _) => format!("`{kind}`"),
            (None, _) => "unspecified".to_owned(),
        };
        let _ = writeln!(
            page,
            "- `{name}`: {how}{}",
            suffix(scheme["description"].as_str())
        );
    }
    page.push('\n');
}

fn render_operation(page: &mut String, document: &Value, op: &Op<'_>) {
    let operation = op.operation;
    let _ = writeln!(
        page,
        "### `{} {}` {{#{}}}\n",
        op.method.to_ascii_uppercase(),
        op.path,
        op.anchor()
    );
    let mut facts = vec![
        format!("Operation `{}`", op.id()),
        op.listener().long().to_owned(),
    ];
    let security = operation
        .get("security")
        .or_else(|| document.get("security"))
        .and_then(Value::as_array);
    if let Some(requirements) = security {
        let mut names: Vec<&str> = requirements
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|r| r.keys().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            facts.push("no authentication".to_owned());
        } else {
            let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            facts.push(format!("authentication: {}", names.join(" or ")));
        }
    }
    if operation["deprecated"].as_bool() == Some(true) {
        facts.push("**deprecated**".to_owned());
    }
    let _ = writeln!(page, "{}.\n", facts.join(" · "));
    for key in ["summary", "description"] {
        if let Some(text) = operation[key].as_str() {
            let _ = writeln!(page, "{}\n", text.trim());
        }
    }

    if let Some(parameters) = operation["parameters"].as_array() {
        if !parameters.is_empty() {
            page.push_str("**Parameters**\n\n");
            page.push_str(
                "| name | in | type | required | description |\n| --- | --- | --- | --- | --- |\n",
            );
            for parameter in parameters {
                let parameter = resolve(document, parameter);
                let _ = writeln!(
                    page,
                    "| `{}` | {} | {} | {} | {} |",
                    parameter["name"].as_str().unwrap_or("?"),
                    parameter["in"].as_str().unwrap_or("?"),
                    type_of(&parameter["schema"]),
                    yes_no(parameter["required"].as_bool().unwrap_or(false)),
                    cell(&notes(
                        &parameter["schema"],
                        parameter["description"].as_str()
                    )),
                );
            }
            page.push('\n');
        }
    }

    if let Some(body) = operation.get("requestBody") {
        let body = resolve(document, body);
        let required = body["required"].as_bool().unwrap_or(false);
        let mut media: Vec<(&String, &Value)> = body["content"]
            .as_object()
            .map(|m| m.iter().collect())
            .unwrap_or_default();
        media.sort_by(|a, b| a.0.cmp(b.0));
        for (kind, content) in media {
            let _ = writeln!(
                page,
                "**Request body** (`{kind}`, {}){}\n",
                if required { "required" } else { "optional" },
                suffix(body["description"].as_str())
            );
            render_schema(page, document, &content["schema"]);
        }
    }

    if let Some(responses) = operation["responses"].as_object() {
        page.push_str("**Responses**\n\n");
        page.push_str("| status | meaning | body |\n| --- | --- | --- |\n");
        let mut codes: Vec<&String> = responses.keys().collect();
        codes.sort();
        for code in codes {
            let response = resolve(document, &responses[code]);
            let _ = writeln!(
                page,
                "| `{code}` | {} | {} |",
                cell(response["description"].as_str().unwrap_or("")),
                response_body(response),
            );
        }
        page.push('\n');
    }
}

/// What a response's body is: its media types and their schemas.
fn response_body(response: &Value) -> String {
    let Some(content) = response["content"].as_object() else {
        return "none".to_owned();
    };
    if content.is_empty() {
        return "none".to_owned();
    }
    let mut kinds: Vec<(&String, &Value)> = content.iter().collect();
    kinds.sort_by(|a, b| a.0.cmp(b.0));
    let parts: Vec<String> = kinds
        .into_iter()
        .map(|(kind, media)| match media.get("schema") {
            Some(schema) => format!("`{kind}`: {}", type_of(schema)),
            None => format!("`{kind}`"),
        })
        .collect();
    parts.join("; ")
}

/// A table of an object schema's fields (nested objects flattened as `outer.inner`), or one
/// line for any other schema.
fn render_schema(page: &mut String, document: &Value, schema: &Value) {
    let resolved = resolve(document, schema);
    if resolved["properties"].as_object().is_none() {
        let notes = notes(resolved, None);
        let _ = writeln!(page, "{}{}\n", type_of(schema), suffix(Some(&notes)));
        return;
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        let _ = writeln!(page, "A [`{name}`](#{}):\n", schema_anchor(name));
    }
    page.push_str("| field | type | required | description |\n| --- | --- | --- | --- |\n");
    let mut rows = Vec::new();
    fields(resolved, "", &mut rows);
    for (name, kind, required, text) in rows {
        let _ = writeln!(
            page,
            "| `{name}` | {kind} | {} | {} |",
            yes_no(required),
            cell(&text)
        );
    }
    page.push('\n');
    if resolved["additionalProperties"].as_bool() == Some(false) {
        page.push_str("No other fields are accepted.\n\n");
    }
}

/// One table row per field: name, type, whether required, rules and description.
fn fields(schema: &Value, prefix: &str, rows: &mut Vec<(String, String, bool, String)>) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut names: Vec<&String> = properties.keys().collect();
    names.sort();
    for name in names {
        let property = &properties[name];
        let path = format!("{prefix}{name}");
        rows.push((
            path.clone(),
            type_of(property),
            required.contains(&name.as_str()),
            notes(property, None),
        ));
        // Inline nested objects are flattened; referenced ones are linked, not repeated.
        if property.get("$ref").is_none() && property["properties"].is_object() {
            fields(property, &format!("{path}."), rows);
        }
    }
}

/// A schema's type as the page words it: `string`, `integer or null`, `array of string`, or a
/// link to a component schema.
fn type_of(schema: &Value) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("[`{name}`](#{})", schema_anchor(name));
    }
    let base = match &schema["type"] {
        Value::String(kind) => kind.clone(),
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ if schema.get("enum").is_some() => "enum".to_owned(),
        _ if schema.as_object().is_some_and(|m| m.is_empty()) || schema.is_null() => {
            return "JSON".to_owned()
        }
        _ => "any".to_owned(),
    };
    match schema.get("items") {
        Some(items) if base.contains("array") => {
            base.replace("array", &format!("array of {}", type_of(items)))
        }
        _ => base,
    }
}

/// A schema's rules (allowed values, lengths, bounds) and its description, in one sentence.
fn notes(schema: &Value, description: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
        parts.push(format!("one of {}", values.join(", ")));
    }
    match (schema["minLength"].as_u64(), schema["maxLength"].as_u64()) {
        (Some(min), Some(max)) => parts.push(format!("{min}-{max} characters")),
        (Some(min), None) => parts.push(format!("at least {min} characters")),
        (None, Some(max)) => parts.push(format!("at most {max} characters")),
        (None, None) => {}
    }
    match (&schema["minimum"], &schema["maximum"]) {
        (Value::Number(min), Value::Number(max)) => parts.push(format!("{min} to {max}")),
        (Value::Number(min), _) => parts.push(format!("at least {min}")),
        (_, Value::Number(max)) => parts.push(format!("at most {max}")),
        _ => {}
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        parts.push(format!("matching `{pattern}`"));
    }
    if let Some(format) = schema["format"].as_str() {
        parts.push(format!("format `{format}`"));
    }
    for text in [schema["description"].as_str(), description]
        .into_iter()
        .flatten()
    {
        let text = text.trim();
        if !text.is_empty() {
            parts.push(text.to_owned());
        }
    }
    parts.join("; ")
}

/// Follows a local `$ref` (`#/components/...`) to what it names; anything else is returned as
/// it is.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => document.pointer(pointer).unwrap_or(value),
        None => value,
    }
}

fn schema_anchor(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    format!("schema-{name}")
}

fn yes_no(yes: bool) -> &'static str {
    if yes {
        "yes"
    } else {
        "no"
    }
}

/// Text made safe for a table cell: pipes escaped, line breaks joined.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// `": text"` for a description, nothing for none.
fn suffix(text: Option<&str>) -> String {
    match text.map(str::trim) {
        Some(text) if !text.is_empty() => format!(": {text}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::json;

    use super::*;

    /// The committed page, `docs/src/reference/api.md`, is what the document renders to.
    /// With `UPDATE_DOCS=1` the test rewrites the page instead of failing.
    #[test]
    fn the_book_s_api_reference_matches_the_openapi_document() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/src/reference/api.md");
        ensure_file_contents(&path, &markdown(&crate::routes::openapi()));
    }

    /// Compares `path` with `contents`; rewrites it when `UPDATE_DOCS` is set, and fails
    /// otherwise, naming the first line that differs.
    fn ensure_file_contents(path: &Path, contents: &str) {
        let old = std::fs::read_to_string(path)
            .unwrap_or_default()
            .replace("\r\n", "\n");
        if old == contents {
            return;
        }
        let update = std::env::var("UPDATE_DOCS").is_ok_and(|v| !v.is_empty() && v != "0");
        if update {
            std::fs::write(path, contents)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            return;
        }
        let (old_lines, new_lines): (Vec<&str>, Vec<&str>) =
            (old.lines().collect(), contents.lines().collect());
        let line = (0..old_lines.len().max(new_lines.len()))
            .find(|&i| old_lines.get(i) != new_lines.get(i))
            .unwrap_or(0);
        let (was, now) = (
            old_lines.get(line).copied().unwrap_or("<end>"),
            new_lines.get(line).copied().unwrap_or("<end>"),
        );
        let line = line + 1;
        panic!(
            "{} is not up to date with the API's OpenAPI document (first difference at line \
             {line}:\n  committed: {was}\n  rendered:  {now}\n). Run \
             `UPDATE_DOCS=1 cargo test -p vigil-api --lib reference` to rewrite it, and commit \
             the result.",
            path.display()
        );
    }

    #[test]
    fn every_operation_is_rendered_with_its_parts() {
        let page = markdown(&crate::routes::openapi());
        for op in crate::routes::OPERATIONS {
            let heading = format!("`{} {}`", op.method.as_str(), op.path);
            assert!(page.contains(&heading), "{heading} missing");
            assert!(page.contains(&format!("Operation `{}`", op.action)));
        }
        let read = page
            .split("### ")
            .find(|s| s.starts_with("`GET /v1/cases/{case_id}/records/{request_id}`"))
            .unwrap();
        assert!(read.contains("workstation listener only"), "{read}");
        assert!(
            read.contains("| `case_id` | path | string | yes |"),
            "{read}"
        );
        let request = page
            .split("### ")
            .find(|s| s.starts_with("`POST /v1/cases/{case_id}/access-requests`"))
            .unwrap();
        assert!(
            request.contains("| `reason` | string | yes | 1-1000 characters |"),
            "{request}"
        );
        assert!(
            request.contains("No other fields are accepted."),
            "{request}"
        );
        assert!(page.contains("| `error.code` | string | yes |"), "{page}");
    }

    #[test]
    fn the_page_does_not_depend_on_map_order_and_escapes_table_cells() {
        let document = json!({
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1"},
            "paths": {
                "/v1/b": {"post": {"operationId": "b.post", "summary": "B.",
                    "requestBody": {"required": true, "content": {"application/json": {"schema":
                        {"type": "object", "properties": {
                            "z": {"type": ["string", "null"], "description": "a | b"},
                            "a": {"type": "array", "items": {"type": "integer"}, "minimum": 1}}}}}},
                    "responses": {"201": {"description": "made"}}},
                    "get": {"operationId": "b.get",
                        "summary": "Served on the workstation listener only.", "x-vigil-listener": "workstation", "responses": {}}},
                "/v1/a": {"get": {"operationId": "a.get", "x-vigil-listener": "both",
                    "responses": {"200": {"description": "ok",
                        "content": {"application/json": {}}}}}},
            },
        });
        let page = markdown(&document);
        let a = page.find("### `GET /v1/a` {#op-a-get}").unwrap();
        let b_get = page.find("### `GET /v1/b` {#op-b-get}").unwrap();
        let b_post = page.find("### `POST /v1/b` {#op-b-post}").unwrap();
        assert!(a < b_get && b_get < b_post, "{page}");
        assert!(
            page.contains("| `a` | array of integer | no | at least 1 |"),
            "{page}"
        );
        assert!(
            page.contains("| `z` | string or null | no | a \\| b |"),
            "{page}"
        );
        assert!(
            page.contains("| `200` | ok | `application/json` |"),
            "{page}"
        );
        assert!(page.contains("| `201` | made | none |"), "{page}");
        assert!(page.contains("| `GET` | [`/v1/b`](#op-b-get) | `b.get` | *workstation only* |"));
        assert!(page.ends_with("|\n"), "{page:?}");
    }
}
