//! `sigops_accel`: the hot path of `sigops verify`, compiled (optional).
//!
//! Two functions. [`read_pcs`]: a JSONL line in, and either the record's signed values, its
//! canonical bytes under one profile, its decoded signature and its `sent_at`, or `None`.
//! [`read_batch`]: the same for many records of a buffer at once (JSONL lines or inbox WAL
//! entries), so Python pays one call per few thousand records instead of one per record.
//! `None` means "not sure": the pure-Python route (`sigops.core`) then reads the record from
//! the start and decides. So this code is written to be conservative, not complete: it answers only
//! for the common, plain record (no escapes in strings, at most 64 levels, at most 64 keys per
//! object, integers within 2^53, finite numbers) and must give exactly what the Python route
//! gives whenever it answers (a property test in `tests/unit/test_accel.py` holds it to that).
//! One piece of cryptography, optional: [`read_batch`] can check each record's HMAC-SHA256
//! under one key Python passes for the call (RustCrypto `hmac` + `sha2`), so that Python skips
//! the MAC of a record whose signature this confirms; any other record, and every Ed25519
//! signature, is still checked in Python. With that key's window and the skew limit as well
//! (`short`, WAL only: the fleet audit's reader), [`read_batch`] decides the short route of
//! such a record whole and hands over runs of them, a few objects per record instead of a row.

use hmac::{Hmac, Mac};
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt::Write as _;

const MAX_SAFE_INTEGER: i64 = 1 << 53;
/// Longest pcs_id / merkle_root / shard_id the Python route takes on its fast path (pcs.py).
const MAX_STR: usize = 1024;
const MAX_DEPTH: usize = 64;
const MAX_KEYS: usize = 64;

/// Bytes that end the plain part of a JSON string: its closing quote, an escape, or a raw
/// control character (JSON forbids those).
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Bytes a signed string may hold as every profile writes it unescaped (printable ASCII),
/// per profile: Go's encoder also escapes `<`, `>` and `&`.
static PLAIN: [bool; 256] = plain_table(false);
static PLAIN_GO: [bool; 256] = plain_table(true);

const fn plain_table(go: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0x20;
    while c < 0x7f {
        t[c] = !(go && (c == b'<' as usize || c == b'>' as usize || c == b'&' as usize));
        c += 1;
    }
    t
}

/// The value of each base64 character (standard alphabet), or 0xff.
static SEXTET: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut k = 0;
    while k < 26 {
        t[b'A' as usize + k] = k as u8;
        t[b'a' as usize + k] = 26 + k as u8;
        k += 1;
    }
    k = 0;
    while k < 10 {
        t[b'0' as usize + k] = 52 + k as u8;
        k += 1;
    }
    t[b'+' as usize] = 62;
    t[b'/' as usize] = 63;
    t
};

/// The profiles this crate writes, by the code the Python side passes.
const PYTHON: u8 = 0;
const GO: u8 = 1;
const FIXED9: u8 = 2;

#[derive(Clone, Copy)]
enum Val<'a> {
    Str(&'a [u8]),
    Int(i64),
    /// A finite float, as written: read to a value only where one is needed ([`flt`]).
    Float(&'a [u8]),
    Null,
    Other,
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// A string without escapes and without raw control characters (JSON forbids those),
    /// valid UTF-8; the cursor is on its opening quote.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.i + 1;
        let rest = self.b.get(start..)?;
        let end = rest.iter().position(|&c| STRING_STOP[usize::from(c)])?;
        if rest[end] != b'"' {
            return None;
        }
        let s = &rest[..end];
        self.i = start + end + 1;
        if !s.is_ascii() {
            std::str::from_utf8(s).ok()?;
        }
        Some(s)
    }

    /// Past the ASCII digits at the cursor; how many there were.
    fn digits(&mut self) -> usize {
        let n = self.b[self.i..].iter().take_while(|c| c.is_ascii_digit()).count();
        self.i += n;
        n
    }

    /// A JSON number: an integer (no fraction, no exponent) within 2^53, or a finite float.
    fn number(&mut self) -> Option<Val<'a>> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            float = true;
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            float = true;
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        let text = &self.b[start..self.i];
        if float {
            // Finite for sure without reading it: no exponent and under 300 integer digits.
            // Else read it now (correctly rounded, as Python's float() is) to check.
            let plain = !text.iter().any(|&c| c == b'e' || c == b'E')
                && text.iter().take_while(|&&c| c != b'.').count() < 300;
            if !plain && !flt(text)?.is_finite() {
                return None;
            }
            return Some(Val::Float(text));
        }
        let (neg, digits) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, text),
        };
        if digits.len() > 16 {
            return None;
        }
        let v = digits.iter().fold(0i64, |v, &c| v * 10 + i64::from(c - b'0'));
        let v = if neg { -v } else { v };
        if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&v) {
            Some(Val::Int(v))
        } else {
            None
        }
    }

    fn literal(&mut self, word: &[u8], v: Val<'a>) -> Option<Val<'a>> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Some(v)
        } else {
            None
        }
    }

    fn value(&mut self, depth: usize) -> Option<Val<'a>> {
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(Val::Str),
            b'{' => self.object(depth + 1).map(|_| Val::Other),
            b'[' => self.array(depth + 1).map(|_| Val::Other),
            b't' => self.literal(b"true", Val::Other),
            b'f' => self.literal(b"false", Val::Other),
            b'n' => self.literal(b"null", Val::Null),
            _ => self.number(),
        }
    }

    /// An object's members, no key twice; the cursor is on its `{`.
    fn object(&mut self, depth: usize) -> Option<Vec<(&'a [u8], Val<'a>)>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        let mut members: Vec<(&'a [u8], Val<'a>)> = Vec::with_capacity(16);
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(members);
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            let k = self.string()?;
            if members.len() >= MAX_KEYS || members.iter().any(|(seen, _)| *seen == k) {
                return None;
            }
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            let v = self.value(depth)?;
            members.push((k, v));
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(members);
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.value(depth)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// The value of a JSON float literal (ASCII by construction), correctly rounded.
fn flt(text: &[u8]) -> Option<f64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Standard base64 with padding, canonical only (unused bits zero): then every strict decoder
/// gives these bytes.
fn b64decode(s: &[u8]) -> Option<Vec<u8>> {
    if s.is_empty() || s.len() % 4 != 0 {
        return None;
    }
    let pad = s.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return None;
    }
    let body = &s[..s.len() - pad];
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let sextet = |c: u8| -> Option<u32> {
        match SEXTET[usize::from(c)] {
            0xff => None,
            v => Some(u32::from(v)),
        }
    };
    let mut quads = body.chunks_exact(4);
    for q in &mut quads {
        let v = sextet(q[0])? << 18 | sextet(q[1])? << 12 | sextet(q[2])? << 6 | sextet(q[3])?;
        out.extend_from_slice(&v.to_be_bytes()[1..]);
    }
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in quads.remainder() {
        acc = (acc << 6) | sextet(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if acc != 0 {
        return None;
    }
    Some(out)
}

/// The shortest digits that read back as `x` (no trailing zeros), and where the decimal
/// point goes: `x = 0.d1d2... * 10^decpt`. As Python's `repr` and Go's `'g', -1` find them.
struct Digits {
    neg: bool,
    d: [u8; 24],
    n: usize,
    decpt: i32,
}

impl Digits {
    fn digits(&self) -> &[u8] {
        &self.d[..self.n]
    }
}

/// A fixed buffer to format into without allocating.
struct Buf {
    b: [u8; 40],
    n: usize,
}

impl std::fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.n + s.len();
        if end > self.b.len() {
            return Err(std::fmt::Error);
        }
        self.b[self.n..end].copy_from_slice(s.as_bytes());
        self.n = end;
        Ok(())
    }
}

fn shortest(x: f64) -> Option<Digits> {
    let mut s = Buf { b: [0; 40], n: 0 };
    // `{:e}` writes the shortest round-trip digits: d.ddde<exp> (at most 17 digits).
    let _ = write!(s, "{:e}", x.abs());
    let text = &s.b[..s.n];
    let mut g = Digits { neg: x.is_sign_negative(), d: [0; 24], n: 0, decpt: 1 };
    let mut i = 0;
    while i < text.len() && text[i] != b'e' {
        if text[i] != b'.' {
            g.d[g.n] = text[i];
            g.n += 1;
        }
        i += 1;
    }
    let (mut exp, mut neg) = (0i32, false);
    for &c in &text[(i + 1).min(text.len())..] {
        if c == b'-' {
            neg = true;
        } else {
            exp = exp * 10 + i32::from(c - b'0');
        }
    }
    g.decpt = if neg { -exp } else { exp } + 1;
    if may_tie(x, g.n) {
        return None;
    }
    Some(g)
}

/// Could two `n`-digit decimals be equally near `x`? Only if the exact value of `x` has
/// `n + 1` significant digits (ending in 5). Python's repr then takes the even one and Rust's
/// formatter may take the other, so such a value is left to Python. Rare: the exact value of a
/// double with fraction bits has many digits (`m * 5^k` with `k` its fraction bits).
fn may_tie(x: f64, n: usize) -> bool {
    let bits = x.abs().to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    let (mut m, mut e) = if biased == 0 { (frac, -1074) } else { (frac | 1 << 52, biased - 1075) };
    if m == 0 {
        return false;
    }
    let tz = m.trailing_zeros();
    m >>= tz;
    e += tz as i32;
    let mut v: u128 = if e >= 0 {
        if e > 70 {
            return true; // beyond 2^70 (about 1e21): not worth exactness here
        }
        u128::from(m) << e
    } else {
        if -e > 27 {
            return false; // m * 5^k >= 5^28 has 20 digits or more; n + 1 <= 18
        }
        u128::from(m) * 5u128.pow((-e) as u32)
    };
    while v % 10 == 0 {
        v /= 10;
    }
    let mut count = 1;
    let mut p: u128 = 10;
    while v >= p && count < 38 {
        count += 1;
        p *= 10;
    }
    count == n + 1
}

struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn zeros(out: &mut Vec<u8>, n: i32) {
    out.extend(std::iter::repeat_n(b'0', n.max(0) as usize));
}

/// Digits with the point placed, no exponent; `dot0` adds `.0` to an integral value.
fn write_plain(g: &Digits, out: &mut Vec<u8>, dot0: bool) {
    let d = g.digits();
    let n = d.len() as i32;
    if g.decpt <= 0 {
        out.extend_from_slice(b"0.");
        zeros(out, -g.decpt);
        out.extend_from_slice(d);
    } else if g.decpt >= n {
        out.extend_from_slice(d);
        zeros(out, g.decpt - n);
        if dot0 {
            out.extend_from_slice(b".0");
        }
    } else {
        out.extend_from_slice(&d[..g.decpt as usize]);
        out.push(b'.');
        out.extend_from_slice(&d[g.decpt as usize..]);
    }
}

/// `d.ddde±x`; Python pads the exponent to two digits, Go does not.
fn write_exponent(g: &Digits, out: &mut Vec<u8>, two_digits: bool) {
    let d = g.digits();
    out.push(d[0]);
    if d.len() > 1 {
        out.push(b'.');
        out.extend_from_slice(&d[1..]);
    }
    let exp = g.decpt - 1;
    out.push(b'e');
    out.push(if exp < 0 { b'-' } else { b'+' });
    if two_digits && exp.abs() < 10 {
        out.push(b'0');
    }
    let mut s = Buf { b: [0; 40], n: 0 };
    let _ = write!(s, "{}", exp.abs());
    out.extend_from_slice(&s.b[..s.n]);
}

/// Python `repr(x)`: exponent form below 1e-4 and from 1e16 up, else plain with `.0`.
fn write_python(x: f64, g: Option<Digits>, out: &mut Vec<u8>) -> Option<()> {
    if x == 0.0 {
        out.extend_from_slice(if x.is_sign_negative() { b"-0.0" } else { b"0.0" });
        return Some(());
    }
    let g = match g {
        Some(g) => g,
        None => shortest(x)?,
    };
    if g.neg {
        out.push(b'-');
    }
    if g.decpt <= -4 || g.decpt > 16 {
        write_exponent(&g, out, true);
    } else {
        write_plain(&g, out, true);
    }
    Some(())
}

/// Go `encoding/json` float64: exponent form below 1e-6 and from 1e21 up, no `.0`.
fn write_go(x: f64, out: &mut Vec<u8>) -> Option<()> {
    if x == 0.0 {
        out.extend_from_slice(if x.is_sign_negative() { b"-0" } else { b"0" });
        return Some(());
    }
    let g = shortest(x)?;
    if g.neg {
        out.push(b'-');
    }
    let a = x.abs();
    if !(1e-6..1e21).contains(&a) {
        write_exponent(&g, out, false);
    } else {
        write_plain(&g, out, false);
    }
    Some(())
}

/// The Python agent's rounding: half-up at 9 decimals on the digits of `repr(x)`, with those
/// digits when nothing was rounded. `None` when the kept digits exceed 2^53 (the division
/// below would no longer be exact).
fn half_up_9(x: f64) -> Option<(f64, Option<Digits>)> {
    if x == 0.0 {
        return Some((x, None));
    }
    let g = shortest(x)?;
    let n = g.n as i32;
    if n - g.decpt <= 9 {
        return Some((x, Some(g))); // at most nine decimals: nothing to round
    }
    let keep = g.decpt + 9; // digits kept; the first dropped one decides (keep < n)
    let mut q: u64 = 0;
    if keep >= 0 {
        let d = g.digits();
        for &c in &d[..keep as usize] {
            q = q * 10 + u64::from(c - b'0');
        }
        if d[keep as usize] >= b'5' {
            q += 1;
        }
    }
    if q > 1 << 53 {
        return None;
    }
    // q and 1e9 are exact doubles: one correctly rounded division, as float(Decimal) rounds.
    let v = q as f64 / 1e9;
    Some((if g.neg { -v } else { v }, None))
}

/// The Go backend's rounding: math.Round(x*1e9)/1e9 (halves away from zero, as f64::round).
fn round_go_9(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

fn write_float(x: f64, profile: u8, out: &mut Vec<u8>) -> Option<()> {
    match profile {
        PYTHON => {
            let (v, g) = half_up_9(x)?;
            write_python(v, g, out)?;
        }
        GO => write_go(round_go_9(x), out)?,
        FIXED9 => {
            let _ = write!(VecWriter(out), "{:.9}", half_up_9(x)?.0);
        }
        _ => return None,
    }
    Some(())
}

/// A signed string as every profile writes it: only printable ASCII that no profile escapes.
fn write_str(s: &[u8], profile: u8, out: &mut Vec<u8>) -> Option<()> {
    let table = if profile == GO { &PLAIN_GO } else { &PLAIN };
    if !s.iter().all(|&c| table[usize::from(c)]) {
        return None;
    }
    out.push(b'"');
    out.extend_from_slice(s);
    out.push(b'"');
    Some(())
}

struct Pcs<'a> {
    pid: &'a [u8],
    root: &'a [u8],
    shard: &'a [u8],
    epoch: i64,
    floats: [f64; 4], // D_hat, coh_star, r, budget
    sig: &'a [u8],
    sent: Option<&'a [u8]>,
}

/// The bare PCS of one line, typed as the Python route's fast path wants it.
fn read(line: &[u8]) -> Option<Pcs<'_>> {
    let mut rd = Reader { b: line, i: 0 };
    rd.ws();
    if rd.peek()? != b'{' {
        return None;
    }
    let members = rd.object(1)?;
    rd.ws();
    if rd.i != line.len() {
        return None;
    }
    let (mut pid, mut root, mut shard, mut sig) = (None, None, None, None);
    let mut epoch = None;
    let mut floats: [Option<f64>; 4] = [None; 4];
    let mut sent = None;
    for (k, v) in members {
        match (k, v) {
            (b"pcs", _) => return None, // an envelope: the Python route reads those
            (b"pcs_id", Val::Str(s)) => pid = Some(s),
            (b"merkle_root", Val::Str(s)) => root = Some(s),
            (b"shard_id", Val::Str(s)) => shard = Some(s),
            (b"epoch", Val::Int(e)) => epoch = Some(e),
            (b"D_hat", Val::Float(f)) => floats[0] = Some(flt(f)?),
            (b"coh_star", Val::Float(f)) => floats[1] = Some(flt(f)?),
            (b"r", Val::Float(f)) => floats[2] = Some(flt(f)?),
            (b"budget", Val::Float(f)) => floats[3] = Some(flt(f)?),
            (b"sig", Val::Str(s)) => sig = Some(s),
            (b"sent_at", Val::Str(s)) => sent = Some(s),
            (b"sent_at", Val::Null) => {}
            (
                b"pcs_id" | b"merkle_root" | b"shard_id" | b"epoch" | b"D_hat" | b"coh_star"
                | b"r" | b"budget" | b"sig" | b"sent_at",
                _,
            ) => return None, // a field of the wrong type
            _ => {}
        }
    }
    let [d, c, r, b] = [floats[0]?, floats[1]?, floats[2]?, floats[3]?];
    // As the Python route checks it: one sum, evaluated in the same order.
    if !(d * 1e9 + c * 1e9 + r * 1e9 + b * 1e9).is_finite() {
        return None;
    }
    let (pid, root, shard) = (pid?, root?, shard?);
    for s in [pid, root, shard] {
        if s.len() > MAX_STR || !s.is_ascii() {
            return None;
        }
    }
    Some(Pcs { pid, root, shard, epoch: epoch?, floats: [d, c, r, b], sig: sig?, sent })
}

/// The canonical bytes of the signed subset under `profile` (keys in the profile's order).
fn canonical(p: &Pcs<'_>, profile: u8) -> Option<Vec<u8>> {
    let [d, c, r, b] = p.floats;
    let mut out = Vec::with_capacity(256);
    let field = |out: &mut Vec<u8>, name: &[u8], first: bool| {
        if !first {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name);
        out.extend_from_slice(b"\":");
    };
    out.push(b'{');
    if profile == GO {
        // The upstream Go struct's declaration order.
        field(&mut out, b"budget", true);
        write_float(b, profile, &mut out)?;
        field(&mut out, b"coh_star", false);
        write_float(c, profile, &mut out)?;
        field(&mut out, b"D_hat", false);
        write_float(d, profile, &mut out)?;
    } else {
        // Sorted by code point.
        field(&mut out, b"D_hat", true);
        write_float(d, profile, &mut out)?;
        field(&mut out, b"budget", false);
        write_float(b, profile, &mut out)?;
        field(&mut out, b"coh_star", false);
        write_float(c, profile, &mut out)?;
    }
    field(&mut out, b"epoch", false);
    let _ = write!(VecWriter(&mut out), "{}", p.epoch);
    field(&mut out, b"merkle_root", false);
    write_str(p.root, profile, &mut out)?;
    field(&mut out, b"pcs_id", false);
    write_str(p.pid, profile, &mut out)?;
    field(&mut out, b"r", false);
    write_float(r, profile, &mut out)?;
    field(&mut out, b"shard_id", false);
    write_str(p.shard, profile, &mut out)?;
    out.push(b'}');
    Some(out)
}

type Values<'a> = (&'a str, &'a str, i64, &'a str, f64, f64, f64, f64);

/// One JSONL line (a bare PCS) under profile code 0 (python), 1 (go) or 2 (fixed9):
/// `((pcs_id, merkle_root, epoch, shard_id, D_hat, coh_star, r, budget), canonical bytes,
/// signature bytes (32 or 64), sent_at or None)`, or `None` when the Python route must decide.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn read_pcs<'py, 'a>(
    py: Python<'py>,
    line: &'a [u8],
    profile: u8,
) -> Option<(Values<'a>, Bound<'py, PyBytes>, Bound<'py, PyBytes>, Option<&'a str>)> {
    let p = read(line)?;
    let sig = b64decode(p.sig)?;
    if sig.len() != 32 && sig.len() != 64 {
        return None;
    }
    let canon = canonical(&p, profile)?;
    let text = |s: &'a [u8]| -> Option<&'a str> { std::str::from_utf8(s).ok() };
    let sent = match p.sent {
        Some(s) => Some(std::str::from_utf8(s).ok()?),
        None => None,
    };
    let [d, c, r, b] = p.floats;
    let values = (text(p.pid)?, text(p.root)?, p.epoch, text(p.shard)?, d, c, r, b);
    Some((values, PyBytes::new(py, &canon), PyBytes::new(py, &sig), sent))
}

// -- many records per call ------------------------------------------------------------------

/// `n` ASCII digits at `s[at..]`, as a number.
fn num(s: &[u8], at: usize, n: usize) -> Option<i64> {
    let d = s.get(at..at + n)?;
    let mut v = 0i64;
    for &c in d {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (valid input).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A time in the one form both routes surely read alike, as microseconds since the epoch
/// (UTC): `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)` with every field in range (`z` too when
/// `lower_z`). Python's `datetime.fromisoformat` reads such a time to the same instant,
/// fraction truncated to microseconds; anything else is `None`, and Python decides.
/// Returns the micros and the length read (the time may be followed by more bytes).
fn stamp(s: &[u8], lower_z: bool) -> Option<(i64, usize)> {
    let (y, mo, d) = (num(s, 0, 4)?, num(s, 5, 2)?, num(s, 8, 2)?);
    let (h, mi, se) = (num(s, 11, 2)?, num(s, 14, 2)?, num(s, 17, 2)?);
    if s[4] != b'-' || s[7] != b'-' || s[10] != b'T' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if y < 1 || !(1..=12).contains(&mo) || d < 1 || d > dim[(mo - 1) as usize] || h > 23
        || mi > 59 || se > 59
    {
        return None;
    }
    let mut i = 19;
    let mut us = 0i64;
    if s.get(i) == Some(&b'.') {
        let n = s[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return None;
        }
        for k in 0..6 {
            let c = if k < n { s[i + 1 + k] } else { b'0' };
            us = us * 10 + i64::from(c - b'0');
        }
        i += 1 + n;
    }
    let off = match *s.get(i)? {
        b'Z' => {
            i += 1;
            0
        }
        b'z' if lower_z => {
            i += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let (oh, om) = (num(s, i + 1, 2)?, num(s, i + 4, 2)?);
            if s[i + 3] != b':' || oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            let o = oh * 3600 + om * 60;
            if sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - off;
    Some((secs * 1_000_000 + us, i))
}

/// `sent_at` as the short route reads it: absent or null is `Some(None)`, a time in the
/// sure form `Some(Some(micros))`, anything else `None` (not sure).
fn sent_micros(sent: Option<&[u8]>) -> Option<Option<i64>> {
    match sent {
        None => Some(None),
        Some(s) => match stamp(s, true) {
            Some((us, n)) if n == s.len() => Some(Some(us)),
            _ => None,
        },
    }
}

/// The header of the inbox WAL entry at `b[pos..]` as the Python reader's regular
/// expression matches it (`<time>|<length>|`), with its time in the sure form: the
/// entry's time in micros, its body length and where the body starts.
fn wal_header(b: &[u8], pos: usize) -> Option<(i64, usize, usize)> {
    let h = &b[pos..];
    if h.len() < 20 {
        return None;
    }
    let (us, n) = stamp(h, false)?;
    if h.get(n) != Some(&b'|') {
        return None;
    }
    let digits = h[n + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=12).contains(&digits) || h.get(n + 1 + digits) != Some(&b'|') {
        return None;
    }
    let len: usize = std::str::from_utf8(&h[n + 1..n + 1 + digits]).ok()?.parse().ok()?;
    Some((us, len, pos + n + 2 + digits))
}

/// Bytes Python's `bytes.isspace` counts as white space.
fn py_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// What the short route needs of one record, or `None` (not sure).
#[allow(clippy::type_complexity)]
fn sure<'a>(
    rec: &'a [u8],
    profile: u8,
    max_bytes: usize,
) -> Option<(Vec<u8>, Vec<u8>, Option<i64>, Values<'a>)> {
    if rec.len() > max_bytes {
        return None;
    }
    let p = read(rec)?;
    let sig = b64decode(p.sig)?;
    if sig.len() != 32 && sig.len() != 64 {
        return None;
    }
    let sent = sent_micros(p.sent)?;
    let canon = canonical(&p, profile)?;
    let text = |s: &'a [u8]| -> Option<&'a str> { std::str::from_utf8(s).ok() };
    let [d, c, r, b] = p.floats;
    Some((canon, sig, sent, (text(p.pid)?, text(p.root)?, p.epoch, text(p.shard)?, d, c, r, b)))
}

/// Consecutive records valid by the short route ([`read_batch`]'s `short`): their entries'
/// starts, their pcs_ids, the rest of their values packed (no Python object per value: a run
/// is counted, and its values read back only if asked), and how many there are of each
/// shard_id, in the order each was first seen.
struct Run<'py> {
    starts: Bound<'py, PyList>,
    ids: Bound<'py, PyList>,
    packed: Vec<u8>,
    // Owned: the buffer may be a file mapped read-only that another process rewrites (see
    // read_batch), so nothing of it is kept from one record to the next.
    shards: Vec<(String, usize)>,
    shard_at: HashMap<String, usize>,
}

impl<'py> Run<'py> {
    fn new(py: Python<'py>) -> Self {
        Run {
            starts: PyList::empty(py),
            ids: PyList::empty(py),
            packed: Vec::new(),
            shards: Vec::new(),
            shard_at: HashMap::new(),
        }
    }

    /// One record: its values packed as `<HHq4d` (little-endian: merkle_root's length,
    /// shard_id's length, epoch, D_hat, coh_star, r, budget), then merkle_root and shard_id
    /// (ASCII, at most [`MAX_STR`] bytes each: [`read`] refuses longer or other ones).
    fn push(&mut self, at: usize, v: Values<'_>) -> PyResult<()> {
        let (pid, root, epoch, shard, d, c, r, b) = v;
        self.starts.append(at)?;
        self.ids.append(pid)?;
        let p = &mut self.packed;
        p.extend_from_slice(&(root.len() as u16).to_le_bytes());
        p.extend_from_slice(&(shard.len() as u16).to_le_bytes());
        p.extend_from_slice(&epoch.to_le_bytes());
        for x in [d, c, r, b] {
            p.extend_from_slice(&x.to_le_bytes());
        }
        p.extend_from_slice(root.as_bytes());
        p.extend_from_slice(shard.as_bytes());
        match self.shard_at.get(shard) {
            Some(&k) => self.shards[k].1 += 1,
            None => {
                self.shard_at.insert(shard.to_owned(), self.shards.len());
                self.shards.push((shard.to_owned(), 1));
            }
        }
        Ok(())
    }
}

/// Many records of `buf` from byte `start`: JSONL lines (`wal` false; blank lines are not
/// records) or inbox WAL entries (`wal` true; only those received in `[since, until)`, in
/// micros since the epoch, when given), at most `limit` of them. Returns `(next, rows,
/// stopped)`: per record in order `(start, end, canonical bytes, signature, sent_at micros or
/// None, received micros or None, values, mac_ok)` -- the values as [`read_pcs`] gives them --
/// or, when not sure of the record, `(start, end, None, None, None, None, None, False)`: Python reads
/// `buf[start:end]` (JSONL) or the entry at `start` (WAL) itself. `stopped`: the WAL entry at
/// `next` is one this reader is not sure how to frame (damaged, or an odd header): Python's
/// reader reads that entry, then calls again after it.
///
/// `mac_key` (optional, keyword only): an HMAC-SHA256 secret, held only for this call and
/// never logged or kept. With it, `mac_ok` is True for a row whose signature is 32 bytes and
/// equals HMAC-SHA256(mac_key, canonical bytes) -- what an HMAC key signs (`signing_message`
/// in `pcs.py`), compared in constant time. False says only "not confirmed" (another key,
/// another profile, a bad signature, Ed25519, or no `mac_key`): Python decides such a row.
///
/// `short` (optional, keyword only, with `mac_key` and `wal` only): `(not_before,
/// not_after, max_skew)` of the `mac_key`'s key -- its window in micros (either end None:
/// open) and the skew limit in seconds (None: none) -- for a key the backend accepts. A record
/// the short route finds valid under that key (its MAC confirmed, its entry's time inside
/// the window, that time within the limit of its `sent_at`) then gives no row of its own:
/// consecutive ones are one item `(starts, pcs_ids, packed, shards)` in `rows`: the lists of
/// their entries' starts and of their pcs_ids, in order, the rest of their values packed
/// (see [`Run::push`]), and `(shard_id, count)` per shard_id in the order each was first
/// seen. Every other record gives its row as
/// above. The caller must still check that this key is the one its short route would try for
/// each of them (a record before them in the call may have changed that).
#[pyfunction]
#[pyo3(signature = (buf, start, profile, wal, max_bytes, since, until, limit, *, mac_key=None,
                    short=None))]
#[allow(clippy::too_many_arguments)]
fn read_batch<'py>(
    py: Python<'py>,
    buf: &Bound<'py, PyAny>,
    start: usize,
    profile: u8,
    wal: bool,
    max_bytes: usize,
    since: Option<i64>,
    until: Option<i64>,
    limit: usize,
    mac_key: Option<&[u8]>,
    short: Option<(Option<i64>, Option<i64>, Option<f64>)>,
) -> PyResult<(usize, Bound<'py, PyList>, bool)> {
    if short.is_some() && (mac_key.is_none() || !wal) {
        return Err(pyo3::exceptions::PyValueError::new_err("short needs mac_key and wal"));
    }
    // The key's two padded blocks, hashed once per call; each record clones that state.
    let mac: Option<Hmac<Sha256>> = match mac_key {
        Some(k) => Some(
            Hmac::<Sha256>::new_from_slice(k)
                .map_err(|_| pyo3::exceptions::PyValueError::new_err("unusable mac_key"))?,
        ),
        None => None,
    };
    let view = PyBuffer::<u8>::get(buf)?;
    if !view.is_c_contiguous() {
        return Err(pyo3::exceptions::PyValueError::new_err("buffer is not contiguous"));
    }
    if !view.readonly() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "buffer is writable: pass bytes or a read-only mmap",
        ));
    }
    // SAFETY: the buffer stays exported (so valid, unmoved and of this length) while `view`
    // lives, and it is read-only: no Python code can write to it, even the code that making a
    // row's objects may run (a collection, a finalizer). A file mapped read-only can still be
    // rewritten in place by another process (appends beyond the mapped length cannot reach
    // it); every index below is checked against `b.len()`, so such bytes are read as they
    // come, as Python's reader would read them, never out of bounds.
    let b: &[u8] = unsafe { std::slice::from_raw_parts(view.buf_ptr() as *const u8, view.len_bytes()) };
    let rows = PyList::empty(py);
    // The open run of records valid by the short route (`short`).
    let mut run: Option<Run<'py>> = None;
    let close = |run: &mut Option<Run<'py>>| -> PyResult<()> {
        if let Some(r) = run.take() {
            let shards = PyList::empty(py);
            for (shard, count) in r.shards {
                shards.append((shard, count))?;
            }
            rows.append((r.starts, r.ids, PyBytes::new(py, &r.packed), shards))?;
        }
        Ok(())
    };
    let (mut pos, mut n) = (start.min(b.len()), 0usize);
    let none = || -> Option<u8> { None };
    while pos < b.len() && n < limit {
        let (rec, at, end, received) = if wal {
            if b[pos] == b'\n' {
                pos += 1;
                continue;
            }
            let Some((us, len, body)) = wal_header(b, pos) else {
                close(&mut run)?;
                return Ok((pos, rows, true));
            };
            let body_end = body.checked_add(len).filter(|&e| e <= b.len());
            let Some(body_end) = body_end else {
                close(&mut run)?;
                return Ok((pos, rows, true));
            };
            if body_end < b.len() && b[body_end] != b'\n' {
                close(&mut run)?;
                return Ok((pos, rows, true));
            }
            let (at, next) = (pos, (body_end + 1).min(b.len()));
            pos = next;
            if since.is_some_and(|s| us < s) || until.is_some_and(|u| us >= u) {
                continue;
            }
            (&b[body..body_end], at, next, Some(us))
        } else {
            let end = match b[pos..].iter().position(|&c| c == b'\n') {
                Some(k) => pos + k + 1,
                None => b.len(),
            };
            let (at, line) = (pos, &b[pos..end]);
            pos = end;
            if line.iter().all(|&c| py_space(c)) {
                continue;
            }
            (line, at, end, None)
        };
        n += 1;
        let row = match sure(rec, profile, max_bytes) {
            Some((canon, sig, sent, values)) => {
                let ok = sig.len() == 32
                    && mac.as_ref().is_some_and(|m| {
                        let mut m = m.clone();
                        m.update(&canon);
                        m.verify_slice(&sig).is_ok() // constant-time compare (subtle)
                    });
                if let (true, Some((nb, na, skew)), Some(at_us)) = (ok, short, received) {
                    // As check_buffer's short route decides it, with the entry's time.
                    // Python divides the exact difference once; so does this while the
                    // difference is exact as a float (else Python decides).
                    let skewed = match (skew, sent) {
                        (Some(lim), Some(s)) => {
                            let d = (at_us - s).abs();
                            d > MAX_SAFE_INTEGER || (d as f64) / 1e6 > lim
                        }
                        _ => false,
                    };
                    if !skewed && nb.is_none_or(|t| at_us >= t) && na.is_none_or(|t| at_us <= t) {
                        run.get_or_insert_with(|| Run::new(py)).push(at, values)?;
                        continue;
                    }
                }
                close(&mut run)?;
                (
                    at,
                    end,
                    Some(PyBytes::new(py, &canon)),
                    Some(PyBytes::new(py, &sig)),
                    sent,
                    received,
                    Some(values),
                    ok,
                )
                    .into_pyobject(py)?
            }
            None => {
                close(&mut run)?;
                (at, end, none(), none(), none(), none(), none(), false).into_pyobject(py)?
            }
        };
        rows.append(row)?;
    }
    close(&mut run)?;
    Ok((pos, rows, false))
}

#[pymodule]
fn sigops_accel(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_pcs, m)?)?;
    m.add_function(wrap_pyfunction!(read_batch, m)?)?;
    m.add("PROFILES", ("python", "go", "fixed9"))?;
    // read_batch takes mac_key and gives mac_ok as each row's eighth item.
    m.add("BATCH_MAC", true)?;
    // read_batch takes short= and gives runs of records valid by the short route.
    m.add("BATCH_SHORT", true)?;
    Ok(())
}
