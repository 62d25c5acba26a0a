//! The README's configuration reference (which `sluice.toml(5)` is generated from, by
//! packaging/man-config.py) against the parser: every key the parser takes is documented in
//! its table, and every documented key is one the parser takes. The parser's keys are read
//! from the parser itself — a table holding one unknown key is refused with the list of keys
//! it expects — so a key added to the code without the README fails here.

use std::collections::{BTreeMap, BTreeSet};

/// The README sections that make up the reference (the same list man-config.py reads).
const SECTIONS: [&str; 3] = [
    "## Running on AF_XDP",
    "## Running on DPDK",
    "## Configuration reference",
];

struct Documented {
    /// Table path (`service.pool.backend`) → the keys written in it.
    keys: BTreeMap<String, BTreeSet<String>>,
    /// Tables written as `[[…]]`.
    arrays: BTreeSet<String>,
    /// Tables documented as taking another's keys.
    same_as: BTreeMap<String, String>,
}

fn documented() -> Documented {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md beside the workspace");
    let mut doc = Documented {
        keys: BTreeMap::new(),
        arrays: BTreeSet::new(),
        same_as: BTreeMap::new(),
    };
    let mut section_on = false;
    let mut in_toml = false;
    let mut table = String::new();
    for line in readme.lines() {
        if line.starts_with("## ") {
            section_on = SECTIONS.iter().any(|s| line.starts_with(s));
            continue;
        }
        if !section_on {
            continue;
        }
        if line.starts_with("```") {
            in_toml = line == "```toml";
            table.clear();
            continue;
        }
        if !in_toml {
            continue;
        }
        // Commented-out lines (`# gateway = …`, `# [[service]]`) document keys too.
        let body = line.trim_start();
        let body = body.strip_prefix('#').unwrap_or(body).trim_start();
        if let Some(rest) = body.strip_prefix('[') {
            let array = rest.starts_with('[');
            let name: String = rest
                .trim_start_matches('[')
                .chars()
                .take_while(|c| *c != ']')
                .collect();
            if name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
            {
                if array {
                    doc.arrays.insert(name.clone());
                }
                doc.keys.entry(name.clone()).or_default();
                // `[service.pool.health]  # optional: the keys of [service.health]; …`
                if let Some(of) = line.split("the keys of [").nth(1) {
                    let of: String = of.chars().take_while(|c| *c != ']').collect();
                    doc.same_as.insert(name.clone(), of);
                }
                table = name;
            }
            continue;
        }
        let key: String = body
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let after = body[key.len()..].trim_start();
        if !key.is_empty() && after.starts_with('=') && !table.is_empty() {
            doc.keys.entry(table.clone()).or_default().insert(key);
        }
    }
    for (table, of) in doc.same_as.clone() {
        let keys = doc.keys.get(&of).cloned().unwrap_or_default();
        doc.keys.entry(table).or_default().extend(keys);
    }
    doc
}

/// The keys the parser takes in `table`, from its refusal of an unknown one.
fn parser_keys(table: &str, doc: &Documented) -> BTreeSet<String> {
    let mut src = String::new();
    let parts: Vec<&str> = table.split('.').collect();
    for i in 1..=parts.len() {
        let path = parts[..i].join(".");
        if doc.arrays.contains(&path) {
            src.push_str(&format!("[[{path}]]\n"));
        } else {
            src.push_str(&format!("[{path}]\n"));
        }
    }
    src.push_str("zz_not_a_key = 1\n");
    let err = config::Config::from_toml(&src, None)
        .err()
        .unwrap_or_else(|| panic!("[{table}] took an unknown key:\n{src}"));
    let text = err.to_string();
    let list = text
        .split("expected one of ")
        .nth(1)
        .or_else(|| text.split("expected ").nth(1))
        .unwrap_or_else(|| panic!("[{table}]: no key list in {text:?}"));
    let list = list.lines().next().unwrap_or("");
    // serde writes "`a`, `b`, `c`", or "`a` or `b`" for two.
    list.split([',', ' '])
        .filter(|w| *w != "or")
        .map(|k| k.trim().trim_matches('`').to_string())
        .filter(|k| !k.is_empty())
        .collect()
}

#[test]
fn every_parser_key_is_documented_and_every_documented_key_parses() {
    let doc = documented();
    assert!(
        doc.keys.len() >= 20,
        "found only {} tables in the README's reference: {:?}",
        doc.keys.len(),
        doc.keys.keys().collect::<Vec<_>>()
    );
    let mut problems = Vec::new();
    for (table, written) in &doc.keys {
        let takes = parser_keys(table, &doc);
        let subtables: BTreeSet<String> = doc
            .keys
            .keys()
            .filter_map(|t| t.strip_prefix(&format!("{table}.")))
            .filter(|rest| !rest.contains('.'))
            .map(str::to_string)
            .collect();
        for k in &takes {
            if !written.contains(k) && !subtables.contains(k) {
                problems.push(format!("[{table}] {k}: the parser takes it; README.md's configuration reference does not document it"));
            }
        }
        for k in written {
            if !takes.contains(k) {
                problems.push(format!("[{table}] {k}: documented in README.md, but the parser refuses it (takes: {takes:?})"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_top_level_tables_are_all_documented() {
    let doc = documented();
    let src = "zz_not_a_key = 1\n";
    let text = config::Config::from_toml(src, None)
        .unwrap_err()
        .to_string();
    let list = text.split("expected one of ").nth(1).expect("a key list");
    for t in list.lines().next().unwrap().split(", ") {
        let t = t.trim().trim_matches('`');
        assert!(
            doc.keys.contains_key(t),
            "[{t}] is a table the parser takes that README.md does not document"
        );
    }
}
