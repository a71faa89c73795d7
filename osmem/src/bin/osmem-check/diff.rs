//! A line diff (longest common subsequence) for showing mismatches.

/// The differing lines of `expected` and `got`, `-` for lines only in the
/// expected text and `+` for lines only in ours, with up to `context`
/// equal lines around each change; empty when the texts are equal.
pub fn diff(expected: &[String], got: &[String], context: usize) -> Vec<String> {
    let (n, m) = (expected.len(), got.len());
    // lcs[i][j]: length of the common subsequence of expected[i..], got[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == got[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && expected[i] == got[j] {
            ops.push((' ', &expected[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] > lcs[i + 1][j]) {
            ops.push(('+', &got[j]));
            j += 1;
        } else {
            ops.push(('-', &expected[i]));
            i += 1;
        }
    }
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let near = |k: usize| changed.iter().any(|&c| c.abs_diff(k) <= context);
    let mut out = Vec::new();
    let mut skipped = false;
    for (k, (tag, text)) in ops.iter().enumerate() {
        if near(k) {
            if skipped {
                out.push("...".to_string());
                skipped = false;
            }
            out.push(format!("{tag} {text}"));
        } else {
            skipped = true;
        }
    }
    if changed.is_empty() {
        Vec::new()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn equal_texts_have_no_diff() {
        let a = lines("a\nb\nc");
        assert!(diff(&a, &a, 2).is_empty());
    }

    #[test]
    fn changes_are_marked_with_context() {
        let a = lines("1\n2\n3\n4\n5\n6\n7");
        let b = lines("1\n2\n3\nX\n5\n6\n7\n8");
        assert_eq!(
            diff(&a, &b, 1),
            ["...", "  3", "- 4", "+ X", "  5", "...", "  7", "+ 8"]
        );
    }
}
