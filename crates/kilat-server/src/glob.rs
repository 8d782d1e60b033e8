//! A small glob matcher shared by the API's channel filter and the origin allowlist.

/// Glob matching with `*` and `?`, iterative with one backtrack point (linear in practice and
/// never exponential, whatever pattern a caller sends).
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_and_question_marks() {
        assert!(glob_match(b"chat:*", b"chat:lobby"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
        assert!(glob_match(b"*:*:x", b"a:b:c:x"));
        assert!(!glob_match(b"chat:*", b"news:1"));
        let hostile = vec![b'*'; 200];
        assert!(glob_match(&hostile, &[b'a'; 200]));
    }
}
