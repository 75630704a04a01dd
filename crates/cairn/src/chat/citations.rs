//! Citations: the `[n]` markers in an answer (also `[1, 3]` and `[1][2]`), each mapped to the
//! source it names, or flagged when it names none.

use std::collections::BTreeSet;

/// The source numbers cited in `answer`, in first-cited order without repeats.
pub fn cited(answer: &str) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let bytes = answer.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'[' {
            i += 1;
            continue;
        }
        let Some(close) = answer[i + 1..].find(']') else {
            break;
        };
        let inner = &answer[i + 1..i + 1 + close];
        // Only digits, commas and spaces (at most 40 characters) form a citation: `[a]`,
        // `[1.2]` or a long bracketed passage do not.
        let looks_like = inner.len() <= 40
            && !inner.trim().is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_digit() || c == ',' || c == ' ');
        if looks_like {
            for part in inner.split(',') {
                if let Ok(n) = part.trim().parse::<usize>() {
                    if !out.contains(&n) {
                        out.push(n);
                    }
                }
            }
            i += close + 2;
        } else {
            i += 1;
        }
    }
    out
}

/// The cited numbers split into those that name one of `sources` sources (numbered from 1)
/// and those that name none.
pub fn check(answer: &str, sources: usize) -> (Vec<usize>, Vec<usize>) {
    let all = cited(answer);
    let valid: BTreeSet<usize> = (1..=sources).collect();
    all.into_iter().partition(|n| valid.contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_usual_forms() {
        assert_eq!(cited("A [1]. B [2][3]. C [1, 4]. D [2]."), [1, 2, 3, 4]);
        assert_eq!(cited("none here"), Vec::<usize>::new());
        assert_eq!(cited("[a] [1.5] [ ] [see above] x[7"), Vec::<usize>::new());
        assert_eq!(cited("unicode ünïcödé [12]"), [12]);
    }

    #[test]
    fn flags_what_names_no_source() {
        let (valid, invalid) = check("Restart it [1]. See also [9]. And [0].", 2);
        assert_eq!(valid, [1]);
        assert_eq!(invalid, [9, 0]);
    }
}
