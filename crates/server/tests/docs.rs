//! What the operator's documents name exists: every `--flag` and `PITBOSS_*`
//! variable that README.md and docs/operations.md mention is one the `pitboss`
//! binary takes (in its `--help`, or that of one of its commands). So a renamed or
//! removed setting cannot leave its old name in the documents.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Flags the documents give to other programs (cargo, in README's build lines).
const NOT_PITBOSS: [&str; 6] = [
    "--release",
    "--bin",
    "--workspace",
    "--locked",
    "--all",
    "--package",
];

/// `pitboss ARGS --help`, and that of every command under it, concatenated.
fn help(args: &[String]) -> String {
    let out = Command::new(common::BIN)
        .args(args)
        .arg("--help")
        .output()
        .expect("run pitboss --help");
    assert!(out.status.success(), "pitboss {args:?} --help failed");
    let text = String::from_utf8(out.stdout).expect("help is UTF-8");
    let mut all = text.clone();
    let commands = text
        .split("Commands:")
        .nth(1)
        .map(|rest| rest.split("\n\n").next().unwrap_or(""))
        .unwrap_or("");
    for line in commands.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name != "help" {
            let mut deeper = args.to_vec();
            deeper.push(name.to_string());
            all.push_str(&help(&deeper));
        }
    }
    all
}

/// The words of `text` that start with `prefix` and go on with characters
/// `allowed` takes.
fn words(text: &str, prefix: &str, allowed: impl Fn(char) -> bool) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        let tail = &rest[i + prefix.len()..];
        let len = tail.find(|c: char| !allowed(c)).unwrap_or(tail.len());
        // A flag starts a word (not the middle of `a--b`), and has a name.
        if len > 0 && !before.is_some_and(|c| c.is_alphanumeric() || c == '-') {
            found.insert(format!("{prefix}{}", &tail[..len]));
        }
        rest = &tail[len..];
    }
    found
}

#[test]
fn every_flag_and_variable_the_operator_documents_name_exists() {
    let help = help(&[]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in ["README.md", "docs/operations.md"] {
        let text = std::fs::read_to_string(root.join(doc)).expect("read the document");
        let flags = words(&text, "--", |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
        });
        let variables = words(&text, "PITBOSS_", |c| {
            c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'
        });
        for name in flags.iter().chain(&variables) {
            let name = name.trim_end_matches(['-', '_']);
            if NOT_PITBOSS.contains(&name) {
                continue;
            }
            checked += 1;
            // Whole names only: `--log` must not pass on the strength of `--log-format`.
            let known = help.match_indices(name).any(|(i, _)| {
                !help[i + name.len()..]
                    .starts_with(|c: char| c.is_alphanumeric() || c == '-' || c == '_')
            });
            if !known {
                missing.push(format!("{doc}: {name}"));
            }
        }
    }
    assert!(
        checked > 40,
        "the documents name their settings: {checked} checked"
    );
    assert!(
        missing.is_empty(),
        "named in the documents but unknown to `pitboss … --help`: {missing:?}"
    );
}
