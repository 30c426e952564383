//! Text hygiene: the one sanitiser for everything a server (or a hand-edited file) can put in
//! front of an operator — summaries, transport details, kept error codes, `probe` output, CLI
//! tables.
//!
//! Three steps, always in this order:
//! 1. **decode** ([`decode`]): HTML entities (named and numeric, via `html-escape`), JSON
//!    escapes (`\uXXXX` with surrogate pairs, `\/`, `\"`, `\\`, `\n`, …) and
//!    percent-encoding, repeated (at most [`DECODE_ROUNDS`] times) until nothing changes, so a
//!    doubly encoded echo is decoded too;
//! 2. **clean** ([`clean`]): control and invisible formatting characters (bidi embeddings,
//!    overrides and isolates, zero-width characters, the BOM) dropped, whitespace folded to
//!    single spaces, ends trimmed;
//! 3. **match** ([`scrub`]): every run of the text that is a piece of a secret at least
//!    [`MIN_FRAGMENT`] characters long (the whole secret when it is shorter) is replaced by
//!    `…`. Matching ignores letter case and treats `+` as a space (form encoding), so a secret
//!    echoed in another case, percent- or form-encoded, JSON-escaped, as HTML entities, with
//!    an invisible character inside, or only its long prefix or suffix never survives.
//!    Secrets shorter than [`MIN_SECRET`] characters are not matched (scrubbing `"a"` would
//!    blank every `a`). A secret that ends in an escape's first character (`\`, `%`, `&`)
//!    is matched without it too: echoed as is, decoding may read that character with what
//!    follows as one escape (`\"`).
//!
//! Matching is a rolling hash over the text's windows with an exact comparison on a hit, so
//! its cost grows with the text, not with the secret's length; a [`Scrubber`] prepares the
//! secrets once for the several texts of one answer.
//!
//! Decoding first means a summary shows the decoded text (`&amp;` as `&`): summaries are for
//! people. Over-scrubbing (a harmless run that happens to share 8 characters with a secret)
//! is accepted; under-scrubbing is not.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use crate::secret::Secret;

/// Shortest piece of a secret that is scrubbed on its own (a prefix, a suffix, any run).
pub const MIN_FRAGMENT: usize = 8;

/// Secrets shorter than this (in characters) are not scrubbed.
pub const MIN_SECRET: usize = 4;

/// How many times [`decode`] runs its decoders at most.
pub const DECODE_ROUNDS: usize = 3;

/// The longest body excerpt a summary may carry, in bytes.
pub const EXCERPT_LIMIT: usize = 200;

/// What replaces a scrubbed run.
const MARK: char = '…';

/// Invisible formatting characters that can disguise text in a terminal or a log viewer:
/// bidi embeddings, overrides and isolates, zero-width characters, the BOM.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Text made safe for one line: control and invisible formatting characters dropped,
/// whitespace folded to single spaces, ends trimmed. Nothing is decoded.
pub fn clean(text: &str) -> String {
    if text.is_ascii() {
        return clean_ascii(text.as_bytes());
    }
    let mut out = String::with_capacity(text.len());
    let mut last_space = true;
    for c in text.chars() {
        if c.is_whitespace() {
            if !last_space {
                out.push(' ');
                last_space = true;
            }
        } else if c.is_control() || is_invisible(c) {
            // Dropped.
        } else {
            out.push(c);
            last_space = false;
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// [`clean`] for ASCII text, byte by byte (the common case, several times faster).
fn clean_ascii(text: &[u8]) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(text.len());
    let mut last_space = true;
    for &b in text {
        if b.is_ascii_whitespace() || b == 0x0B {
            if !last_space {
                out.push(b' ');
                last_space = true;
            }
        } else if b.is_ascii_control() {
            // Dropped.
        } else {
            out.push(b);
            last_space = false;
        }
    }
    while out.last() == Some(&b' ') {
        out.pop();
    }
    // Only ASCII bytes were kept.
    String::from_utf8(out).unwrap_or_default()
}

/// HTML entities, JSON escapes and percent-encoding decoded, repeatedly (see the module docs).
pub fn decode(text: &str) -> String {
    let mut current = text.to_owned();
    for _ in 0..DECODE_ROUNDS {
        if !current.contains(['&', '\\', '%']) {
            break;
        }
        let html = html_escape::decode_html_entities(&current).into_owned();
        let json = json_unescape(&html);
        let next = percent_encoding::percent_decode_str(&json)
            .decode_utf8_lossy()
            .into_owned();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// Decodes the JSON string escapes found anywhere in `text`; anything else is kept as is.
fn json_unescape(text: &str) -> String {
    if !text.contains('\\') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some(e @ ('"' | '\\' | '/')) => {
                chars.next();
                out.push(e);
            }
            Some('n' | 'r' | 't' | 'b' | 'f') => {
                chars.next();
                out.push(' ');
            }
            Some('u') => {
                let rest: String = chars.clone().skip(1).take(4).collect();
                match u16::from_str_radix(&rest, 16)
                    .ok()
                    .filter(|_| rest.len() == 4)
                {
                    Some(unit) => {
                        for _ in 0..5 {
                            chars.next();
                        }
                        out.push(utf16_char(unit, &mut chars));
                    }
                    None => out.push(c),
                }
            }
            Some(_) | None => out.push(c),
        }
    }
    out
}

/// One UTF-16 unit (already consumed) as a char, taking its low surrogate from `chars` when
/// it is a high surrogate followed by `\uDC00`–`\uDFFF`; a lone surrogate is U+FFFD.
fn utf16_char(unit: u16, chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> char {
    if (0xD800..0xDC00).contains(&unit) {
        let ahead: String = chars.clone().take(6).collect();
        if let Some(hex) = ahead.strip_prefix("\\u")
            && hex.len() == 4
            && let Ok(low) = u16::from_str_radix(hex, 16)
            && (0xDC00..0xE000).contains(&low)
        {
            for _ in 0..6 {
                chars.next();
            }
            let code = 0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
            return char::from_u32(code).unwrap_or('\u{FFFD}');
        }
    }
    char::from_u32(u32::from(unit)).unwrap_or('\u{FFFD}')
}

/// The comparison key of a character: lower case, `+` as a space.
fn key(c: char) -> u32 {
    let k = if c == '+' {
        ' '
    } else if c.is_ascii() {
        c.to_ascii_lowercase()
    } else {
        c.to_lowercase().next().unwrap_or(c)
    };
    u32::from(k)
}

/// [`key`] of an ASCII byte.
fn key_ascii(b: u8) -> u32 {
    if b == b'+' {
        u32::from(b' ')
    } else {
        u32::from(b.to_ascii_lowercase())
    }
}

/// The base of the rolling hash over keys (odd, so no bit is lost modulo 2⁶⁴).
const BASE: u64 = 0x0000_0100_0000_01B3;

/// A hasher for values that are already hashes: one multiply-xorshift round.
#[derive(Default)]
struct Premixed(u64);

impl Hasher for Premixed {
    fn finish(&self) -> u64 {
        let x = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^ (x >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(BASE);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The polynomial hash of a window of keys.
fn window_hash(w: &[u32]) -> u64 {
    w.iter().fold(0u64, |h, c| {
        h.wrapping_mul(BASE).wrapping_add(u64::from(*c))
    })
}

/// One form of one secret, ready to search for: its keys, the window size, and the start of
/// every window by hash.
struct Needle {
    keys: Vec<u32>,
    k: usize,
    /// `BASE^(k-1)`, to roll the first key out of a window hash.
    top: u64,
    windows: HashMap<u64, Vec<u32>, BuildHasherDefault<Premixed>>,
    /// A one-hash Bloom filter over the window hashes (a power of two of bits, about 16
    /// per window): most text windows are ruled out without touching the map.
    bloom: Vec<u64>,
}

/// The Bloom bit of a hash: its high bits after a mix, masked to the filter's size.
fn bloom_bit(h: u64, bits: usize) -> usize {
    let x = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 32) as usize & (bits - 1)
}

impl Needle {
    fn new(keys: Vec<u32>) -> Needle {
        let k = keys.len().min(MIN_FRAGMENT);
        let mut windows: HashMap<u64, Vec<u32>, BuildHasherDefault<Premixed>> = HashMap::default();
        for (i, w) in keys.windows(k).enumerate() {
            let at = u32::try_from(i).unwrap_or(u32::MAX);
            windows.entry(window_hash(w)).or_default().push(at);
        }
        let top = (1..k).fold(1u64, |t, _| t.wrapping_mul(BASE));
        let bits = (windows.len() * 16).next_power_of_two().max(1024);
        let mut bloom = vec![0u64; bits / 64];
        for h in windows.keys() {
            let b = bloom_bit(*h, bits);
            bloom[b / 64] |= 1 << (b % 64);
        }
        Needle {
            keys,
            k,
            top,
            windows,
            bloom,
        }
    }

    /// Marks in `covered` every window of `text` that is a window of this needle (rolling
    /// hash, then an exact comparison on a hit).
    fn mark(&self, text: &[u32], covered: &mut [bool]) {
        let k = self.k;
        if text.len() < k {
            return;
        }
        let mut h = window_hash(&text[..k]);
        for i in 0..=text.len() - k {
            if i > 0 {
                h = h
                    .wrapping_sub(u64::from(text[i - 1]).wrapping_mul(self.top))
                    .wrapping_mul(BASE)
                    .wrapping_add(u64::from(text[i + k - 1]));
            }
            let b = bloom_bit(h, self.bloom.len() * 64);
            if self.bloom[b / 64] & (1 << (b % 64)) == 0 {
                continue;
            }
            if let Some(starts) = self.windows.get(&h) {
                let w = &text[i..i + k];
                if starts.iter().any(|&s| {
                    let s = s as usize;
                    self.keys.get(s..s + k) == Some(w)
                }) {
                    covered[i..i + k].fill(true);
                }
            }
        }
    }
}

/// The request's secrets, prepared once, applied to many texts (see the module docs).
pub struct Scrubber {
    needles: Vec<Needle>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("needles", &self.needles.len())
            .finish_non_exhaustive()
    }
}

impl Scrubber {
    /// Prepares `secrets` (each matched as given and decoded).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Scrubber {
        let mut seen: Vec<Vec<u32>> = Vec::new();
        for secret in secrets {
            for form in [clean(secret), clean(&decode(secret))] {
                // A secret ending in an escape's first character (`\`, `%`, `&`) loses it
                // when the text goes on with the rest of an escape (`\"` at the end of a
                // JSON string): its shorter form is a needle too, or a re-encoding of the
                // summary (a JSON log line, `Debug`) would spell the whole secret again.
                let short = form.trim_end_matches(['\\', '%', '&']).to_owned();
                for form in [form, short] {
                    let keys: Vec<u32> = form.chars().map(key).collect();
                    if keys.len() >= MIN_SECRET && !seen.contains(&keys) {
                        seen.push(keys);
                    }
                }
            }
        }
        Scrubber {
            needles: seen.into_iter().map(Needle::new).collect(),
        }
    }

    /// Prepares the secrets of a request.
    pub fn of(secrets: &[&Secret]) -> Scrubber {
        Scrubber::new(secrets.iter().map(|s| s.expose()))
    }

    /// `text` decoded and cleaned, with every piece of a secret replaced by `…`.
    pub fn scrub(&self, text: &str) -> String {
        let text = clean(&decode(text));
        if self.needles.is_empty() {
            return text;
        }
        let keys: Vec<u32> = if text.is_ascii() {
            text.bytes().map(key_ascii).collect()
        } else {
            text.chars().map(key).collect()
        };
        match self.covered(&keys) {
            Some(covered) => replace(&text, &covered),
            None => text,
        }
    }

    /// Which positions of `keys` belong to a piece of a secret; `None` when none does.
    fn covered(&self, keys: &[u32]) -> Option<Vec<bool>> {
        let mut covered = vec![false; keys.len()];
        for needle in &self.needles {
            needle.mark(keys, &mut covered);
        }
        covered.contains(&true).then_some(covered)
    }
}

/// `text` with every covered run (by character) replaced by one `…`.
fn replace(text: &str, covered: &[bool]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_run = false;
    for (c, &hidden) in text.chars().zip(covered) {
        if hidden {
            if !in_run {
                out.push(MARK);
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// A [`Scrubber`] prepared on first use: a success, which quotes nothing, costs nothing.
pub struct LazyScrubber<'s> {
    secrets: &'s [&'s Secret],
    prepared: std::cell::OnceCell<Scrubber>,
}

impl fmt::Debug for LazyScrubber<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyScrubber")
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

impl<'s> LazyScrubber<'s> {
    /// Remembers `secrets`; nothing is prepared yet.
    pub fn new(secrets: &'s [&'s Secret]) -> Self {
        LazyScrubber {
            secrets,
            prepared: std::cell::OnceCell::new(),
        }
    }

    /// [`Scrubber::scrub`], preparing the secrets the first time.
    pub fn scrub(&self, text: &str) -> String {
        self.prepared
            .get_or_init(|| Scrubber::of(self.secrets))
            .scrub(text)
    }
}

/// `text` decoded and cleaned, with every piece of a secret replaced by `…` (see the module
/// docs for what counts as a piece). To scrub many texts, prepare a [`Scrubber`] once.
pub fn scrub(text: &str, secrets: &[&Secret]) -> String {
    Scrubber::of(secrets).scrub(text)
}

/// [`scrub`] over plain string secrets.
pub fn scrub_str<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    Scrubber::new(secrets).scrub(text)
}

/// `s` cut to at most `max` characters, the cut marked with `…` (for one line of a table).
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

/// A sanitised excerpt: lossy UTF-8, [`clean`]ed (and U+FFFD dropped), at most
/// [`EXCERPT_LIMIT`] bytes (cut at a character boundary, marked with `…`). Nothing is decoded
/// or scrubbed: scrub first, then cut, so no secret is left half-visible at the cut.
pub fn excerpt(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(&raw[..raw.len().min(EXCERPT_LIMIT * 8)]);
    let text = clean(&text.replace('\u{FFFD}', ""));
    if text.len() <= EXCERPT_LIMIT {
        return text;
    }
    let mut end = EXCERPT_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = text[..end].trim_end().to_owned();
    out.push(MARK);
    out
}

#[cfg(test)]
mod tests;
