//! The book under `docs/`: its reference pages are what the code generates,
//! every page is in `SUMMARY.md`, every environment variable the sources
//! name is documented, and no relative link or anchor is broken (README,
//! BENCHMARKS and every page).
//!
//! After a change to a command, a directive, an HTTP operation, an
//! environment variable or an exit code, update the pages with
//! `DISPATCH_BLESS_DOCS=1 cargo test -p dispatch-cli --test it -- docs_book::`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

const PAGES: [&str; 6] = [
    "cli",
    "agentfile",
    "http-api",
    "environment",
    "exit-codes",
    "policy-inputs",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn generate(page: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["internal", "reference", page])
        .env_remove("DISPATCH_HOST")
        .env("COLUMNS", "100")
        .output()
        .expect("dispatch internal reference");
    assert!(
        out.status.success(),
        "dispatch internal reference {page}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn reference_pages_are_what_the_code_generates() {
    let bless = std::env::var_os("DISPATCH_BLESS_DOCS").is_some();
    let mut stale = Vec::new();
    for page in PAGES {
        let file = repo().join(format!("docs/reference/{page}.md"));
        let want = generate(page);
        let have = std::fs::read_to_string(&file).unwrap_or_default();
        if have == want {
            continue;
        }
        if bless {
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(&file, &want).expect("write the page");
        } else {
            stale.push(format!("docs/reference/{page}.md"));
        }
    }
    assert!(
        stale.is_empty(),
        "out of date: {} (hint: `DISPATCH_BLESS_DOCS=1 cargo test -p dispatch-cli --test it -- docs_book::` rewrites them from the code)",
        stale.join(", ")
    );
}

/// The table of `docs/agentfile-compat.md` is what the directive registry
/// generates (the prose around it is written by hand).
#[test]
fn the_upstream_compatibility_table_is_what_the_registry_generates() {
    let file = repo().join("docs/agentfile-compat.md");
    let have = std::fs::read_to_string(&file).expect("docs/agentfile-compat.md");
    let table = generate("agentfile-compat");
    let want = dispatch_core::agentfile::splice_compat(&have, &table)
        .expect("docs/agentfile-compat.md keeps the BEGIN/END generated markers");
    if have == want {
        return;
    }
    if std::env::var_os("DISPATCH_BLESS_DOCS").is_some() {
        std::fs::write(&file, &want).expect("write the page");
        return;
    }
    panic!(
        "out of date: docs/agentfile-compat.md (hint: `DISPATCH_BLESS_DOCS=1 cargo test -p dispatch-cli --test it -- docs_book::` rewrites its table from the registry)"
    );
}

/// Every `"DISPATCH_…"` string in the sources, by file.
fn names_in_sources() -> HashMap<String, PathBuf> {
    let mut names = HashMap::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("crates"))
        .expect("crates/")
        .filter_map(|e| e.ok().map(|e| e.path().join("src")))
        .collect();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for (i, _) in text.match_indices("\"DISPATCH_") {
                    let rest = &text[i + 1..];
                    let end = rest
                        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                        .unwrap_or(rest.len());
                    // Only whole names: `"DISPATCH_X"`, not a prefix being formatted.
                    if rest[end..].starts_with('"') && end > "DISPATCH_".len() {
                        names.insert(rest[..end].to_string(), path.clone());
                    }
                }
            }
        }
    }
    names
}

#[test]
fn every_environment_variable_the_sources_name_is_documented() {
    let page = generate("environment");
    let mut missing: Vec<String> = names_in_sources()
        .into_iter()
        .filter(|(name, _)| !page.contains(&format!("`{name}`")))
        .map(|(name, file)| format!("{name} ({})", file.display()))
        .collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "not in crates/dispatch-core/src/environment.rs: {}",
        missing.join(", ")
    );
}

/// Every Markdown file of the book, relative to `docs/`.
fn book_pages() -> BTreeSet<String> {
    let docs = repo().join("docs");
    let mut pages = BTreeSet::new();
    let mut dirs = vec![docs.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("docs/").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                let rel = path.strip_prefix(&docs).expect("under docs/");
                pages.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    pages.remove("SUMMARY.md");
    pages
}

struct Page {
    anchors: BTreeSet<String>,
    links: Vec<String>,
}

/// The anchor GitHub and mdBook give a heading.
fn anchor(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn read_page(path: &Path) -> Page {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut anchors = BTreeSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut links = Vec::new();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(&text, Options::all()) {
        match event {
            Event::Start(Tag::Heading { level, .. }) if level != HeadingLevel::H6 => {
                heading = Some(String::new());
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some(h) = heading.take() {
                    let base = anchor(&h);
                    let n = seen.entry(base.clone()).or_insert(0);
                    let a = if *n == 0 {
                        base.clone()
                    } else {
                        format!("{base}-{n}")
                    };
                    *n += 1;
                    anchors.insert(a);
                }
            }
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => {
                links.push(dest_url.to_string());
            }
            _ => {}
        }
    }
    Page { anchors, links }
}

#[test]
fn summary_lists_every_page_and_every_listed_page_exists() {
    let summary = read_page(&repo().join("docs/SUMMARY.md"));
    let listed: BTreeSet<String> = summary.links.iter().cloned().collect();
    let pages = book_pages();
    let unlisted: Vec<&String> = pages.iter().filter(|p| !listed.contains(*p)).collect();
    assert!(
        unlisted.is_empty(),
        "pages missing from docs/SUMMARY.md: {unlisted:?}"
    );
    let missing: Vec<&String> = listed.iter().filter(|l| !pages.contains(*l)).collect();
    assert!(
        missing.is_empty(),
        "SUMMARY.md lists pages that do not exist: {missing:?}"
    );
}

#[test]
fn no_relative_link_or_anchor_is_broken() {
    let root = repo();
    let mut files: Vec<PathBuf> = book_pages()
        .into_iter()
        .map(|p| root.join("docs").join(p))
        .collect();
    files.push(root.join("docs/SUMMARY.md"));
    files.push(root.join("README.md"));
    files.push(root.join("BENCHMARKS.md"));
    let mut cache: HashMap<PathBuf, Page> = HashMap::new();
    let mut broken = Vec::new();
    for file in &files {
        let page = read_page(file);
        for link in &page.links {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (target, fragment) = match link.split_once('#') {
                Some((t, f)) => (t, Some(f)),
                None => (link.as_str(), None),
            };
            let target_path = if target.is_empty() {
                file.clone()
            } else {
                file.parent().expect("parent").join(target)
            };
            let shown = file
                .strip_prefix(&root)
                .unwrap_or(file)
                .display()
                .to_string();
            let Ok(target_path) = target_path.canonicalize() else {
                broken.push(format!("{shown}: {link} (no such file)"));
                continue;
            };
            let (Some(fragment), true) =
                (fragment, target_path.extension().is_some_and(|e| e == "md"))
            else {
                continue;
            };
            let anchors = &cache
                .entry(target_path.clone())
                .or_insert_with(|| read_page(&target_path))
                .anchors;
            if !anchors.contains(fragment) {
                broken.push(format!("{shown}: {link} (no such heading)"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
