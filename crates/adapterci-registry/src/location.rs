//! Validation of object keys that come from users (dataset locations, registry prefixes): relative,
//! slash-separated, with no segment that could escape a prefix or that object stores spell differently.

use object_store::path::Path;

/// S3's limit on key length, applied everywhere so that a key valid on local files stays valid on S3.
const MAX_KEY_BYTES: usize = 1024;

/// Parses `key` (such as `datasets/demo/train.jsonl`) into an object-store path; `Err` is the reason it is refused.
pub fn parse_key(key: &str) -> Result<Path, String> {
    if key.is_empty() {
        return Err("must not be empty".to_string());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("must be at most {MAX_KEY_BYTES} bytes long"));
    }
    if key.starts_with('/') {
        return Err("must be a relative key (no leading '/')".to_string());
    }
    if key.contains('\\') {
        return Err("must not contain backslashes (use '/' between segments)".to_string());
    }
    if let Some(control) = key.chars().find(|c| c.is_control()) {
        return Err(format!("must not contain control characters (found {control:?})"));
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err("must not contain empty segments ('//' or a trailing '/')".to_string()),
            ".." => return Err("must not contain '..' segments".to_string()),
            "." => return Err("must not contain '.' segments".to_string()),
            _ => {}
        }
    }
    // The checks above cover every rule object_store has today; this catches any it adds later.
    Path::parse(key).map_err(|err| err.to_string())
}

/// `key` below `prefix` (an empty prefix is the root).
pub(crate) fn join(prefix: &Path, key: &Path) -> Path {
    prefix.parts().chain(key.parts()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, expect: Result<&str, &str>) {
        match (parse_key(key), expect) {
            (Ok(path), Ok(expected)) => assert_eq!(path.as_ref(), expected, "{key:?}"),
            (Err(reason), Err(expected)) => assert!(reason.contains(expected), "{key:?}: {reason}"),
            (got, expected) => panic!("{key:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn ordinary_keys_are_accepted() {
        check("datasets/demo/train.jsonl", Ok("datasets/demo/train.jsonl"));
        check("a", Ok("a"));
        check("with space/and-üñíçødé.txt", Ok("with space/and-üñíçødé.txt"));
        check("dots.in..names/x", Ok("dots.in..names/x"));
    }

    #[test]
    fn escaping_or_ambiguous_keys_are_refused_with_the_reason() {
        check("", Err("must not be empty"));
        check("/etc/passwd", Err("no leading '/'"));
        check("../secrets", Err("'..' segments"));
        check("datasets/../../x", Err("'..' segments"));
        check("datasets/./x", Err("'.' segments"));
        check("datasets//x", Err("empty segments"));
        check("datasets/", Err("empty segments"));
        check("datasets\\x", Err("backslashes"));
        check("data\nsets", Err("control characters"));
        check("data\u{7f}", Err("control characters"));
        check(&"k".repeat(1025), Err("at most 1024 bytes"));
    }

    #[test]
    fn join_puts_the_key_below_the_prefix() {
        let key = parse_key("a/b").unwrap();
        assert_eq!(join(&Path::default(), &key).as_ref(), "a/b");
        assert_eq!(join(&parse_key("root/dir").unwrap(), &key).as_ref(), "root/dir/a/b");
    }
}
