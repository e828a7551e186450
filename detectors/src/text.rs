//! Text normalisation before featurisation: the exact mirror of `normalize` in
//! `notebooks/train_classifier.ipynb`, so the model sees in Rust what it was trained on.
//!
//! Unicode NFKC (full-width letters, ligatures and styled letters fold to plain ones), curly
//! quotes and dashes to ASCII, invisible format characters (zero-width, bidi controls, soft
//! hyphen, BOM) and control characters dropped, lowercase, runs of whitespace collapsed to one
//! space, trimmed, and cut to `max_chars` characters.

use unicode_normalization::UnicodeNormalization;

/// Normalises `text` into `out` (cleared first), keeping at most `max_chars` source characters.
pub fn normalize_into(text: &str, max_chars: usize, out: &mut String) {
    // NFKC leaves ASCII unchanged: skip its decomposition machinery for ASCII text.
    if text.is_ascii() {
        normalize_chars(text.chars(), max_chars, out);
    } else {
        normalize_chars(text.nfkc(), max_chars, out);
    }
}

fn normalize_chars(chars: impl Iterator<Item = char>, max_chars: usize, out: &mut String) {
    out.clear();
    let mut kept = 0;
    // True at the start and after a space, so leading and repeated whitespace is dropped.
    let mut after_space = true;
    for ch in chars {
        if kept >= max_chars {
            break;
        }
        let ch = ascii_punctuation(ch);
        if ch.is_whitespace() {
            if !after_space {
                out.push(' ');
                kept += 1;
                after_space = true;
            }
            continue;
        }
        if is_invisible(ch) || ch.is_control() {
            continue;
        }
        out.extend(ch.to_lowercase());
        kept += 1;
        after_space = false;
    }
    if out.ends_with(' ') {
        out.pop();
    }
}

fn ascii_punctuation(ch: char) -> char {
    match ch {
        '\u{2018}' | '\u{2019}' => '\'',
        '\u{201C}' | '\u{201D}' => '"',
        '\u{2013}' | '\u{2014}' => '-',
        other => other,
    }
}

/// Characters that render as nothing and are used to split words past filters.
pub(crate) fn is_invisible(ch: char) -> bool {
    matches!(ch,
        '\u{00AD}' | '\u{180E}' | '\u{FEFF}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalize(text: &str, max_chars: usize) -> String {
        let mut out = String::new();
        normalize_into(text, max_chars, &mut out);
        out
    }

    #[test]
    fn folds_case_width_quotes_and_whitespace() {
        assert_eq!(
            normalize("  Ｈｅｌｌｏ\t\u{201C}World\u{201D}\n\n ok ", 100),
            "hello \"world\" ok"
        );
    }

    #[test]
    fn drops_invisible_and_control_characters() {
        assert_eq!(
            normalize("k\u{200B}i\u{200D}l\u{2066}l\u{0007}", 100),
            "kill"
        );
        assert_eq!(normalize("\u{FEFF}b\u{00AD}o\u{202E}mb", 100), "bomb");
    }

    #[test]
    fn keeps_at_most_max_chars() {
        assert_eq!(normalize("abcdef", 3), "abc");
        assert_eq!(normalize("ab   cd", 3), "ab");
        assert_eq!(normalize("", 3), "");
    }
}
