//! Every setting the config file accepts is documented in `proxy/CONFIG.md`.
//!
//! The keys are read from the source, the way serde reads the file: starting at
//! `ProxyConfig` (proxy/src/config.rs), every field of every type deriving
//! `Deserialize` that a field's type names, transitively, through `Option`, `Vec`, maps
//! and generic arguments. Field names follow `rename`, `alias`, `rename_all`, `skip`,
//! `skip_deserializing`, `flatten`, `transparent` and `from`/`try_from`; enums give
//! their tag keys (`tag`, `content`), the names of their data-carrying variants (keys:
//! `{ header = "x-user" }`) and the names of their unit variants (values:
//! `mode = "tcp"`). A type is looked up by name in proxy/, routing/, filters/ and
//! certs/; a name defined twice is resolved by the file it is used in or the path it is
//! written with, and fails the test otherwise rather than being guessed. A type with a
//! hand-written `Deserialize` must be listed in [`MANUAL`] with what it accepts.
//!
//! A key is documented when CONFIG.md shows it as code: in a TOML example (`key =`,
//! `{ key = … }`, a `[table.key]` header, commented-out lines included) or in an inline
//! code span (`` `key` ``, `` `table.key` ``, `` `key = …` ``). A value is documented
//! when it appears as a whole word in a TOML example or an inline code span. Names are
//! checked, not their full paths: a key documented for one table counts for another.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Fields, GenericArgument, Item, LitStr, PathArguments, Type};

/// Types with a hand-written `Deserialize`, and what that accepts beyond the types
/// named in their generic arguments (which are followed as usual).
const MANUAL: &[(&str, &str)] = &[(
    "Switch",
    "`true` (the defaults of its type argument), `false`, or a table of its type argument",
)];

/// Names the parser accepts that are deliberately not in CONFIG.md, with the reason.
const INTERNAL: &[(&str, &str)] = &[];

/// Source folders whose types the config may name.
const CRATES: &[&str] = &["proxy/src", "routing/src", "filters/src", "certs/src"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

// ---------------------------------------------------------------------------------
// serde attributes

#[derive(Debug, Default, Clone)]
struct SerdeAttrs {
    rename: Option<String>,
    aliases: Vec<String>,
    rename_all: Option<String>,
    rename_all_fields: Option<String>,
    skip: bool,
    flatten: bool,
    transparent: bool,
    untagged: bool,
    tag: Option<String>,
    content: Option<String>,
    from: Option<String>,
}

fn lit(meta: &ParseNestedMeta) -> syn::Result<String> {
    Ok(meta.value()?.parse::<LitStr>()?.value())
}

/// Consumes whatever an attribute we do not interpret carries.
fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|m| skip_value(&m))?;
    }
    Ok(())
}

/// `name = "x"` or `name(deserialize = "x", serialize = "y")`: the deserialize side.
fn de_name(meta: &ParseNestedMeta) -> syn::Result<Option<String>> {
    if meta.input.peek(syn::Token![=]) {
        return lit(meta).map(Some);
    }
    let mut out = None;
    meta.parse_nested_meta(|m| {
        if m.path.is_ident("deserialize") {
            out = Some(lit(&m)?);
        } else {
            skip_value(&m)?;
        }
        Ok(())
    })?;
    Ok(out)
}

fn serde_attrs(attrs: &[Attribute]) -> SerdeAttrs {
    let mut s = SerdeAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            let name = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            match name.as_str() {
                "rename" => s.rename = de_name(&meta)?.or(s.rename.take()),
                "alias" => s.aliases.push(lit(&meta)?),
                "rename_all" => s.rename_all = de_name(&meta)?,
                "rename_all_fields" => s.rename_all_fields = de_name(&meta)?,
                "skip" | "skip_deserializing" => s.skip = true,
                "flatten" => s.flatten = true,
                "transparent" => s.transparent = true,
                "untagged" => s.untagged = true,
                "tag" => s.tag = Some(lit(&meta)?),
                "content" => s.content = Some(lit(&meta)?),
                "from" | "try_from" => s.from = Some(lit(&meta)?),
                _ => skip_value(&meta)?,
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", quote_attr(attr)));
    }
    s
}

fn quote_attr(attr: &Attribute) -> String {
    format!("#[{}(…)]", path_string(attr.path()))
}

fn path_string(p: &syn::Path) -> String {
    p.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

fn derives_deserialize(attrs: &[Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("derive"))
        .any(|a| {
            let mut found = false;
            let _ = a.parse_nested_meta(|m| {
                found |= m
                    .path
                    .segments
                    .last()
                    .is_some_and(|s| s.ident == "Deserialize");
                Ok(())
            });
            found
        })
}

fn is_cfg_test(attrs: &[Attribute]) -> bool {
    attrs.iter().filter(|a| a.path().is_ident("cfg")).any(|a| {
        let mut test = false;
        let _ = a.parse_nested_meta(|m| {
            test |= m.path.is_ident("test");
            skip_value(&m)
        });
        test
    })
}

/// serde's `RenameRule`, for a field (snake_case in the source) or a variant (PascalCase).
fn apply_rule(rule: Option<&str>, name: &str, variant: bool) -> String {
    let Some(rule) = rule else {
        return name.to_string();
    };
    let snake = if variant {
        let mut s = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                s.push('_');
            }
            s.extend(c.to_lowercase());
        }
        s
    } else {
        name.to_string()
    };
    let camel = |upper_first: bool| {
        let mut out = String::new();
        for (i, part) in snake.split('_').enumerate() {
            let mut cs = part.chars();
            if let Some(c) = cs.next() {
                if i == 0 && !upper_first {
                    out.push(c);
                } else {
                    out.extend(c.to_uppercase());
                }
                out.extend(cs);
            }
        }
        out
    };
    match rule {
        "snake_case" => snake,
        "lowercase" if variant => name.to_lowercase(),
        "UPPERCASE" if variant => name.to_uppercase(),
        "lowercase" => snake.clone(),
        "UPPERCASE" => snake.to_uppercase(),
        "SCREAMING_SNAKE_CASE" => snake.to_uppercase(),
        "kebab-case" => snake.replace('_', "-"),
        "SCREAMING-KEBAB-CASE" => snake.replace('_', "-").to_uppercase(),
        "camelCase" => camel(false),
        "PascalCase" => camel(true),
        other => panic!("rename_all = {other:?}: teach this test the rule"),
    }
}

// ---------------------------------------------------------------------------------
// the type index

#[derive(Clone)]
enum Shape {
    Struct(Fields),
    Enum(Vec<syn::Variant>),
    /// A hand-written `impl Deserialize`.
    Manual,
}

#[derive(Clone)]
struct Def {
    /// Relative to the workspace, for messages and resolution.
    file: String,
    attrs: SerdeAttrs,
    shape: Shape,
}

#[derive(Default)]
struct Index(HashMap<String, Vec<Def>>);

impl Index {
    fn build() -> Index {
        let root = workspace();
        let mut index = Index::default();
        for dir in CRATES {
            let mut files = Vec::new();
            rust_files(&root.join(dir), &mut files);
            for path in files {
                let text = std::fs::read_to_string(&path).unwrap();
                let file = syn::parse_file(&text)
                    .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                index.add_items(&rel, &file.items);
            }
        }
        index
    }

    fn add_items(&mut self, file: &str, items: &[Item]) {
        for item in items {
            let (name, attrs, shape) = match item {
                Item::Struct(s) if derives_deserialize(&s.attrs) => (
                    s.ident.to_string(),
                    &s.attrs,
                    Shape::Struct(s.fields.clone()),
                ),
                Item::Enum(e) if derives_deserialize(&e.attrs) => (
                    e.ident.to_string(),
                    &e.attrs,
                    Shape::Enum(e.variants.iter().cloned().collect()),
                ),
                Item::Impl(i) if implements_deserialize(i) => {
                    let Type::Path(p) = &*i.self_ty else { continue };
                    let name = p.path.segments.last().unwrap().ident.to_string();
                    self.0.entry(name).or_default().push(Def {
                        file: file.to_string(),
                        attrs: SerdeAttrs::default(),
                        shape: Shape::Manual,
                    });
                    continue;
                }
                Item::Mod(m) if !is_cfg_test(&m.attrs) => {
                    if let Some((_, inner)) = &m.content {
                        self.add_items(file, inner);
                    }
                    continue;
                }
                _ => continue,
            };
            self.0.entry(name).or_default().push(Def {
                file: file.to_string(),
                attrs: serde_attrs(attrs),
                shape,
            });
        }
    }

    /// The definition a type path written in `from_file` means, if it is deserializable.
    fn resolve(&self, qualifiers: &[String], name: &str, from_file: &str) -> Option<&Def> {
        let all = self.0.get(name)?;
        if all.len() == 1 {
            return all.first();
        }
        let wanted: Vec<String> = qualifiers
            .iter()
            .filter(|q| !matches!(q.as_str(), "crate" | "self" | "super"))
            .map(|q| match q.strip_prefix("tollgate_") {
                Some(krate) => format!("{krate}/src"),
                None => q.clone(),
            })
            .collect();
        let by_path: Vec<&Def> = all
            .iter()
            .filter(|d| wanted.iter().all(|w| d.file.contains(w.as_str())))
            .collect();
        if by_path.len() == 1 {
            return by_path.first().copied();
        }
        if let Some(same_file) = by_path.iter().find(|d| d.file == from_file) {
            return Some(same_file);
        }
        let files: Vec<&str> = all.iter().map(|d| d.file.as_str()).collect();
        panic!(
            "`{name}` (named in {from_file}) is defined in several places: {files:?}; \
             write it with its module path or teach this test which one is meant"
        )
    }
}

fn implements_deserialize(i: &syn::ItemImpl) -> bool {
    i.trait_
        .as_ref()
        .and_then(|(_, path, _)| path.segments.last())
        .is_some_and(|s| s.ident == "Deserialize")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every type path in `ty` (generic arguments included): its qualifiers and its name.
fn type_names(ty: &Type, out: &mut Vec<(Vec<String>, String)>) {
    match ty {
        Type::Path(p) => {
            let segs: Vec<String> = p
                .path
                .segments
                .iter()
                .map(|s| s.ident.to_string())
                .collect();
            if let Some((name, quals)) = segs.split_last() {
                out.push((quals.to_vec(), name.clone()));
            }
            for seg in &p.path.segments {
                if let PathArguments::AngleBracketed(args) = &seg.arguments {
                    for a in &args.args {
                        if let GenericArgument::Type(t) = a {
                            type_names(t, out);
                        }
                    }
                }
            }
        }
        Type::Reference(r) => type_names(&r.elem, out),
        Type::Array(a) => type_names(&a.elem, out),
        Type::Slice(s) => type_names(&s.elem, out),
        Type::Paren(p) => type_names(&p.elem, out),
        Type::Group(g) => type_names(&g.elem, out),
        Type::Tuple(t) => t.elems.iter().for_each(|e| type_names(e, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------
// the walk

#[derive(Default)]
struct Accepted {
    /// Key name -> where it was first met (`listeners.mode`).
    keys: BTreeMap<String, String>,
    /// Value name -> where it was first met.
    values: BTreeMap<String, String>,
    visited: HashSet<(String, String)>,
    unknown_manual: BTreeSet<String>,
}

impl Accepted {
    fn key(&mut self, name: &str, at: &str) {
        self.keys
            .entry(name.to_string())
            .or_insert_with(|| join(at, name));
    }
    fn value(&mut self, name: &str, at: &str) {
        self.values
            .entry(name.to_string())
            .or_insert_with(|| format!("{at} = \"{name}\""));
    }
}

fn join(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_string()
    } else {
        format!("{at}.{name}")
    }
}

struct Walker<'a> {
    index: &'a Index,
    out: Accepted,
}

impl Walker<'_> {
    fn walk_type(&mut self, ty: &Type, from_file: &str, at: &str) {
        let mut names = Vec::new();
        type_names(ty, &mut names);
        for (quals, name) in names {
            if let Some(def) = self.index.resolve(&quals, &name, from_file) {
                let def = def.clone();
                self.walk_def(&name, &def, at);
            }
        }
    }

    fn walk_def(&mut self, name: &str, def: &Def, at: &str) {
        if !self
            .out
            .visited
            .insert((def.file.clone(), name.to_string()))
        {
            return;
        }
        if let Some(from) = &def.attrs.from {
            let ty: Type = syn::parse_str(from).unwrap();
            return self.walk_type(&ty, &def.file, at);
        }
        match &def.shape {
            Shape::Manual => {
                if !MANUAL.iter().any(|(n, _)| *n == name) {
                    self.out
                        .unknown_manual
                        .insert(format!("{name} ({})", def.file));
                }
            }
            Shape::Struct(fields) => {
                if def.attrs.transparent || matches!(fields, Fields::Unnamed(_)) {
                    for f in fields {
                        if !serde_attrs(&f.attrs).skip {
                            self.walk_type(&f.ty, &def.file, at);
                        }
                    }
                } else {
                    self.walk_fields(fields, def.attrs.rename_all.as_deref(), &def.file, at);
                }
            }
            Shape::Enum(variants) => self.walk_enum(variants, def, at),
        }
    }

    fn walk_fields(&mut self, fields: &Fields, rule: Option<&str>, file: &str, at: &str) {
        for f in fields {
            let attrs = serde_attrs(&f.attrs);
            if attrs.skip {
                continue;
            }
            if attrs.flatten {
                self.walk_type(&f.ty, file, at);
                continue;
            }
            let ident = f.ident.as_ref().expect("named field").to_string();
            let ident = ident.trim_start_matches("r#");
            let key = attrs
                .rename
                .clone()
                .unwrap_or_else(|| apply_rule(rule, ident, false));
            self.out.key(&key, at);
            for alias in &attrs.aliases {
                self.out.key(alias, at);
            }
            self.walk_type(&f.ty, file, &join(at, &key));
        }
    }

    fn walk_enum(&mut self, variants: &[syn::Variant], def: &Def, at: &str) {
        let a = &def.attrs;
        for key in [&a.tag, &a.content].into_iter().flatten() {
            self.out.key(key, at);
        }
        for v in variants {
            let va = serde_attrs(&v.attrs);
            if va.skip {
                continue;
            }
            let name = va
                .rename
                .clone()
                .unwrap_or_else(|| apply_rule(a.rename_all.as_deref(), &v.ident.to_string(), true));
            let names: Vec<String> = std::iter::once(name).chain(va.aliases.clone()).collect();
            let field_rule = va.rename_all.as_deref().or(a.rename_all_fields.as_deref());
            if a.untagged {
                match &v.fields {
                    Fields::Named(_) => self.walk_fields(&v.fields, field_rule, &def.file, at),
                    _ => v
                        .fields
                        .iter()
                        .for_each(|f| self.walk_type(&f.ty, &def.file, at)),
                }
                continue;
            }
            let internally = a.tag.is_some();
            for n in &names {
                if internally || matches!(v.fields, Fields::Unit) {
                    self.out.value(
                        n,
                        &match &a.tag {
                            Some(tag) => join(at, tag),
                            None => at.to_string(),
                        },
                    );
                } else {
                    self.out.key(n, at);
                }
            }
            let inner = if internally {
                at.to_string()
            } else {
                join(at, &names[0])
            };
            match &v.fields {
                Fields::Named(_) => self.walk_fields(&v.fields, field_rule, &def.file, &inner),
                _ => v
                    .fields
                    .iter()
                    .for_each(|f| self.walk_type(&f.ty, &def.file, &inner)),
            }
        }
    }
}

fn accepted() -> Accepted {
    let index = Index::build();
    let root = index
        .0
        .get("ProxyConfig")
        .and_then(|d| d.iter().find(|d| d.file == "proxy/src/config.rs"))
        .expect("ProxyConfig in proxy/src/config.rs")
        .clone();
    let mut w = Walker {
        index: &index,
        out: Accepted::default(),
    };
    w.walk_def("ProxyConfig", &root, "");
    w.out
}

// ---------------------------------------------------------------------------------
// CONFIG.md

/// The parts of the document that are code: lines of fenced blocks and inline spans.
struct Doc {
    fenced: Vec<String>,
    spans: Vec<String>,
}

impl Doc {
    fn read() -> Doc {
        let text = std::fs::read_to_string(workspace().join("proxy/CONFIG.md")).unwrap();
        let mut doc = Doc {
            fenced: Vec::new(),
            spans: Vec::new(),
        };
        let mut in_fence = false;
        let mut prose = String::new();
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
                doc.take_spans(&mut prose);
                continue;
            }
            if in_fence {
                doc.fenced.push(line.to_string());
            } else if line.trim().is_empty() {
                doc.take_spans(&mut prose);
            } else {
                prose.push_str(line);
                prose.push('\n');
            }
        }
        doc.take_spans(&mut prose);
        doc
    }

    /// The inline code spans of one paragraph (a span may wrap a line, not a paragraph).
    fn take_spans(&mut self, paragraph: &mut String) {
        for (i, part) in paragraph.split('`').enumerate() {
            if i % 2 == 1 {
                self.spans.push(part.replace('\n', " "));
            }
        }
        paragraph.clear();
    }

    fn documents_key(&self, key: &str) -> bool {
        let segment_of = |s: &str| {
            s.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split('.')
                .any(|seg| seg == key)
        };
        self.spans.iter().any(|s| segment_of(s) || assigned(s, key))
            || self.fenced.iter().any(|l| {
                let t = l.trim_start();
                assigned(l, key)
                    || (t.starts_with('[') && segment_of(t.split(']').next().unwrap_or("")))
            })
    }

    fn documents_value(&self, value: &str) -> bool {
        self.fenced
            .iter()
            .chain(&self.spans)
            .any(|s| words(s).any(|(w, _)| w == value))
    }
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The words of `s` (runs of `is_word` characters) with what follows each.
fn words(s: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = s;
    std::iter::from_fn(move || {
        let start = rest.find(is_word)?;
        let from = &rest[start..];
        let end = from.find(|c| !is_word(c)).unwrap_or(from.len());
        let (word, after) = from.split_at(end);
        rest = after;
        Some((word, after))
    })
}

/// `key = …` (not `==`) somewhere in `s`.
fn assigned(s: &str, key: &str) -> bool {
    words(s).any(|(w, after)| {
        let after = after.trim_start();
        w == key && after.starts_with('=') && !after.starts_with("==")
    })
}

// ---------------------------------------------------------------------------------
// the tests

#[test]
fn every_key_the_parser_accepts_is_in_config_md() {
    let accepted = accepted();
    assert!(
        accepted.unknown_manual.is_empty(),
        "types with a hand-written Deserialize reached from ProxyConfig: {:?}; add each to \
         MANUAL in this test with what it accepts (and document its keys)",
        accepted.unknown_manual
    );
    // The walk itself works: these are reached only through several levels of types.
    for known in [
        "listen",
        "mode",
        "protocol_hint",
        "proxy_protocol",
        "risky_allowed",
        "token_file",
        "consecutive_failures",
        "per_second",
        "include_subdomains",
        "policy",
        "header",
    ] {
        assert!(accepted.keys.contains_key(known), "walk missed `{known}`");
    }
    for known in [
        "tls_passthrough",
        "tcp_raw",
        "consistent_hash",
        "http_terminate",
    ] {
        assert!(accepted.values.contains_key(known), "walk missed `{known}`");
    }
    assert!(
        !accepted.values.contains_key("snake_case"),
        "attribute text taken for a value"
    );

    let doc = Doc::read();
    let internal: HashSet<&str> = INTERNAL.iter().map(|(k, _)| *k).collect();
    let missing_keys: Vec<&String> = accepted
        .keys
        .iter()
        .filter(|(k, _)| !internal.contains(k.as_str()) && !doc.documents_key(k))
        .map(|(_, at)| at)
        .collect();
    let missing_values: Vec<&String> = accepted
        .values
        .iter()
        .filter(|(v, _)| !internal.contains(v.as_str()) && !doc.documents_value(v))
        .map(|(_, at)| at)
        .collect();
    assert!(
        missing_keys.is_empty() && missing_values.is_empty(),
        "proxy/CONFIG.md does not document these settings the config parser accepts \
         (document each in a TOML example or as `code`, or list it in INTERNAL with why):\n\
         keys: {missing_keys:#?}\nvalues: {missing_values:#?}"
    );
}

#[test]
fn the_doc_matcher_needs_code_not_prose() {
    let doc = Doc {
        fenced: vec![
            "[listeners.tls]".into(),
            "mode = \"tcp\"   # or \"http\"".into(),
            "x = { per_second = 1 }".into(),
            "a == b".into(),
        ],
        spans: vec!["limits.identity_headers".into(), "status = 308".into()],
    };
    for key in [
        "tls",
        "listeners",
        "mode",
        "per_second",
        "identity_headers",
        "status",
    ] {
        assert!(doc.documents_key(key), "{key}");
    }
    for key in ["tcp", "a", "per", "second", "headers"] {
        assert!(!doc.documents_key(key), "{key}");
    }
    assert!(doc.documents_value("http") && doc.documents_value("tcp"));
    assert!(!doc.documents_value("tc") && !doc.documents_value("second"));
}

#[test]
fn rename_rules_match_serde() {
    assert_eq!(
        apply_rule(Some("snake_case"), "TlsPassthrough", true),
        "tls_passthrough"
    );
    assert_eq!(apply_rule(Some("snake_case"), "H2c", true), "h2c");
    assert_eq!(apply_rule(Some("kebab-case"), "max_age", false), "max-age");
    assert_eq!(apply_rule(Some("camelCase"), "max_age", false), "maxAge");
    assert_eq!(apply_rule(None, "Http1", true), "Http1");
}
