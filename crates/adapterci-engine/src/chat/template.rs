//! Recognises ChatML-family Jinja chat templates: a small lexer (tags, string literals, whitespace control) and a
//! matcher for the few tag sequences that render ChatML. Anything else is refused, naming what was found.

use crate::error::EngineError;

/// Conditions under which SmolLM2-style templates insert a default system message (whitespace removed, string
/// literals single-quoted, `x.role` written `x['role']`).
const FIRST_NOT_SYSTEM: [&str; 3] = [
    "ifloop.firstandmessages[0]['role']!='system'",
    "ifloop.index0==0andmessages[0]['role']!='system'",
    "ifmessages[0]['role']!='system'andloop.first",
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Term {
    Literal(String),
    Role,
    Content,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tag {
    /// A `{% %}` statement in canonical form.
    Statement(String),
    /// One or more consecutive `{{ }}` expressions, as `+`-joined terms with adjacent literals merged.
    Output(Vec<Term>),
}

fn refuse(reason: impl std::fmt::Display) -> EngineError {
    EngineError::Tokenizer(format!(
        "unsupported chat template ({reason}); only ChatML templates (<|im_start|>role\\ncontent<|im_end|>\\n) are \
         supported"
    ))
}

/// The default system message of a recognised ChatML template (`None` for plain ChatML).
pub(super) fn recognise(template: &str) -> Result<Option<String>, EngineError> {
    let tags = lex(template)?;
    let mut rest = tags.as_slice();
    take_statement(&mut rest, &["formessageinmessages"])?;
    let mut default_system = None;
    if let Some(Tag::Statement(condition)) = rest.first()
        && FIRST_NOT_SYSTEM.contains(&condition.as_str())
    {
        rest = &rest[1..];
        let system = match rest.first() {
            Some(Tag::Output(terms)) => default_system_content(terms)?,
            other => return Err(refuse(format!("expected the default system message, found {}", describe_opt(other)))),
        };
        rest = &rest[1..];
        take_statement(&mut rest, &["endif"])?;
        default_system = Some(system);
    }
    let turn = [
        Term::Literal("<|im_start|>".to_owned()),
        Term::Role,
        Term::Literal("\n".to_owned()),
        Term::Content,
        Term::Literal("<|im_end|>\n".to_owned()),
    ];
    match rest.first() {
        Some(Tag::Output(terms)) if terms.as_slice() == turn => rest = &rest[1..],
        other => return Err(refuse(format!("expected the ChatML turn, found {}", describe_opt(other)))),
    }
    take_statement(&mut rest, &["endfor"])?;
    take_statement(&mut rest, &["ifadd_generation_prompt"])?;
    match rest.first() {
        Some(Tag::Output(terms)) if terms.as_slice() == [Term::Literal("<|im_start|>assistant\n".to_owned())] => {
            rest = &rest[1..];
        }
        other => return Err(refuse(format!("expected the generation prompt, found {}", describe_opt(other)))),
    }
    take_statement(&mut rest, &["endif"])?;
    if let Some(extra) = rest.first() {
        return Err(refuse(format!("unexpected {} after the generation prompt", describe(extra))));
    }
    Ok(default_system)
}

fn take_statement(rest: &mut &[Tag], expect: &[&str]) -> Result<(), EngineError> {
    match rest.split_first() {
        Some((Tag::Statement(found), tail)) if expect.contains(&found.as_str()) => {
            *rest = tail;
            Ok(())
        }
        Some((found, _)) => Err(refuse(format!("expected {{% {} %}}, found {}", expect[0], describe(found)))),
        None => Err(refuse(format!("expected {{% {} %}}, found the end of the template", expect[0]))),
    }
}

fn default_system_content(terms: &[Term]) -> Result<String, EngineError> {
    if let [Term::Literal(text)] = terms
        && let Some(inner) = text.strip_prefix("<|im_start|>system\n").and_then(|t| t.strip_suffix("<|im_end|>\n"))
        && !inner.contains("<|im_")
    {
        return Ok(inner.to_owned());
    }
    Err(refuse(format!("the default system message is not a fixed ChatML system turn: {terms:?}")))
}

fn describe(tag: &Tag) -> String {
    match tag {
        Tag::Statement(body) => format!("{{% {body} %}}"),
        Tag::Output(terms) => format!("{{{{ {terms:?} }}}}"),
    }
}

fn describe_opt(tag: Option<&Tag>) -> String {
    tag.map_or_else(|| "the end of the template".to_owned(), describe)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Statement,
    Expression,
    Comment,
}

/// A raw tag with its whitespace-control markers.
struct RawTag {
    kind: Kind,
    body: String,
    /// `{%-`: strip all whitespace before.
    strip_before: bool,
    /// `{%+`: keep the line's indentation despite `lstrip_blocks`.
    keep_before: bool,
    /// `-%}`: strip all whitespace after.
    strip_after: bool,
}

/// Splits the template into tags, checks that the text between them renders to nothing, and canonicalises tags.
fn lex(template: &str) -> Result<Vec<Tag>, EngineError> {
    let mut texts = Vec::new();
    let mut raw_tags = Vec::new();
    let mut rest = template;
    loop {
        let next = ["{{", "{%", "{#"].iter().filter_map(|open| rest.find(open)).min();
        let Some(start) = next else {
            texts.push(rest);
            break;
        };
        texts.push(&rest[..start]);
        let (tag, consumed) = lex_tag(&rest[start..])?;
        raw_tags.push(tag);
        rest = &rest[start + consumed..];
    }
    for (index, text) in texts.iter().enumerate() {
        let before = index.checked_sub(1).map(|i| &raw_tags[i]);
        let after = raw_tags.get(index);
        let remaining = rendered_text(text, before, after, index == 0);
        if !remaining.is_empty() {
            return Err(refuse(format!("it renders the literal text {remaining:?}")));
        }
    }
    let mut tags: Vec<Tag> = Vec::new();
    for raw in raw_tags {
        match raw.kind {
            Kind::Comment => {}
            Kind::Statement => tags.push(Tag::Statement(canonical(&raw.body)?)),
            Kind::Expression => {
                let terms = parse_terms(&canonical(&raw.body)?)?;
                if let Some(Tag::Output(previous)) = tags.last_mut() {
                    previous.extend(terms);
                    *previous = merge_literals(std::mem::take(previous));
                } else {
                    tags.push(Tag::Output(merge_literals(terms)));
                }
            }
        }
    }
    Ok(tags)
}

/// What a text between tags renders to under HF's `trim_blocks=True, lstrip_blocks=True` and `-` markers.
fn rendered_text<'t>(text: &'t str, before: Option<&RawTag>, after: Option<&RawTag>, at_start: bool) -> &'t str {
    let start = match before {
        Some(tag) if tag.strip_after => text.len() - text.trim_start().len(),
        Some(tag) if tag.kind != Kind::Expression => {
            if text.starts_with("\r\n") {
                2
            } else {
                usize::from(text.starts_with('\n'))
            }
        }
        _ => 0,
    };
    // lstrip_blocks looks at the source line, so it is decided on the text before trim_blocks cut anything.
    let end = match after {
        Some(tag) if tag.strip_before => text.trim_end().len(),
        Some(tag) if tag.kind != Kind::Expression && !tag.keep_before => {
            let line_start = text.rfind('\n').map(|at| at + 1);
            let indentation_only = |from: usize| text[from..].chars().all(|c| c == ' ' || c == '\t');
            match line_start {
                Some(from) if indentation_only(from) => from,
                None if at_start && indentation_only(0) => 0,
                _ => text.len(),
            }
        }
        _ => text.len(),
    };
    if start >= end { "" } else { &text[start..end] }
}

/// Lexes one tag at the start of `source`; returns it and the number of bytes it spans.
fn lex_tag(source: &str) -> Result<(RawTag, usize), EngineError> {
    let (kind, close) = match &source[..2] {
        "{{" => (Kind::Expression, "}}"),
        "{%" => (Kind::Statement, "%}"),
        _ => (Kind::Comment, "#}"),
    };
    let mut body_start = 2;
    let (strip_before, keep_before) = match source.as_bytes().get(2) {
        Some(b'-') => (true, false),
        Some(b'+') => (false, true),
        _ => (false, false),
    };
    if strip_before || keep_before {
        body_start += 1;
    }
    let end = find_close(&source[body_start..], close, kind != Kind::Comment)
        .ok_or_else(|| refuse(format!("a tag opened with {} is never closed", &source[..2])))?;
    let mut body = &source[body_start..body_start + end];
    let strip_after = body.ends_with('-');
    if strip_after {
        body = &body[..body.len() - 1];
    }
    let tag = RawTag { kind, body: body.to_owned(), strip_before, keep_before, strip_after };
    Ok((tag, body_start + end + close.len()))
}

/// The offset of `close` in `body`, skipping string literals when `literals` is set.
fn find_close(body: &str, close: &str, literals: bool) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (offset, ch) in body.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == q {
                    quote = None;
                }
            }
            None if literals && (ch == '\'' || ch == '"') => quote = Some(ch),
            None if body[offset..].starts_with(close) => return Some(offset),
            None => {}
        }
    }
    None
}

/// The tag body with whitespace removed outside literals, literals re-quoted with `'` and escaped canonically
/// (`\\`, `\'`, `\n`, `\t`, `\r`), and `x.role` / `x.content` spelled `x['role']` / `x['content']`.
fn canonical(body: &str) -> Result<String, EngineError> {
    let mut out = String::with_capacity(body.len());
    let mut code = String::new();
    let mut chars = body.chars();
    while let Some(ch) = chars.next() {
        if ch == '\'' || ch == '"' {
            out.push_str(&canonical_code(&std::mem::take(&mut code)));
            let literal = read_literal(&mut chars, ch)?;
            out.push('\'');
            out.push_str(&escape(&literal));
            out.push('\'');
        } else if !ch.is_whitespace() {
            code.push(ch);
        }
    }
    out.push_str(&canonical_code(&code));
    Ok(out)
}

fn canonical_code(code: &str) -> String {
    code.replace(".role", "['role']").replace(".content", "['content']")
}

/// Reads a Python-style string literal after its opening quote, decoding the escapes Jinja templates use.
fn read_literal(chars: &mut std::str::Chars<'_>, quote: char) -> Result<String, EngineError> {
    let mut literal = String::new();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => match chars.next() {
                Some('n') => literal.push('\n'),
                Some('t') => literal.push('\t'),
                Some('r') => literal.push('\r'),
                Some(c @ ('\\' | '\'' | '"')) => literal.push(c),
                other => {
                    return Err(refuse(format!("unsupported escape \\{} in a string literal", other.unwrap_or(' '))));
                }
            },
            c if c == quote => return Ok(literal),
            c => literal.push(c),
        }
    }
    Err(refuse("an unterminated string literal"))
}

fn escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for ch in literal.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// Splits a canonical expression at top-level `+` into literals, `message['role']` and `message['content']`.
fn parse_terms(expression: &str) -> Result<Vec<Term>, EngineError> {
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut chars = expression.chars();
    let finish = |current: &mut String, terms: &mut Vec<Term>| -> Result<(), EngineError> {
        let term = match current.as_str() {
            "message['role']" => Term::Role,
            "message['content']" => Term::Content,
            other => return Err(refuse(format!("unsupported expression {other:?} in {{{{ {expression} }}}}"))),
        };
        terms.push(term);
        current.clear();
        Ok(())
    };
    while let Some(ch) = chars.next() {
        match ch {
            '\'' if current.is_empty() => {
                terms.push(Term::Literal(read_literal(&mut chars, '\'')?));
                match chars.next() {
                    None | Some('+') => {}
                    Some(other) => {
                        return Err(refuse(format!("unexpected {other:?} after a literal in {expression:?}")));
                    }
                }
            }
            '+' => finish(&mut current, &mut terms)?,
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        finish(&mut current, &mut terms)?;
    }
    Ok(terms)
}

fn merge_literals(terms: Vec<Term>) -> Vec<Term> {
    let mut merged: Vec<Term> = Vec::with_capacity(terms.len());
    for term in terms {
        match (merged.last_mut(), term) {
            (Some(Term::Literal(previous)), Term::Literal(next)) => previous.push_str(&next),
            (_, term) => merged.push(term),
        }
    }
    merged
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
