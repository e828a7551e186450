//! The *skeleton* of a text: what the heuristics match against, with the usual filter evasions
//! undone.
//!
//! On top of [`text`](crate::text)'s normalisation (NFKC, invisible and control characters
//! dropped, lowercase), the skeleton
//!
//! - folds Cyrillic and Greek look-alike letters to the Latin ones they imitate (`ｐ`, `р`, `ρ` → `p`);
//! - reads leetspeak inside words that have letters (`b0mb`, `k1ll`, `h@ck`, `$teal` → `bomb`,
//!   `kill`, `hack`, `steal`), leaving numbers such as `2024` alone;
//! - turns every other non-alphanumeric character into a word break, and keeps words apart by
//!   exactly one space, with one space before the first and after the last word;
//! - joins runs of three or more single letters (`b o m b`, `b.o.m.b`, `b-o-m-b`) into one word,
//!   so `p i p e b o m b` becomes `pipebomb` (the lexicon also matches multi-word terms written
//!   without their spaces, see [`heuristics`](crate::heuristics)).
//!
//! The result is only ever matched against; it is never stored or shown.

use unicode_normalization::UnicodeNormalization;

use crate::text::is_invisible;

/// Writes the skeleton of the first `max_chars` characters of `text` into `out` (cleared
/// first). The skeleton starts and ends with a space, and words are separated by one space, so
/// a term matches on word boundaries when it is searched for as ` term `.
pub fn skeleton_into(text: &str, max_chars: usize, out: &mut String) {
    out.clear();
    out.push(' ');
    let mut writer = Writer {
        out,
        word: Word::default(),
        singles: String::new(),
    };
    let text = text
        .char_indices()
        .nth(max_chars)
        .map_or(text, |(i, _)| &text[..i]);
    if text.is_ascii() {
        text.chars().for_each(|ch| writer.visit(ch));
    } else {
        text.nfkc().for_each(|ch| writer.visit(ch));
    }
    writer.end_word();
    writer.flush_singles();
}

/// Builds a skeleton one source character at a time.
struct Writer<'a> {
    out: &'a mut String,
    word: Word,
    /// Single-letter words read in a row, joined.
    singles: String,
}

impl Writer<'_> {
    fn visit(&mut self, ch: char) {
        if ch.is_ascii() {
            let ch = ch.to_ascii_lowercase();
            if ch.is_ascii_alphanumeric() || leet_letter(ch).is_some() {
                self.word.push(ch);
            } else if !ch.is_ascii_control() || ch.is_ascii_whitespace() {
                self.end_word();
            }
            return;
        }
        if is_invisible(ch) || (ch.is_control() && !ch.is_whitespace()) {
            return;
        }
        for ch in ch.to_lowercase() {
            let ch = fold_homoglyph(ch);
            if ch.is_alphanumeric() {
                self.word.push(ch);
            } else {
                self.end_word();
            }
        }
    }

    fn end_word(&mut self) {
        // A symbol ending a word is punctuation (`run!`), not a letter.
        let buffer = std::mem::take(&mut self.word.chars);
        let word = buffer.trim_end_matches(|c: char| !c.is_alphanumeric());
        let mut chars = word.chars();
        match (chars.next(), chars.next()) {
            (None, _) => {}
            (Some(letter), None) if letter.is_alphabetic() => self.singles.push(letter),
            _ => {
                self.flush_singles();
                // Leet symbols among digits or alone (`$5`) are not letters.
                for c in word.chars() {
                    match leet_letter(c) {
                        Some(letter) if self.word.has_letter => self.out.push(letter),
                        _ if c.is_alphanumeric() => self.out.push(c),
                        _ => {}
                    }
                }
                self.out.push(' ');
            }
        }
        self.word.chars = buffer;
        self.word.chars.clear();
        self.word.has_letter = false;
    }

    /// A run of joined single letters becomes one word if it has at least three; fewer stay
    /// separate words (`a b` stays `a b`).
    fn flush_singles(&mut self) {
        if self.singles.chars().nth(2).is_some() {
            self.out.push_str(&self.singles);
            self.out.push(' ');
        } else {
            for ch in self.singles.chars() {
                self.out.push(ch);
                self.out.push(' ');
            }
        }
        self.singles.clear();
    }
}

/// The word being read: leet characters are resolved when it ends, because whether `1` is a
/// digit or an `i` depends on whether the word has letters.
#[derive(Default)]
struct Word {
    chars: String,
    has_letter: bool,
}

impl Word {
    fn push(&mut self, ch: char) {
        self.has_letter |= ch.is_alphabetic();
        self.chars.push(ch);
    }
}

/// The letter a leetspeak character stands for inside a word.
fn leet_letter(ch: char) -> Option<char> {
    Some(match ch {
        '0' => 'o',
        '1' | '!' | '|' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' | '+' => 't',
        '8' => 'b',
        '9' => 'g',
        _ => return None,
    })
}

/// The Latin letter a Cyrillic or Greek look-alike imitates (lowercase).
fn fold_homoglyph(ch: char) -> char {
    match ch {
        'а' | 'α' => 'a',
        'в' | 'β' => 'b',
        'с' | 'ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'ё' | 'ε' => 'e',
        'ɡ' => 'g',
        'һ' | 'η' => 'h',
        'і' | 'ї' | 'ι' | 'ı' => 'i',
        'ј' => 'j',
        'к' | 'κ' => 'k',
        'ӏ' => 'l',
        'м' => 'm',
        'п' => 'n',
        'о' | 'ο' | 'σ' => 'o',
        'р' | 'ρ' => 'p',
        'ԛ' => 'q',
        'г' => 'r',
        'ѕ' => 's',
        'т' | 'τ' => 't',
        'υ' => 'u',
        'ѵ' | 'ν' => 'v',
        'ԝ' | 'ω' => 'w',
        'х' | 'χ' => 'x',
        'у' | 'γ' => 'y',
        'ᴢ' => 'z',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skeleton(text: &str) -> String {
        let mut out = String::new();
        skeleton_into(text, 10_000, &mut out);
        out
    }

    #[test]
    fn words_are_lowercase_and_one_space_apart() {
        assert_eq!(
            skeleton("Ignore ALL   previous\ninstructions!"),
            " ignore all previous instructions "
        );
        assert_eq!(skeleton(""), " ");
        assert_eq!(skeleton("don't-stop"), " don t stop ");
    }

    #[test]
    fn spacing_evasions_join() {
        assert_eq!(skeleton("a p i p e b o m b now"), " apipebomb now ");
        assert_eq!(skeleton("b.o.m.b"), " bomb ");
        assert_eq!(skeleton("k-i-l-l y-o-u-r-s-e-l-f"), " killyourself ");
        // Two single letters stay words.
        assert_eq!(skeleton("a b test"), " a b test ");
    }

    #[test]
    fn leetspeak_inside_words_only() {
        assert_eq!(skeleton("h0w t0 m4k3 a b0mb"), " how to make a bomb ");
        assert_eq!(skeleton("$teal cr3d1t c@rds"), " steal credit cards ");
        assert_eq!(skeleton("in 2024 I had 3 cats"), " in 2024 i had 3 cats ");
        assert_eq!(skeleton("costs $5 !"), " costs 5 ");
    }

    #[test]
    fn homoglyphs_and_invisible_characters_fold() {
        // Cyrillic а, о, е and Greek ο.
        assert_eq!(skeleton("mаke а bοmb"), " make a bomb ");
        assert_eq!(skeleton("b\u{200B}o\u{200D}m\u{2066}b"), " bomb ");
        assert_eq!(skeleton("ＢＯＭＢ"), " bomb ");
        assert_eq!(skeleton("ignоrе"), " ignore ");
    }

    #[test]
    fn stops_at_max_chars() {
        let mut out = String::new();
        skeleton_into("abcdef ghi", 3, &mut out);
        assert_eq!(out, " abc ");
    }
}
