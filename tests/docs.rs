//! The documentation: the book under `docs/` builds with mdBook and every link inside it
//! resolves (a relative `href` or `src` to a file of the build, a `#fragment` to an `id` in the
//! page it names); every page under `docs/src` is listed in `SUMMARY.md`; and the README stays a
//! short landing page whose relative links, like `ARCHITECTURE.md`'s, resolve.
//!
//! External `http(s)` links are not followed: the tests use no network.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::util::repo;

/// The README is a landing page; the rest belongs in the book.
const README_MAX_WORDS: usize = 1_500;

#[test]
#[allow(clippy::print_stderr)] // Says so when the machine has no mdbook and is not CI.
fn the_book_builds_and_every_link_in_it_resolves() {
    let version = Command::new("mdbook").arg("--version").output();
    if !version.is_ok_and(|v| v.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "mdbook is not on PATH, and CI is set: scripts/test.sh installs it \
             (`cargo install mdbook --locked`, the version it pins)"
        );
        eprintln!(
            "skipping the book's build and link check: mdbook is not on PATH \
             (scripts/test.sh installs it; with CI set this test fails instead)"
        );
        return;
    }
    let out = tempfile::tempdir().expect("temporary directory");
    let build = Command::new("mdbook")
        .arg("build")
        .arg(repo().join("docs"))
        .arg("--dest-dir")
        .arg(out.path())
        .output()
        .expect("running mdbook");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    assert!(build.status.success(), "mdbook build failed:\n{log}");
    // mdBook logs some problems (an include it cannot read, say) and still succeeds.
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[WARN]") || l.contains("[ERROR]"))
        .collect();
    assert!(
        complaints.is_empty(),
        "mdbook build complained:\n{}",
        complaints.join("\n")
    );

    let site = Site::read(out.path());
    assert!(
        site.pages.len() > 20,
        "the build has only {} pages",
        site.pages.len()
    );
    let broken = site.broken_links();
    assert!(
        broken.is_empty(),
        "{} broken link(s) in the book:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn every_page_of_the_book_is_in_the_summary() {
    let src = repo().join("docs/src");
    let summary = fs::read_to_string(src.join("SUMMARY.md")).expect("docs/src/SUMMARY.md");
    let listed: BTreeSet<PathBuf> = markdown_links(&summary)
        .into_iter()
        .filter(|target| !is_external(target))
        .map(|target| normalize(Path::new(split_fragment(&target).0)))
        .collect();
    let mut pages = Vec::new();
    walk(&src, &mut pages);
    let on_disk: BTreeSet<PathBuf> = pages
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.strip_prefix(&src).unwrap().to_path_buf())
        .filter(|p| p != Path::new("SUMMARY.md"))
        .collect();
    let unlisted: Vec<_> = on_disk.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "pages under docs/src that SUMMARY.md does not list (mdBook would not build them): {unlisted:?}"
    );
    let missing: Vec<_> = listed.difference(&on_disk).collect();
    assert!(
        missing.is_empty(),
        "SUMMARY.md lists pages that do not exist: {missing:?}"
    );
}

#[test]
fn the_readme_is_a_short_landing_page_whose_links_resolve() {
    let readme = fs::read_to_string(repo().join("README.md")).expect("README.md");
    let words = readme.split_whitespace().count();
    assert!(
        words <= README_MAX_WORDS,
        "README.md has {words} words, more than {README_MAX_WORDS}: it is the landing page, \
         and the rest belongs in the book under docs/"
    );
    let mut broken = Vec::new();
    for file in ["README.md", "ARCHITECTURE.md"] {
        broken.extend(broken_markdown_links(&repo(), Path::new(file)));
    }
    assert!(
        broken.is_empty(),
        "broken relative links:\n{}",
        broken.join("\n")
    );
}

/// The relative links of the Markdown file `file` (relative to `root`) that name no file, or
/// a heading that the file they name does not have.
fn broken_markdown_links(root: &Path, file: &Path) -> Vec<String> {
    let text = fs::read_to_string(root.join(file)).unwrap_or_default();
    let dir = file.parent().unwrap_or(Path::new(""));
    let mut broken = Vec::new();
    for target in markdown_links(&text) {
        if is_external(&target) {
            continue;
        }
        let (path, fragment) = split_fragment(&target);
        let resolved = if path.is_empty() {
            file.to_path_buf()
        } else {
            normalize(&dir.join(percent_decode(path)))
        };
        if resolved.starts_with("..") || !root.join(&resolved).exists() {
            broken.push(format!("{}: {target} (no such file)", file.display()));
            continue;
        }
        if let Some(fragment) = fragment.filter(|f| !f.is_empty()) {
            if resolved.extension().is_some_and(|e| e == "md") {
                let target_text = fs::read_to_string(root.join(&resolved)).unwrap_or_default();
                let slugs = heading_slugs(&target_text);
                if !slugs.contains(&percent_decode(fragment).to_lowercase()) {
                    broken.push(format!(
                        "{}: {target} (no such heading in {})",
                        file.display(),
                        resolved.display()
                    ));
                }
            }
        }
    }
    broken
}

/// Every inline link target (`[text](target)`) and reference definition (`[label]: target`)
/// outside code blocks and code spans.
fn markdown_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let line = without_code_spans(line);
        if let Some(rest) = line.trim_start().strip_prefix('[') {
            if let Some((_, target)) = rest.split_once("]:") {
                if let Some(target) = target.split_whitespace().next() {
                    links.push(target.trim_matches(['<', '>']).to_owned());
                }
                continue;
            }
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or("");
            if !target.is_empty() {
                links.push(target.trim_matches(['<', '>']).to_owned());
            }
            rest = &after[end..];
        }
    }
    links
}

fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The anchors GitHub gives a Markdown file's headings: lower case, spaces as hyphens, other
/// punctuation dropped.
fn heading_slugs(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut slugs = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .chars()
            .filter_map(|c| match c {
                c if c.is_alphanumeric() || c == '-' || c == '_' => {
                    Some(c.to_lowercase().next().unwrap_or(c))
                }
                ' ' => Some('-'),
                _ => None,
            })
            .collect();
        slugs.insert(slug);
    }
    slugs
}

/// A built HTML site: each page's path (relative to the root), its `id`s and its links.
struct Site {
    root: PathBuf,
    pages: BTreeMap<PathBuf, Page>,
}

#[derive(Default)]
struct Page {
    ids: BTreeSet<String>,
    links: Vec<String>,
    /// The `<base href>`, if the page has one (mdBook's 404 page does).
    base: Option<String>,
}

impl Site {
    fn read(root: &Path) -> Self {
        let mut files = Vec::new();
        walk(root, &mut files);
        let pages = files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "html"))
            .map(|f| {
                let html = fs::read_to_string(&f).unwrap_or_default();
                (
                    f.strip_prefix(root).unwrap().to_path_buf(),
                    Page::scan(&html),
                )
            })
            .collect();
        Self {
            root: root.to_path_buf(),
            pages,
        }
    }

    /// Every relative link that names no file of the build, or an `id` its page lacks.
    fn broken_links(&self) -> Vec<String> {
        let mut broken = Vec::new();
        for (path, page) in &self.pages {
            let dir = match page.base.as_deref() {
                Some(base) if base.starts_with('/') => PathBuf::from(base.trim_start_matches('/')),
                Some(base) => path.parent().unwrap_or(Path::new("")).join(base),
                None => path.parent().unwrap_or(Path::new("")).to_path_buf(),
            };
            for link in &page.links {
                if is_external(link) {
                    continue;
                }
                if let Err(why) = self.resolve(path, &dir, link) {
                    broken.push(format!("{}: {link} ({why})", path.display()));
                }
            }
        }
        broken
    }

    fn resolve(&self, page: &Path, dir: &Path, link: &str) -> Result<(), String> {
        let (path, fragment) = split_fragment(link);
        let path = path.split('?').next().unwrap_or("");
        let mut target = if path.is_empty() {
            page.to_path_buf()
        } else if let Some(absolute) = path.strip_prefix('/') {
            normalize(Path::new(&percent_decode(absolute)))
        } else {
            normalize(&dir.join(percent_decode(path)))
        };
        if target.starts_with("..") {
            return Err("outside the book".into());
        }
        if self.root.join(&target).is_dir() {
            target = target.join("index.html");
        }
        if !self.root.join(&target).is_file() {
            return Err(format!("no file {}", target.display()));
        }
        let Some(fragment) = fragment.filter(|f| !f.is_empty()) else {
            return Ok(());
        };
        match self.pages.get(&target) {
            Some(target_page) if !target_page.ids.contains(&percent_decode(fragment)) => {
                Err(format!("no id \"{fragment}\" in {}", target.display()))
            }
            _ => Ok(()),
        }
    }
}

impl Page {
    /// A small tag scan: the attributes of every tag outside comments and the bodies of
    /// `script` and `style` elements, which is where mdBook's pages keep their links and ids.
    fn scan(html: &str) -> Self {
        let mut page = Page::default();
        let mut rest = html;
        while let Some(open) = rest.find('<') {
            rest = &rest[open + 1..];
            if let Some(after) = rest.strip_prefix("!--") {
                rest = after.find("-->").map_or("", |end| &after[end + 3..]);
                continue;
            }
            let end = tag_end(rest);
            let tag = &rest[..end];
            rest = &rest[(end + 1).min(rest.len())..];
            let name: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            if name.is_empty() {
                continue; // A closing tag, a doctype, or a stray `<`.
            }
            for (attribute, value) in attributes(&tag[name.len()..]) {
                match attribute.as_str() {
                    "id" => {
                        page.ids.insert(value);
                    }
                    "name" if name == "a" => {
                        page.ids.insert(value);
                    }
                    "href" if name == "base" => page.base = Some(value),
                    "href" | "src" => page.links.push(value),
                    _ => {}
                }
            }
            if name == "script" || name == "style" {
                let close = format!("</{name}");
                rest = find_ignore_case(rest, &close).map_or("", |at| &rest[at..]);
            }
        }
        page
    }
}

/// Where the tag that `text` starts ends (its `>`, outside quoted values).
fn tag_end(text: &str) -> usize {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return i,
            _ => {}
        }
    }
    text.len()
}

/// A tag's attributes, names in lower case and values with their entities decoded.
fn attributes(mut text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    loop {
        text = text.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        if text.is_empty() {
            return found;
        }
        let name_end = text
            .find(|c: char| c.is_whitespace() || c == '=' || c == '/' || c == '>')
            .unwrap_or(text.len())
            .max(1);
        let name = text[..name_end].to_ascii_lowercase();
        text = text[name_end..].trim_start();
        let Some(after) = text.strip_prefix('=') else {
            found.push((name, String::new()));
            continue;
        };
        let after = after.trim_start();
        let (value, rest) = match after.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let body = &after[1..];
                let end = body.find(q).unwrap_or(body.len());
                (&body[..end], &body[(end + 1).min(body.len())..])
            }
            _ => {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        found.push((name, decode_entities(value)));
        text = rest;
    }
}

fn decode_entities(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .to_ascii_lowercase()
        .find(&needle.to_ascii_lowercase())
}

/// Whether a link leaves the site: it has a scheme (`https:`, `mailto:`, `javascript:`, ...)
/// or is protocol-relative (`//host/...`).
fn is_external(link: &str) -> bool {
    if link.starts_with("//") {
        return true;
    }
    match link.find(':') {
        Some(colon) => {
            let scheme = &link[..colon];
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

fn split_fragment(link: &str) -> (&str, Option<&str>) {
    match link.split_once('#') {
        Some((path, fragment)) => (path, Some(fragment)),
        None => (link, None),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a/b/../c` as `a/c`, without touching the file system; a path that climbs above its start
/// keeps its leading `..`.
fn normalize(path: &Path) -> PathBuf {
    let mut parts: Vec<Component<'_>> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match parts.last() {
                Some(Component::Normal(_)) => {
                    parts.pop();
                }
                _ => parts.push(component),
            },
            other => parts.push(other),
        }
    }
    parts.iter().collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn the_link_checker_finds_what_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let path = dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    };
    write(
        "index.html",
        r##"<!DOCTYPE html><html><head><link rel="stylesheet" href="css/a.css">
        <script>var s = '<a href="nowhere.html">';</script></head><body>
        <h1 id="top">Top</h1><!-- <a href="commented.html"> -->
        <a href="guide/page.html#part">ok</a> <a href='guide/page.html#nope'>bad id</a>
        <a href="missing.html">bad file</a> <a href="https://example.com/x">external</a>
        <a href="#top">self</a> <a href="#gone">bad self</a> <img src="img/a%20b.png" alt="">
        <a href="guide/">dir</a> <a href="mailto:x@example.com">mail</a></body></html>"##,
    );
    write("css/a.css", "");
    write("img/a b.png", "");
    write(
        "guide/page.html",
        r##"<h2 id="part">Part</h2><a href="../index.html#top">up</a><a href="../../out.html">out</a>"##,
    );
    write("guide/index.html", "<p>guide</p>");
    let site = Site::read(dir.path());
    let mut broken = site.broken_links();
    broken.sort();
    assert_eq!(
        broken,
        [
            "guide/page.html: ../../out.html (outside the book)",
            "index.html: #gone (no id \"gone\" in index.html)",
            "index.html: guide/page.html#nope (no id \"nope\" in guide/page.html)",
            "index.html: missing.html (no file missing.html)",
        ]
    );

    let markdown = "See [the book](docs/x.md#a-heading), [gone](nope.md), [web](https://x.y),\n\
                    `[code](not-a-link.md)`, and [bad heading](docs/x.md#nothing).\n\
                    ```\n[fenced](also-not.md)\n```\n[ref]: docs/x.md\n";
    write("repo/README.md", markdown);
    write("repo/docs/x.md", "# Title\n\n## A heading\n");
    let mut broken = broken_markdown_links(&dir.path().join("repo"), Path::new("README.md"));
    broken.sort();
    assert_eq!(
        broken,
        [
            "README.md: docs/x.md#nothing (no such heading in docs/x.md)",
            "README.md: nope.md (no such file)",
        ]
    );
}
