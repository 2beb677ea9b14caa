//! A Rust port of OpenAI Whisper's `EnglishTextNormalizer` (whisper/normalizers/english.py,
//! openai-whisper 20250625), the normaliser ../shared/peers/wer_util.py applies before WER.
//!
//! Ported step by step, in the same order, with the same regex semantics (leftmost, non-overlapping
//! matches; `\b` = a change between word characters `[alphanumeric_]` and the rest):
//! lowercase; drop `<...>`/`[...]` and `(...)` spans; drop the fillers hmm/mm/mhm/mmm/uh/um; join
//! a space before an apostrophe; the contraction/title replacers (won't -> will not, mr -> mister,
//! 's -> is, ...); commas between digits; periods not before a digit; symbols and punctuation ->
//! space except `.%$¢€£`; the full `EnglishNumberNormalizer` word state machine (spelled numbers to
//! digits: "forty two" -> 42, "fourteen fifty five" -> 1455, "fifteenth" -> 15th, "first" -> 1st,
//! "twenty dollars" -> $20, "five percent" -> 5%, "point five", "double oh", "and a half"; a lone
//! 1 written back as "one"); British -> American spellings (openai's english.json, copied to
//! tests/goldens/english_spelling.json); the final prefix/suffix symbol rules; whitespace collapse.
//!
//! What it does NOT do (differences from the Python original):
//! - no Unicode NFKD: diacritics are stripped only from the Latin-1 / Latin Extended-A letters
//!   listed in [`strip_diacritic`] (plus Whisper's own extra table: æ, ø, ß, þ, ...); compatibility
//!   forms (ligatures, superscripts, full-width letters, ½) are left as they are;
//! - Unicode categories are approximated: every ASCII punctuation/symbol and every non-ASCII char
//!   that is neither alphanumeric nor whitespace becomes a space (Python: categories M*, S*, P*);
//! - `\d` is ASCII 0-9 only (Python: any Unicode decimal digit);
//! - the currency post-processing ("$2 and ¢7" -> "$2.07", "$0.07" -> "¢7") is not ported;
//! - integers are i128 (Python: unbounded); an overflowing spelled number is kept as digits text;
//! - the result is trimmed (Python may leave a leading/trailing space, which jiwer strips anyway).

use std::collections::HashMap;
use std::sync::OnceLock;

/// Normalises an English transcript for WER the way Whisper's `EnglishTextNormalizer` does
/// (see the module doc for the exact steps and the known differences).
pub fn normalize_english(text: &str) -> String {
    let s = text.to_lowercase();
    let s = remove_bracketed(&s);
    let s = remove_parenthesised(&s);
    let s = map_words(&s, |w| {
        if ["hmm", "mm", "mhm", "mmm", "uh", "um"].contains(&w) {
            Some(String::new())
        } else {
            None
        }
    });
    let s = join_space_before_apostrophe(&s);
    let s = REPLACERS.iter().fold(s, |s, r| {
        replace_literal(&s, r.pattern, r.replacement, r.left_boundary)
    });
    let s = remove_commas_between_digits(&s);
    let s = remove_periods_not_before_digits(&s);
    let s = remove_symbols_and_diacritics(&s, ".%$¢€£");
    let s = standardize_numbers(&s);
    let s = standardize_spellings(&s);
    let s = remove_symbol_prefix_not_before_digit(&s);
    let s = remove_percent_not_after_digit(&s);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------- regex-like building blocks

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `\b` at char index `i` of `chars` (between chars[i - 1] and chars[i]).
fn is_boundary(chars: &[char], i: usize) -> bool {
    let before = i > 0 && is_word_char(chars[i - 1]);
    let after = i < chars.len() && is_word_char(chars[i]);
    before != after
}

/// Replaces every maximal run of word characters for which `f` returns a replacement
/// (= a regex `\b(word)\b` whose alternatives are all word characters).
fn map_words(s: &str, f: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if !word.is_empty() {
            match f(word) {
                Some(r) => out.push_str(&r),
                None => out.push_str(word),
            }
            word.clear();
        }
    };
    for c in s.chars() {
        if is_word_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// `re.sub(r"[<\[][^>\]]*[>\]]", "", s)`.
fn remove_bracketed(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if matches!(chars[i], '<' | '[') {
            if let Some(j) = chars[i + 1..].iter().position(|&c| matches!(c, '>' | ']')) {
                i += j + 2;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// `re.sub(r"\(([^)]+?)\)", "", s)`.
fn remove_parenthesised(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '(' {
            if let Some(j) = chars[i + 1..].iter().position(|&c| c == ')') {
                if j > 0 {
                    i += j + 2;
                    continue;
                }
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// `re.sub(r"\s+'", "'", s)`.
fn join_space_before_apostrophe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending = String::new(); // a whitespace run not yet written
    for c in s.chars() {
        if c.is_whitespace() {
            pending.push(c);
        } else {
            if c != '\'' {
                out.push_str(&pending);
            }
            pending.clear();
            out.push(c);
        }
    }
    out.push_str(&pending);
    out
}

/// One entry of the replacer table: `[\b]pattern\b` -> replacement.
struct Replacer {
    pattern: &'static str,
    replacement: &'static str,
    /// The Python pattern starts with `\b` (all of them end with `\b`).
    left_boundary: bool,
}

const fn r(pattern: &'static str, replacement: &'static str) -> Replacer {
    Replacer {
        pattern,
        replacement,
        left_boundary: true,
    }
}

const fn suffix(pattern: &'static str, replacement: &'static str) -> Replacer {
    Replacer {
        pattern,
        replacement,
        left_boundary: false,
    }
}

/// EnglishTextNormalizer.replacers, in the same (dict insertion) order.
const REPLACERS: &[Replacer] = &[
    // common contractions
    r("won't", "will not"),
    r("can't", "can not"),
    r("let's", "let us"),
    r("ain't", "aint"),
    r("y'all", "you all"),
    r("wanna", "want to"),
    r("gotta", "got to"),
    r("gonna", "going to"),
    r("i'ma", "i am going to"),
    r("imma", "i am going to"),
    r("woulda", "would have"),
    r("coulda", "could have"),
    r("shoulda", "should have"),
    r("ma'am", "madam"),
    // contractions in titles/prefixes
    r("mr", "mister "),
    r("mrs", "missus "),
    r("st", "saint "),
    r("dr", "doctor "),
    r("prof", "professor "),
    r("capt", "captain "),
    r("gov", "governor "),
    r("ald", "alderman "),
    r("gen", "general "),
    r("sen", "senator "),
    r("rep", "representative "),
    r("pres", "president "),
    r("rev", "reverend "),
    r("hon", "honorable "),
    r("asst", "assistant "),
    r("assoc", "associate "),
    r("lt", "lieutenant "),
    r("col", "colonel "),
    r("jr", "junior "),
    r("sr", "senior "),
    r("esq", "esquire "),
    // perfect tenses
    suffix("'d been", " had been"),
    suffix("'s been", " has been"),
    suffix("'d gone", " had gone"),
    suffix("'s gone", " has gone"),
    suffix("'d done", " had done"),
    suffix("'s got", " has got"),
    // general contractions
    suffix("n't", " not"),
    suffix("'re", " are"),
    suffix("'s", " is"),
    suffix("'d", " would"),
    suffix("'ll", " will"),
    suffix("'t", " not"),
    suffix("'ve", " have"),
    suffix("'m", " am"),
];

/// `re.sub(r"[\b]pattern\b", replacement, s)` for a literal pattern.
fn replace_literal(s: &str, pattern: &str, replacement: &str, left_boundary: bool) -> String {
    let chars: Vec<char> = s.chars().collect();
    let pat: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i..].starts_with(&pat)
            && (!left_boundary || is_boundary(&chars, i))
            && is_boundary(&chars, i + pat.len())
        {
            out.push_str(replacement);
            i += pat.len();
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// `re.sub(r"(\d),(\d)", r"\1\2", s)`.
fn remove_commas_between_digits(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if i + 2 < chars.len()
            && chars[i].is_ascii_digit()
            && chars[i + 1] == ','
            && chars[i + 2].is_ascii_digit()
        {
            out.push(chars[i]);
            out.push(chars[i + 2]);
            i += 3;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// `re.sub(r"\.([^0-9]|$)", r" \1", s)`.
fn remove_periods_not_before_digits(s: &str) -> String {
    replace_symbol_not_before_digit(s, |c| c == '.')
}

/// `re.sub(r"[.$¢€£]([^0-9])", r" \1", s)` (unlike the period rule, not at the very end).
fn remove_symbol_prefix_not_before_digit(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if matches!(chars[i], '.' | '$' | '¢' | '€' | '£')
            && i + 1 < chars.len()
            && !chars[i + 1].is_ascii_digit()
        {
            out.push(' ');
            out.push(chars[i + 1]);
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// `re.sub(r"<sym>([^0-9]|$)", r" \1", s)` for the symbols `is_sym` accepts.
fn replace_symbol_not_before_digit(s: &str, is_sym: impl Fn(char) -> bool) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if is_sym(chars[i]) && chars.get(i + 1).is_none_or(|c| !c.is_ascii_digit()) {
            out.push(' ');
            if let Some(&next) = chars.get(i + 1) {
                out.push(next);
            }
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// `re.sub(r"([^0-9])%", r"\1 ", s)`.
fn remove_percent_not_after_digit(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() && chars.get(i + 1) == Some(&'%') {
            out.push(chars[i]);
            out.push(' ');
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// The base letter(s) of a precomposed Latin letter, or `None` for any other char.
/// Covers Latin-1 and the common Latin Extended-A letters, plus basic.py's ADDITIONAL_DIACRITICS.
fn strip_diacritic(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'Ā' | 'Ă' | 'Ą' => "A",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'Ç' | 'Ć' | 'Ĉ' | 'Ċ' | 'Č' => "C",
        'ď' => "d",
        'Ď' => "D",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'È' | 'É' | 'Ê' | 'Ë' | 'Ē' | 'Ĕ' | 'Ė' | 'Ę' | 'Ě' => "E",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'ĥ' => "h",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' => "i",
        'Ì' | 'Í' | 'Î' | 'Ï' | 'Ĩ' | 'Ī' | 'Ĭ' | 'Į' | 'İ' => "I",
        'ĵ' => "j",
        'ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'Ñ' | 'Ń' | 'Ņ' | 'Ň' => "N",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ō' | 'ŏ' | 'ő' => "o",
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ō' | 'Ŏ' | 'Ő' => "O",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' => "s",
        'Ś' | 'Ŝ' | 'Ş' | 'Š' => "S",
        'ţ' | 'ť' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'Ù' | 'Ú' | 'Û' | 'Ü' | 'Ũ' | 'Ū' | 'Ŭ' | 'Ů' | 'Ű' | 'Ų' => "U",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'Ý' | 'Ÿ' | 'Ŷ' => "Y",
        'ź' | 'ż' | 'ž' => "z",
        'Ź' | 'Ż' | 'Ž' => "Z",
        // basic.py ADDITIONAL_DIACRITICS (not separated by NFKD)
        'œ' => "oe",
        'Œ' => "OE",
        'ø' => "o",
        'Ø' => "O",
        'æ' => "ae",
        'Æ' => "AE",
        'ß' => "ss",
        'ẞ' => "SS",
        'đ' | 'ð' => "d",
        'Đ' | 'Ð' => "D",
        'þ' | 'Þ' => "th",
        'ł' => "l",
        'Ł' => "L",
        _ => return None,
    })
}

/// basic.py remove_symbols_and_diacritics(s, keep) without NFKD (see the module doc).
fn remove_symbols_and_diacritics(s: &str, keep: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if keep.contains(c) {
            out.push(c);
        } else if let Some(base) = strip_diacritic(c) {
            out.push_str(base);
        } else if ('\u{300}'..='\u{36f}').contains(&c) {
            // combining diacritical marks (category Mn): dropped
        } else if c.is_ascii_punctuation()
            || (!c.is_ascii() && !c.is_alphanumeric() && !c.is_whitespace())
        {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// EnglishSpellingNormalizer: British -> American spellings, word by word.
fn standardize_spellings(s: &str) -> String {
    static MAPPING: OnceLock<HashMap<String, String>> = OnceLock::new();
    let mapping = MAPPING.get_or_init(|| {
        serde_json::from_str(include_str!("../goldens/english_spelling.json"))
            .expect("tests/goldens/english_spelling.json is a JSON object of strings")
    });
    s.split_whitespace()
        .map(|w| mapping.get(w).map_or(w, String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------- EnglishNumberNormalizer

/// EnglishNumberNormalizer.__call__: preprocess, the word state machine, postprocess.
fn standardize_numbers(s: &str) -> String {
    let s = number_preprocess(s);
    let words: Vec<&str> = s.split_whitespace().collect();
    let s = NumberWords::new().process(&words).join(" ");
    // postprocess: write "one(s)" instead of "1(s)" (the currency rules are not ported)
    map_words(&s, |w| match w {
        "1" => Some("one".to_string()),
        "1s" => Some("ones".to_string()),
        _ => None,
    })
}

/// Finds `\band\s+a\s+half\b` at char index i; returns the end index of the match.
fn and_a_half_at(chars: &[char], i: usize) -> Option<usize> {
    if !is_boundary(chars, i) {
        return None;
    }
    let mut j = i;
    for (k, word) in ["and", "a", "half"].iter().enumerate() {
        if k > 0 {
            let start = j;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if j == start {
                return None;
            }
        }
        let w: Vec<char> = word.chars().collect();
        if !chars[j..].starts_with(&w) {
            return None;
        }
        j += w.len();
    }
    is_boundary(chars, j).then_some(j)
}

/// EnglishNumberNormalizer.preprocess.
fn number_preprocess(s: &str) -> String {
    // replace "<number> and a half" with "<number> point five"
    let chars: Vec<char> = s.chars().collect();
    let mut segments: Vec<String> = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < chars.len() {
        if let Some(end) = and_a_half_at(&chars, i) {
            segments.push(chars[start..i].iter().collect());
            start = end;
            i = end;
        } else {
            i += 1;
        }
    }
    segments.push(chars[start..].iter().collect());
    let last = segments.len() - 1;
    let mut results: Vec<&str> = Vec::new();
    for (k, segment) in segments.iter().enumerate() {
        if segment.trim().is_empty() {
            continue;
        }
        results.push(segment);
        if k != last {
            let last_word = segment.split_whitespace().last().unwrap_or("");
            let numeric = is_decimal(last_word) || multiplier(last_word).is_some();
            results.push(if numeric { "point five" } else { "and a half" });
        }
    }
    let s = results.join(" ");

    // put a space at number/letter boundaries
    let mut spaced = String::with_capacity(s.len() + 8);
    let mut prev: Option<char> = None;
    for c in s.chars() {
        if let Some(p) = prev {
            if (p.is_ascii_lowercase() && c.is_ascii_digit())
                || (p.is_ascii_digit() && c.is_ascii_lowercase())
            {
                spaced.push(' ');
            }
        }
        spaced.push(c);
        prev = Some(c);
    }

    // but remove spaces which could be a suffix: ([0-9])\s+(st|nd|rd|th|s)\b -> \1\2
    let chars: Vec<char> = spaced.chars().collect();
    let mut out = String::with_capacity(spaced.len());
    let mut i = 0;
    while i < chars.len() {
        out.push(chars[i]);
        if chars[i].is_ascii_digit() {
            let mut j = i + 1;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if j > i + 1 {
                let found = ["st", "nd", "rd", "th", "s"].iter().find(|suf| {
                    let w: Vec<char> = suf.chars().collect();
                    chars[j..].starts_with(&w) && is_boundary(&chars, j + w.len())
                });
                if let Some(suf) = found {
                    out.push_str(suf);
                    i = j + suf.len();
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

const ZEROS: &[&str] = &["o", "oh", "zero"];
#[rustfmt::skip]
const ONES: &[&str] = &[
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
];
const TENS: &[(&str, i128)] = &[
    ("twenty", 20),
    ("thirty", 30),
    ("forty", 40),
    ("fifty", 50),
    ("sixty", 60),
    ("seventy", 70),
    ("eighty", 80),
    ("ninety", 90),
];
const MULTIPLIERS: &[(&str, i128)] = &[
    ("hundred", 100),
    ("thousand", 1_000),
    ("million", 1_000_000),
    ("billion", 1_000_000_000),
    ("trillion", 1_000_000_000_000),
    ("quadrillion", 1_000_000_000_000_000),
    ("quintillion", 1_000_000_000_000_000_000),
    ("sextillion", 1_000_000_000_000_000_000_000),
    ("septillion", 1_000_000_000_000_000_000_000_000),
    ("octillion", 1_000_000_000_000_000_000_000_000_000),
    ("nonillion", 1_000_000_000_000_000_000_000_000_000_000),
    ("decillion", 1_000_000_000_000_000_000_000_000_000_000_000),
];

const PRECEDING_PREFIXERS: &[(&str, char)] = &[
    ("minus", '-'),
    ("negative", '-'),
    ("plus", '+'),
    ("positive", '+'),
];
const FOLLOWING_PREFIXERS: &[(&str, char)] = &[
    ("pound", '£'),
    ("pounds", '£'),
    ("euro", '€'),
    ("euros", '€'),
    ("dollar", '$'),
    ("dollars", '$'),
    ("cent", '¢'),
    ("cents", '¢'),
];
const SPECIALS: &[&str] = &["and", "double", "triple", "point"];

fn lookup<T: Copy>(table: &[(&str, T)], w: &str) -> Option<T> {
    table.iter().find(|(k, _)| *k == w).map(|&(_, v)| v)
}

fn one(w: &str) -> Option<i128> {
    ONES.iter().position(|&k| k == w).map(|i| i as i128 + 1)
}

/// ones_suffixed = ones_plural ("ones", "sixes", ...) + ones_ordinal ("first", "fourth", ...;
/// note: Python builds "nineth", so "ninth" is NOT a number word there, nor here).
fn one_suffixed(w: &str) -> Option<(i128, &'static str)> {
    match w {
        "zeroth" => return Some((0, "th")),
        "first" => return Some((1, "st")),
        "second" => return Some((2, "nd")),
        "third" => return Some((3, "rd")),
        "fifth" => return Some((5, "th")),
        "twelfth" => return Some((12, "th")),
        "sixes" => return Some((6, "s")),
        _ => {}
    }
    for (i, name) in ONES.iter().enumerate() {
        let value = i as i128 + 1;
        if value != 6 && w.strip_suffix('s') == Some(name) {
            return Some((value, "s"));
        }
        let ordinal = if name.ends_with('t') { "h" } else { "th" };
        if value > 3 && value != 5 && value != 12 && w.strip_suffix(ordinal) == Some(name) {
            return Some((value, "th"));
        }
    }
    None
}

fn ten(w: &str) -> Option<i128> {
    lookup(TENS, w)
}

/// tens_plural ("twenties") and tens_ordinal ("twentieth").
fn ten_suffixed(w: &str) -> Option<(i128, &'static str)> {
    TENS.iter().find_map(|&(name, v)| {
        let stem = name.strip_suffix('y')?;
        match w.strip_prefix(stem)? {
            "ies" => Some((v, "s")),
            "ieth" => Some((v, "th")),
            _ => None,
        }
    })
}

fn multiplier(w: &str) -> Option<i128> {
    lookup(MULTIPLIERS, w)
}

/// multipliers_plural ("hundreds") and multipliers_ordinal ("hundredth").
fn multiplier_suffixed(w: &str) -> Option<(i128, &'static str)> {
    MULTIPLIERS
        .iter()
        .find_map(|&(name, v)| match w.strip_prefix(name)? {
            "s" => Some((v, "s")),
            "th" => Some((v, "th")),
            _ => None,
        })
}

/// `w in self.decimals` (ones, tens and zeros).
fn is_decimal(w: &str) -> bool {
    one(w).is_some() || ten(w).is_some() || ZEROS.contains(&w)
}

/// `w in self.words`.
fn is_number_word(w: &str) -> bool {
    ZEROS.contains(&w)
        || one(w).is_some()
        || one_suffixed(w).is_some()
        || ten(w).is_some()
        || ten_suffixed(w).is_some()
        || multiplier(w).is_some()
        || multiplier_suffixed(w).is_some()
        || lookup(PRECEDING_PREFIXERS, w).is_some()
        || lookup(FOLLOWING_PREFIXERS, w).is_some()
        || w == "per"
        || w == "percent"
        || SPECIALS.contains(&w)
}

/// `re.match(r"^\d+(\.\d+)?$", w)`.
fn is_arabic_number(w: &str) -> bool {
    let (int, frac) = match w.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (w, None),
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// A decimal fraction num / 10^k as Python's Fraction(str) parses "12", "1.5", "1.", ".5".
#[derive(Clone, Copy)]
struct Decimal {
    num: i128,
    den: i128,
}

impl Decimal {
    fn parse(s: &str) -> Option<Decimal> {
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || !digits(frac) || (int.is_empty() && frac.is_empty()) {
            return None;
        }
        let num: i128 = format!("{int}{frac}").parse().ok()?;
        let den = 10i128.checked_pow(frac.len() as u32)?;
        Some(Decimal { num, den })
    }

    /// self * m if that is an integer.
    fn times_integer(self, m: i128) -> Option<i128> {
        let p = self.num.checked_mul(m)?;
        (p % self.den == 0).then_some(p / self.den)
    }
}

/// The number being built: Python stores ints as int and everything else as str.
#[derive(Clone)]
enum Value {
    Int(i128),
    Str(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// The state of EnglishNumberNormalizer.process_words.
struct NumberWords {
    prefix: Option<char>,
    value: Option<Value>,
    out: Vec<String>,
}

impl NumberWords {
    fn new() -> Self {
        NumberWords {
            prefix: None,
            value: None,
            out: Vec::new(),
        }
    }

    /// Python's `yield output(result)`.
    fn output(&mut self, result: String) {
        let result = match self.prefix.take() {
            Some(p) => format!("{p}{result}"),
            None => result,
        };
        self.value = None;
        self.out.push(result);
    }

    /// `if value is not None: yield output(value)`.
    fn flush(&mut self) {
        if let Some(v) = self.value.take() {
            self.output(v.to_string());
        }
    }

    /// `str(value or "")` (Python's int 0 is falsy).
    fn value_or_empty(&self) -> String {
        match &self.value {
            None | Some(Value::Int(0)) => String::new(),
            Some(v) => v.to_string(),
        }
    }

    /// `value = str(value) + s`, or the int arithmetic result, as a Value.
    fn concat(&self, s: impl std::fmt::Display) -> Value {
        Value::Str(format!(
            "{}{s}",
            self.value
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default()
        ))
    }

    fn process(mut self, words: &[&str]) -> Vec<String> {
        let mut skip = false;
        for (k, &current) in words.iter().enumerate() {
            if skip {
                skip = false;
                continue;
            }
            let prev = if k > 0 { Some(words[k - 1]) } else { None };
            let next = words.get(k + 1).copied();
            let prev_is_one = prev.is_some_and(|p| one(p).is_some());
            let prev_is_ten = prev.is_some_and(|p| ten(p).is_some());
            let next_is_numeric = next.is_some_and(is_arabic_number);
            let next_is_word = next.is_some_and(is_number_word);

            let first = current.chars().next().unwrap_or(' ');
            let has_prefix = matches!(first, '-' | '+' | '£' | '€' | '$' | '¢');
            let without_prefix = if has_prefix {
                &current[first.len_utf8()..]
            } else {
                current
            };

            if is_arabic_number(without_prefix) {
                // arabic numbers (potentially with signs and fractions)
                let f = Decimal::parse(without_prefix);
                if let Some(v) = &self.value {
                    if let Value::Str(s) = v {
                        if s.ends_with('.') {
                            // concatenate decimals / ip address components
                            self.value = Some(Value::Str(format!("{s}{current}")));
                            continue;
                        }
                    }
                    self.flush();
                }
                if has_prefix {
                    self.prefix = Some(first);
                }
                self.value = Some(match f.and_then(|f| f.times_integer(1)) {
                    Some(int) => Value::Int(int),
                    None => Value::Str(without_prefix.to_string()),
                });
            } else if !is_number_word(current) {
                self.flush();
                self.output(current.to_string());
            } else if ZEROS.contains(&current) {
                self.value = Some(Value::Str(self.value_or_empty() + "0"));
            } else if let Some(ones) = one(current) {
                self.value = Some(match &self.value {
                    None => Value::Int(ones),
                    Some(Value::Str(s)) if prev_is_ten && ones < 10 && s.ends_with('0') => {
                        // replace the last zero with the digit
                        Value::Str(format!("{}{ones}", &s[..s.len() - 1]))
                    }
                    Some(Value::Str(_)) => self.concat(ones),
                    Some(Value::Int(_)) if prev_is_one => self.concat(ones),
                    Some(Value::Int(v)) if ones < 10 && v % 10 == 0 => Value::Int(v + ones),
                    Some(Value::Int(v)) if ones >= 10 && v % 100 == 0 => Value::Int(v + ones),
                    Some(Value::Int(_)) => self.concat(ones),
                });
            } else if let Some((ones, suffix)) = one_suffixed(current) {
                // ordinal or cardinal; yield the number right away
                let text = match &self.value {
                    None => format!("{ones}{suffix}"),
                    Some(Value::Str(s)) if prev_is_ten && ones < 10 && s.ends_with('0') => {
                        format!("{}{ones}{suffix}", &s[..s.len() - 1])
                    }
                    Some(v @ Value::Str(_)) => format!("{v}{ones}{suffix}"),
                    Some(v) if prev_is_one => format!("{v}{ones}{suffix}"),
                    Some(Value::Int(v)) if ones < 10 && v % 10 == 0 => {
                        format!("{}{suffix}", v + ones)
                    }
                    Some(Value::Int(v)) if ones >= 10 && v % 100 == 0 => {
                        format!("{}{suffix}", v + ones)
                    }
                    Some(v) => format!("{v}{ones}{suffix}"),
                };
                self.output(text);
            } else if let Some(tens) = ten(current) {
                self.value = Some(match &self.value {
                    None => Value::Int(tens),
                    Some(Value::Int(v)) if v % 100 == 0 => Value::Int(v + tens),
                    Some(_) => self.concat(tens),
                });
            } else if let Some((tens, suffix)) = ten_suffixed(current) {
                // ordinal or cardinal; yield the number right away
                let text = match &self.value {
                    None => format!("{tens}{suffix}"),
                    Some(Value::Int(v)) if v % 100 == 0 => format!("{}{suffix}", v + tens),
                    Some(v) => format!("{v}{tens}{suffix}"),
                };
                self.output(text);
            } else if let Some(m) = multiplier(current) {
                match self.value.clone() {
                    None => self.value = Some(Value::Int(m)),
                    Some(v @ (Value::Str(_) | Value::Int(0))) => {
                        match Decimal::parse(&v.to_string()).and_then(|f| f.times_integer(m)) {
                            Some(p) => self.value = Some(Value::Int(p)),
                            None => {
                                self.flush();
                                self.value = Some(Value::Int(m));
                            }
                        }
                    }
                    Some(Value::Int(v)) => {
                        let scaled = (v % 1000)
                            .checked_mul(m)
                            .and_then(|r| (v / 1000 * 1000).checked_add(r));
                        self.value = Some(match scaled {
                            Some(s) => Value::Int(s),
                            None => self.concat(m), // beyond i128: keep the digits as text
                        });
                    }
                }
            } else if let Some((m, suffix)) = multiplier_suffixed(current) {
                match self.value.clone() {
                    None => self.output(format!("{m}{suffix}")),
                    Some(Value::Str(s)) => {
                        match Decimal::parse(&s).and_then(|f| f.times_integer(m)) {
                            Some(p) => self.output(format!("{p}{suffix}")),
                            None => {
                                self.flush();
                                self.output(format!("{m}{suffix}"));
                            }
                        }
                    }
                    Some(Value::Int(v)) => {
                        let scaled = (v % 1000)
                            .checked_mul(m)
                            .and_then(|r| (v / 1000 * 1000).checked_add(r));
                        match scaled {
                            Some(s) => self.output(format!("{s}{suffix}")),
                            None => self.output(format!("{v}{m}{suffix}")),
                        }
                    }
                }
                self.value = None;
            } else if let Some(sign) = lookup(PRECEDING_PREFIXERS, current) {
                // apply prefix (positive, minus, etc.) if it precedes a number
                self.flush();
                if next_is_word || next_is_numeric {
                    self.prefix = Some(sign);
                } else {
                    self.output(current.to_string());
                }
            } else if let Some(currency) = lookup(FOLLOWING_PREFIXERS, current) {
                // apply prefix (dollars, cents, etc.) only after a number
                if self.value.is_some() {
                    self.prefix = Some(currency);
                    self.flush();
                } else {
                    self.output(current.to_string());
                }
            } else if current == "per" || current == "percent" {
                // apply suffix symbols (percent -> '%')
                match self.value.take() {
                    Some(v) if current == "percent" => self.output(format!("{v}%")),
                    Some(v) if next == Some("cent") => {
                        self.output(format!("{v}%"));
                        skip = true;
                    }
                    Some(v) => {
                        self.output(v.to_string());
                        self.output(current.to_string());
                    }
                    None => self.output(current.to_string()),
                }
            } else {
                // specials: and, double, triple, point
                if !next_is_word && !next_is_numeric {
                    // apply special handling only if the next word can be numeric
                    self.flush();
                    self.output(current.to_string());
                } else if current == "and" {
                    // ignore "and" after hundreds, thousands, etc.
                    if prev.is_none_or(|p| multiplier(p).is_none()) {
                        self.flush();
                        self.output(current.to_string());
                    }
                } else if current == "double" || current == "triple" {
                    let next_word = next.unwrap_or("");
                    if one(next_word).is_some() || ZEROS.contains(&next_word) {
                        let repeats = if current == "double" { 2 } else { 3 };
                        let digit = one(next_word).unwrap_or(0).to_string();
                        self.value =
                            Some(Value::Str(self.value_or_empty() + &digit.repeat(repeats)));
                        skip = true;
                    } else {
                        self.flush();
                        self.output(current.to_string());
                    }
                } else if next.is_some_and(is_decimal) || next_is_numeric {
                    // "point"
                    self.value = Some(Value::Str(self.value_or_empty() + "."));
                }
            }
        }
        self.flush();
        self.out
    }
}
