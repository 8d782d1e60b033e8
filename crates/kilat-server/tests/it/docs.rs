//! The documentation is checked against the code: every configuration key is documented in
//! docs/configuration.md and kilat.example.toml, docs/api.md covers every method of the
//! OpenAPI document, and no doc or code comment points at a file the repository does not have.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kilat_server::Config;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The keys of the config struct at `section` (a dotted path such as `node.namespaces.x`), as
/// serde knows them: an unknown key is refused with the list of expected ones, so the list
/// comes from the structs themselves and cannot fall behind them.
fn keys_of(section: &str) -> BTreeSet<String> {
    let mut toml_text = format!("[{section}]\nnot_a_key_zz = 1\n");
    if section == "token" {
        toml_text.push_str("secret = \"x\"\n");
    }
    let error = match toml::from_str::<Config>(&toml_text) {
        Ok(_) => panic!("[{section}] accepted an unknown key"),
        Err(error) => error.to_string(),
    };
    let expected = error
        .split_once("expected")
        .unwrap_or_else(|| panic!("no expected keys in: {error}"))
        .1;
    let keys: BTreeSet<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(!keys.is_empty(), "{error}");
    keys
}

/// (section, keys) for every section of the configuration.
fn every_key() -> Vec<(&'static str, BTreeSet<String>)> {
    let mut sections = Vec::new();
    for section in [
        "server",
        "websocket",
        "node",
        "engine",
        "api",
        "token",
        "proxy",
        "socketio",
    ] {
        sections.push((section, keys_of(section)));
    }
    sections.push(("namespace", keys_of("node.namespaces.example")));
    sections
}

/// Splits a document into parts by the lines for which `header` names a section.
fn sections_of(text: &str, header: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let mut parts: Vec<(String, String)> = vec![(String::new(), String::new())];
    for line in text.lines() {
        if let Some(name) = header(line) {
            parts.push((name, String::new()));
        }
        let last = parts.last_mut().expect("one part");
        last.1.push_str(line);
        last.1.push('\n');
    }
    parts
}

#[test]
fn every_configuration_key_is_in_the_docs_and_the_example_regression_22() {
    let docs = read("docs/configuration.md");
    // docs/configuration.md: "## `[server]`", "### Namespace options", ...
    let doc_parts = sections_of(&docs, |line| {
        let heading = line
            .strip_prefix("## ")
            .or_else(|| line.strip_prefix("### "))?;
        if heading.starts_with("Namespace options") {
            return Some("namespace".into());
        }
        let name = heading.split('[').nth(1)?.split(']').next()?;
        Some(name.to_owned())
    });
    let example = read("kilat.example.toml");
    // kilat.example.toml: "[server]", "# [token]", "[node.namespaces.chat]", ...
    let example_parts = sections_of(&example, |line| {
        let line = line.trim_start_matches('#').trim();
        let name = line.strip_prefix('[')?.strip_suffix(']')?;
        Some(
            if name.starts_with("node.namespaces.") || name == "node.default_namespace" {
                "namespace".to_owned()
            } else {
                name.to_owned()
            },
        )
    });
    let mut missing = Vec::new();
    for (section, keys) in every_key() {
        let in_doc: String = doc_parts
            .iter()
            .filter(|(name, _)| name == section)
            .map(|(_, text)| text.as_str())
            .collect();
        let in_example: String = example_parts
            .iter()
            .filter(|(name, _)| name == section)
            .map(|(_, text)| text.as_str())
            .collect();
        for key in keys {
            // Table-valued keys (`namespaces`) are documented as `namespaces.<name>`.
            if !in_doc.contains(&format!("`{key}`")) && !in_doc.contains(&format!("`{key}.")) {
                missing.push(format!("docs/configuration.md [{section}] lacks `{key}`"));
            }
            let uncommented = |line: &str| line.trim_start_matches('#').trim_start().to_owned();
            // A plain key in its section, or a table-valued key as its own header
            // (`[node.namespaces.chat]`).
            let set = in_example
                .lines()
                .any(|line| uncommented(line).starts_with(&format!("{key} =")))
                || example
                    .lines()
                    .any(|line| uncommented(line).starts_with(&format!("[{section}.{key}")));
            if !set {
                missing.push(format!("kilat.example.toml [{section}] lacks {key} ="));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented keys:\n{}",
        missing.join("\n")
    );
}

#[test]
fn api_docs_cover_every_method_of_the_openapi_document_regression_22() {
    let openapi: serde_json::Value =
        serde_json::from_str(&read("crates/kilat-server/src/openapi.json")).expect("openapi");
    let api = read("docs/api.md");
    let parts = sections_of(&api, |line| {
        let name = line.strip_prefix("### ")?;
        Some(name.trim_matches('`').to_owned())
    });
    let paths = openapi["paths"].as_object().expect("paths");
    assert!(paths.len() > 5, "the OpenAPI document lists the methods");
    let mut missing = Vec::new();
    for (path, item) in paths {
        let method = path.trim_start_matches("/api/");
        let Some((_, section)) = parts.iter().find(|(name, _)| name == method) else {
            missing.push(format!("no `### {method}` section"));
            continue;
        };
        if !section.contains(&format!("/api/{method}")) || !section.contains("curl") {
            missing.push(format!("{method}: no curl example"));
        }
        let Some(post) = item.get("post") else {
            continue;
        };
        // Every body field, by name.
        let schema = &post["requestBody"]["content"]["application/json"]["schema"];
        let schema = resolve(&openapi, schema);
        if let Some(properties) = schema["properties"].as_object() {
            for field in properties.keys() {
                if !section.contains(&format!("`{field}`")) {
                    missing.push(format!("{method}: body field `{field}` undocumented"));
                }
            }
        }
        // Every field of the result.
        let answer = resolve(
            &openapi,
            &post["responses"]["200"]["content"]["application/json"]["schema"],
        );
        for result in result_schemas(&openapi, answer) {
            if let Some(properties) = result["properties"].as_object() {
                for field in properties.keys() {
                    // Named in prose (`field`) or in the result's JSON shape ("field").
                    let named = section.contains(&format!("`{field}`"))
                        || section.contains(&format!("\"{field}\""));
                    if !named {
                        missing.push(format!("{method}: result field `{field}` undocumented"));
                    }
                }
            }
        }
    }
    assert!(missing.is_empty(), "docs/api.md:\n{}", missing.join("\n"));
}

/// Follows a `$ref` to its schema.
fn resolve<'a>(doc: &'a serde_json::Value, schema: &'a serde_json::Value) -> &'a serde_json::Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            doc.pointer(pointer).unwrap_or(&serde_json::Value::Null)
        }
        None => schema,
    }
}

/// The schemas of `result` in an answer schema (`{"result"}` or one of several).
fn result_schemas<'a>(
    doc: &'a serde_json::Value,
    answer: &'a serde_json::Value,
) -> Vec<&'a serde_json::Value> {
    let mut out = Vec::new();
    let mut visit = vec![answer];
    while let Some(schema) = visit.pop() {
        let schema = resolve(doc, schema);
        for key in ["oneOf", "anyOf", "allOf"] {
            if let Some(list) = schema[key].as_array() {
                visit.extend(list.iter());
            }
        }
        if let Some(result) = schema["properties"].get("result") {
            out.push(resolve(doc, result));
        }
    }
    out
}

/// Source and documentation files of the repository (no build output, no installed packages).
fn repository_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![repo()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !name.starts_with('.')
                    && !["target", "node_modules", "corpus", "artifacts"].contains(&name)
                {
                    dirs.push(path);
                }
            } else if [
                ".md", ".rs", ".js", ".mjs", ".json", ".toml", ".html", ".sh", ".py", ".cfg",
                ".conf",
            ]
            .iter()
            .any(|ext| name.ends_with(ext))
                && name != "package-lock.json"
            {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn no_doc_or_comment_points_outside_the_repository_regression_22() {
    // Built so this file does not name what it forbids.
    let forbidden = [format!("../{}", "shared"), format!("{}.md", "PROTOCOL")];
    let root = repo();
    let mut found = Vec::new();
    let files = repository_files();
    assert!(
        files.len() > 50,
        "the scan sees the repository: {}",
        files.len()
    );
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let shown = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .display()
            .to_string();
        for (n, line) in text.lines().enumerate() {
            for bad in &forbidden {
                if line.contains(bad.as_str()) {
                    found.push(format!("{shown}:{}: {bad}", n + 1));
                }
            }
        }
        if shown.ends_with(".md") {
            for target in markdown_links(&text) {
                let file = target.split('#').next().unwrap_or("");
                if file.is_empty() {
                    continue;
                }
                let base = path.parent().expect("parent");
                if !base.join(file).exists() {
                    found.push(format!("{shown}: link to missing {target}"));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "references to files that are not here:\n{}",
        found.join("\n")
    );
}

/// Relative link targets of `[text](target)` in markdown, outside code blocks.
fn markdown_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].trim();
            if !target.contains("://") && !target.starts_with("mailto:") && !target.is_empty() {
                links.push(target.to_owned());
            }
            rest = &rest[end..];
        }
    }
    links
}
