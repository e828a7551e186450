//! SentencePiece tokenisation for the sentence encoder, exactly as the encoder's original graph
//! does it.
//!
//! Google's Universal Sentence Encoder multilingual v3 tokenises inside its graph with
//! onnxruntime-extensions' `SentencepieceTokenizer` op (sentencepiece C++ ≤ 0.2.1:
//! `Normalizer` and unigram `Model::EncodeOptimized`). vigil cuts that op out of the graph
//! (`scripts/prepare-encoder.py`) and tokenises here instead, in plain Rust, with the same
//! result id for id. [`SentencePiece::encode_use`] does, for one text:
//!
//! 1. **NUL cut.** The op reads its strings as C strings, so everything from the first `\0` on
//!    is dropped.
//! 2. **Normalisation** (sentencepiece's `Normalizer`, with the model's precompiled `nmt_nfkc`
//!    character map). At each position a user-defined piece (`extra_token_id_1`..`3` in the USE
//!    model) that starts there is kept verbatim, the longest one winning; otherwise the longest
//!    key of the character map (a darts-clone double array over UTF-8 bytes) that starts there
//!    is replaced by its value (full-width letters become ASCII, ligatures and compatibility
//!    forms are decomposed, tabs, newlines and odd spaces become a space, some invisible
//!    characters disappear); otherwise one character is copied. Leading spaces are dropped, runs
//!    of spaces collapse to one, trailing ones are dropped, a space `▁` (U+2581) is put in front
//!    (`add_dummy_prefix`), and every space becomes `▁`.
//! 3. **Unigram Viterbi** over the normalised bytes: the segmentation into vocabulary pieces
//!    with the highest total score. A character that no piece covers on its own is `<unk>`,
//!    scoring the lowest piece score minus 10; runs of consecutive `<unk>` are then merged into
//!    one.
//! 4. `[BOS] + ids + [EOS]`: an empty or blank text gives `[1, 2]`. Nothing is sampled,
//!    n-best'ed or reversed (the graph's op inputs say so).
//!
//! Two quirks of that sentencepiece build decide some segmentations, and both are reproduced:
//!
//! - **User-defined pieces always win.** sentencepiece starts its running maximum of piece
//!   scores at `FLT_MIN`, the smallest *positive* float, and every USE score is negative, so a
//!   user-defined piece of `n` characters scores `n · FLT_MIN − 0.1 ≈ −0.1`, better than any
//!   normal piece. `"extra_token_id_31"` is `▁`, `extra_token_id_3`, `1`.
//! - **Mixed-precision path scores.** A candidate path score is computed in `double` (the
//!   ternary that picks the user-defined or the normal score promotes it), compared with the
//!   best score stored so far as a `float`, and stored back as a `float`. Summing in `f32`
//!   alone (as Python's sentencepiece 0.2.3 does) breaks near-ties differently: runs of one
//!   repeated character, `"a\\UXXXXXXXX"` is `… XXX XXX XX` here but `… XX XXX XXX` there.
//!
//! Only what the USE model uses is implemented: UNIGRAM models with NORMAL, UNKNOWN, CONTROL,
//! USER_DEFINED and UNUSED pieces and a precompiled character map. A model asking for anything
//! else (BPE, byte fallback, whitespace as suffix) is refused by [`SentencePiece::from_bytes`],
//! as is a corrupt file; loading never panics, and neither does encoding a model that loaded.
//! The port was checked against the op on 75,275 strings (38 languages, fuzz, ties,
//! user-defined symbols) with no difference.

use std::fmt;

/// The whitespace marker, `▁`.
const SPACE_SYMBOL: &[u8] = "\u{2581}".as_bytes();
/// How much worse than the worst piece an unknown character scores.
const UNK_PENALTY: f32 = 10.0;

/// A loaded SentencePiece unigram model (see the module docs).
pub struct SentencePiece {
    pieces: Vec<Box<str>>,
    scores: Vec<f32>,
    kinds: Vec<PieceKind>,
    trie: Trie,
    normalizer: Normalizer,
    unk_id: u32,
    bos_id: i32,
    eos_id: i32,
    /// The lowest normal piece score.
    min_score: f32,
    /// The highest normal piece score, but at least `f32::MIN_POSITIVE` (the first quirk).
    max_score: f32,
}

impl fmt::Debug for SentencePiece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentencePiece")
            .field("pieces", &self.pieces.len())
            .field("unk_id", &self.unk_id)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish_non_exhaustive()
    }
}

impl SentencePiece {
    /// Reads a SentencePiece model (a serialised `ModelProto`, the `.spm` file). The error says
    /// what is wrong; a corrupt or truncated file is an error, never a panic.
    pub fn from_bytes(model: &[u8]) -> Result<Self, String> {
        let fields = proto_fields(model).map_err(|e| format!("not a SentencePiece model: {e}"))?;
        let mut pieces = Vec::new();
        let mut scores = Vec::new();
        let mut kinds = Vec::new();
        let mut spec = Spec::default();
        for (field, value) in fields {
            match (field, value) {
                (1, Value::Bytes(bytes)) => {
                    let (piece, score, kind) =
                        read_piece(bytes).map_err(|e| format!("piece {}: {e}", pieces.len()))?;
                    pieces.push(piece);
                    scores.push(score);
                    kinds.push(kind);
                }
                (2, Value::Bytes(bytes)) => spec
                    .read_trainer(bytes)
                    .map_err(|e| format!("trainer spec: {e}"))?,
                (3, Value::Bytes(bytes)) => spec
                    .read_normalizer(bytes)
                    .map_err(|e| format!("normalizer spec: {e}"))?,
                _ => {}
            }
        }
        if pieces.is_empty() {
            return Err("not a SentencePiece model: it has no pieces".into());
        }
        if pieces.len() > i32::MAX as usize {
            return Err(format!("{} pieces is too many", pieces.len()));
        }
        if spec.model_type != 1 {
            return Err(format!(
                "only UNIGRAM models are supported, this one has model_type {}",
                spec.model_type
            ));
        }
        if spec.byte_fallback {
            return Err("byte_fallback is not supported".into());
        }
        if spec.whitespace_as_suffix {
            return Err("treat_whitespace_as_suffix is not supported".into());
        }
        let id = |name: &str, id: i64, kind: PieceKind| match usize::try_from(id) {
            Ok(i) if i < pieces.len() && kinds[i] == kind => Ok(i as i32),
            _ => Err(format!(
                "{name} {id} is not a {kind:?} piece of the {} in the model",
                pieces.len()
            )),
        };
        let unk_id = id("unk_id", spec.unk_id, PieceKind::Unknown)? as u32;
        let bos_id = id("bos_id", spec.bos_id, PieceKind::Control)?;
        let eos_id = id("eos_id", spec.eos_id, PieceKind::Control)?;

        let (units, replacements) = read_charsmap(spec.charsmap)?;
        let user_defined = pieces
            .iter()
            .zip(&kinds)
            .filter(|(p, k)| **k == PieceKind::UserDefined && !p.is_empty())
            .map(|(p, _)| p.as_bytes().to_vec())
            .collect();
        let normalizer = Normalizer {
            units,
            replacements,
            user_defined,
            add_dummy_prefix: spec.add_dummy_prefix,
            remove_extra_whitespaces: spec.remove_extra_whitespaces,
            escape_whitespaces: spec.escape_whitespaces,
        };

        // sentencepiece starts these at FLT_MAX and FLT_MIN (the smallest positive float).
        let mut min_score = f32::MAX;
        let mut max_score = f32::MIN_POSITIVE;
        for (score, kind) in scores.iter().zip(&kinds) {
            if *kind == PieceKind::Normal {
                min_score = min_score.min(*score);
                max_score = max_score.max(*score);
            }
        }
        let keys = pieces
            .iter()
            .zip(&kinds)
            .enumerate()
            .filter(|(_, (p, k))| {
                !p.is_empty()
                    && matches!(
                        k,
                        PieceKind::Normal | PieceKind::UserDefined | PieceKind::Unused
                    )
            })
            .map(|(i, (p, _))| (p.as_bytes(), i as u32))
            .collect();
        let trie = Trie::build(keys)?;
        Ok(Self {
            pieces,
            scores,
            kinds,
            trie,
            normalizer,
            unk_id,
            bos_id,
            eos_id,
            min_score,
            max_score,
        })
    }

    /// The number of pieces; every id is below it.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The text of piece `id`, if there is one.
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(|p| &**p)
    }

    /// Appends to `ids` what the encoder's graph reads for `text`: BOS, the piece ids, EOS (see
    /// the module docs), at most `max_tokens` ids in all. A longer text loses its last piece
    /// ids; BOS and EOS are always there (a `max_tokens` below 2 counts as 2). The whole text
    /// is tokenised before the cut, so the ids kept are those of the whole text's segmentation;
    /// the cost is linear in the text's length.
    pub fn encode_use(&self, text: &str, max_tokens: usize, ids: &mut Vec<i32>) {
        let text = text.split('\0').next().unwrap_or_default();
        let start = ids.len();
        ids.push(self.bos_id);
        self.encode(text, ids);
        ids.truncate(start.saturating_add(max_tokens.max(2) - 1));
        ids.push(self.eos_id);
    }

    /// Normalises `text`, segments it, and appends its piece ids, runs of `<unk>` merged.
    fn encode(&self, text: &str, ids: &mut Vec<i32>) {
        let normalized = self.normalizer.normalize(text.as_bytes());
        let unk = self.unk_id as i32;
        for id in self.viterbi(&normalized) {
            let id = id as i32;
            if id == unk && ids.last() == Some(&unk) {
                continue;
            }
            ids.push(id);
        }
    }

    /// The best segmentation of `s` (sentencepiece's unigram `EncodeOptimized`, with both
    /// quirks): piece ids in order.
    fn viterbi(&self, s: &[u8]) -> Vec<u32> {
        let n = s.len();
        if n == 0 {
            return Vec::new();
        }
        // The best path ending at each byte position: its score, where its last piece starts
        // (NONE: no path yet) and that piece's id.
        const NONE: usize = usize::MAX;
        let mut best: Vec<(f32, usize, u32)> = vec![(0.0, NONE, 0); n + 1];
        let unk_score = self.min_score - UNK_PENALTY;
        let mut start = 0;
        while start < n {
            let till_here = best[start].0;
            let char_len = utf8_len(s[start]).min(n - start);
            let mut has_single = false;
            let mut node = 0u32;
            for end in start + 1..=n {
                let Some(child) = self.trie.child(node, s[end - 1]) else {
                    break;
                };
                node = child;
                let Some(id) = self.trie.value(node) else {
                    continue;
                };
                let kind = self.kinds[id as usize];
                if kind == PieceKind::Unused {
                    continue;
                }
                let len = end - start;
                // C++: `user_defined ? (length * max_score_ - 0.1) : GetScore(id)`, a double.
                let score = if kind == PieceKind::UserDefined {
                    f64::from(len as f32 * self.max_score) - 0.1
                } else {
                    f64::from(self.scores[id as usize])
                };
                let candidate = score + f64::from(till_here);
                let target = &mut best[end];
                if target.1 == NONE || candidate > f64::from(target.0) {
                    *target = (candidate as f32, start, id);
                }
                if len == char_len {
                    has_single = true;
                }
            }
            if !has_single {
                // The unknown score is a float: plain f32 arithmetic.
                let candidate = unk_score + till_here;
                let target = &mut best[start + char_len];
                if target.1 == NONE || candidate > target.0 {
                    *target = (candidate, start, self.unk_id);
                }
            }
            start += char_len;
        }
        let mut pieces = Vec::new();
        let mut end = n;
        while end > 0 {
            let (_, start, id) = best[end];
            if start == NONE {
                break; // unreachable: every character boundary has a path
            }
            pieces.push(id);
            end = start;
        }
        pieces.reverse();
        pieces
    }
}

/// A piece's type (`SentencePiece.Type` in sentencepiece_model.proto).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PieceKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

/// The settings read from the trainer and normalizer specs (with sentencepiece's defaults).
struct Spec<'a> {
    model_type: u64,
    whitespace_as_suffix: bool,
    byte_fallback: bool,
    unk_id: i64,
    bos_id: i64,
    eos_id: i64,
    charsmap: &'a [u8],
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Self {
            model_type: 1,
            whitespace_as_suffix: false,
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            charsmap: &[],
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

impl<'a> Spec<'a> {
    fn read_trainer(&mut self, bytes: &'a [u8]) -> Result<(), String> {
        for (field, value) in proto_fields(bytes)? {
            match (field, value) {
                (3, Value::Varint(v)) => self.model_type = v,
                (24, Value::Varint(v)) => self.whitespace_as_suffix = v != 0,
                (35, Value::Varint(v)) => self.byte_fallback = v != 0,
                // int32 fields: a negative id is a 10-byte varint of its 64-bit two's complement.
                (40, Value::Varint(v)) => self.unk_id = i64::from(v as i32),
                (41, Value::Varint(v)) => self.bos_id = i64::from(v as i32),
                (42, Value::Varint(v)) => self.eos_id = i64::from(v as i32),
                _ => {}
            }
        }
        Ok(())
    }

    fn read_normalizer(&mut self, bytes: &'a [u8]) -> Result<(), String> {
        for (field, value) in proto_fields(bytes)? {
            match (field, value) {
                (2, Value::Bytes(b)) => self.charsmap = b,
                (3, Value::Varint(v)) => self.add_dummy_prefix = v != 0,
                (4, Value::Varint(v)) => self.remove_extra_whitespaces = v != 0,
                (5, Value::Varint(v)) => self.escape_whitespaces = v != 0,
                _ => {}
            }
        }
        Ok(())
    }
}

/// One `SentencePiece` message: its text, score and type.
fn read_piece(bytes: &[u8]) -> Result<(Box<str>, f32, PieceKind), String> {
    let (mut piece, mut score, mut kind) = (Box::<str>::default(), 0.0, 1);
    for (field, value) in proto_fields(bytes)? {
        match (field, value) {
            (1, Value::Bytes(b)) => {
                piece = std::str::from_utf8(b)
                    .map_err(|_| "its text is not UTF-8".to_string())?
                    .into();
            }
            (2, Value::Fixed32(bits)) => score = f32::from_bits(bits),
            (3, Value::Varint(v)) => kind = v,
            _ => {}
        }
    }
    let kind = match kind {
        1 => PieceKind::Normal,
        2 => PieceKind::Unknown,
        3 => PieceKind::Control,
        4 => PieceKind::UserDefined,
        5 => PieceKind::Unused,
        6 => PieceKind::Byte,
        other => return Err(format!("unknown piece type {other}")),
    };
    Ok((piece, score, kind))
}

// ---------------------------------------------------------------------------------------------
// A minimal protobuf reader: the fields of one message, in order.

#[derive(Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
    Fixed64,
}

fn varint(bytes: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let Some(&byte) = bytes.get(*pos) else {
            return Err(format!("truncated at byte {}", *pos));
        };
        *pos += 1;
        if shift < 64 {
            value |= u64::from(byte & 0x7f) << shift;
        }
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(format!("overlong varint before byte {}", *pos))
}

fn take<'a>(bytes: &'a [u8], pos: &mut usize, len: u64) -> Result<&'a [u8], String> {
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| pos.checked_add(len))
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| format!("truncated at byte {}", *pos))?;
    let slice = &bytes[*pos..end];
    *pos = end;
    Ok(slice)
}

fn proto_fields(bytes: &[u8]) -> Result<Vec<(u64, Value<'_>)>, String> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let key = varint(bytes, &mut pos)?;
        let value = match key & 7 {
            0 => Value::Varint(varint(bytes, &mut pos)?),
            1 => {
                take(bytes, &mut pos, 8)?;
                Value::Fixed64
            }
            2 => {
                let len = varint(bytes, &mut pos)?;
                Value::Bytes(take(bytes, &mut pos, len)?)
            }
            5 => {
                let b = take(bytes, &mut pos, 4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            wire => return Err(format!("unsupported wire type {wire} before byte {pos}")),
        };
        fields.push((key >> 3, value));
    }
    Ok(fields)
}

// ---------------------------------------------------------------------------------------------
// The vocabulary as a byte trie (children sorted by byte).

struct Trie {
    /// Per node: its first edge, its edge count, and the piece ending there (or `u32::MAX`).
    nodes: Vec<(u32, u32, u32)>,
    /// Per edge: its byte and the child node.
    edges: Vec<(u8, u32)>,
}

impl Trie {
    fn build(mut keys: Vec<(&[u8], u32)>) -> Result<Self, String> {
        keys.sort_unstable();
        if let Some(pair) = keys.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(format!(
                "pieces {} and {} are the same text",
                pair[0].1, pair[1].1
            ));
        }
        let mut trie = Self {
            nodes: vec![(0, 0, u32::MAX)],
            edges: Vec::new(),
        };
        // (node, the keys below it, their common prefix length); no recursion, so a corrupt
        // model with a huge piece cannot overflow the stack.
        let mut work = vec![(0usize, 0usize, keys.len(), 0usize)];
        while let Some((node, mut from, to, depth)) = work.pop() {
            if from < to && keys[from].0.len() == depth {
                trie.nodes[node].2 = keys[from].1;
                from += 1;
            }
            let first_edge = trie.edges.len();
            let mut i = from;
            while i < to {
                let byte = keys[i].0[depth];
                let mut j = i;
                while j < to && keys[j].0[depth] == byte {
                    j += 1;
                }
                let child = trie.nodes.len();
                trie.nodes.push((0, 0, u32::MAX));
                trie.edges.push((byte, child as u32));
                work.push((child, i, j, depth + 1));
                i = j;
            }
            trie.nodes[node].0 = first_edge as u32;
            trie.nodes[node].1 = (trie.edges.len() - first_edge) as u32;
        }
        if trie.nodes.len() > u32::MAX as usize / 2 {
            return Err("the vocabulary is too large".into());
        }
        Ok(trie)
    }

    fn child(&self, node: u32, byte: u8) -> Option<u32> {
        let (first, count, _) = self.nodes[node as usize];
        let edges = &self.edges[first as usize..(first + count) as usize];
        edges
            .binary_search_by_key(&byte, |e| e.0)
            .ok()
            .map(|k| edges[k].1)
    }

    fn value(&self, node: u32) -> Option<u32> {
        let id = self.nodes[node as usize].2;
        (id != u32::MAX).then_some(id)
    }
}

// ---------------------------------------------------------------------------------------------
// The normaliser: sentencepiece's `Normalizer` with a precompiled character map.

struct Normalizer {
    /// The character map's darts-clone double array.
    units: Vec<u32>,
    /// NUL-terminated replacement strings, indexed by the double array's values.
    replacements: Vec<u8>,
    /// User-defined pieces, matched verbatim before the character map.
    user_defined: Vec<Vec<u8>>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
}

/// Splits a precompiled character map into its double array and its replacement strings.
fn read_charsmap(charsmap: &[u8]) -> Result<(Vec<u32>, Vec<u8>), String> {
    if charsmap.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let bad = || "the precompiled character map is corrupt".to_string();
    let size = charsmap.get(..4).ok_or_else(bad)?;
    let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
    let rest = &charsmap[4..];
    if !size.is_multiple_of(4) || size == 0 || size > rest.len() {
        return Err(bad());
    }
    let units = rest[..size]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((units, rest[size..].to_vec()))
}

impl Normalizer {
    /// darts-clone `commonPrefixSearch` on `s`, keeping the longest match: (its length, its
    /// value).
    fn longest_rule(&self, s: &[u8]) -> Option<(usize, usize)> {
        fn offset(unit: u32) -> usize {
            ((unit >> 10) << ((unit & (1 << 9)) >> 6)) as usize
        }
        let mut node = offset(*self.units.first()?);
        let mut best = None;
        for (i, &byte) in s.iter().enumerate() {
            node ^= usize::from(byte);
            let Some(&unit) = self.units.get(node) else {
                break;
            };
            if unit & ((1 << 31) | 0xff) != u32::from(byte) {
                break;
            }
            node ^= offset(unit);
            if (unit >> 8) & 1 == 1 {
                let Some(&leaf) = self.units.get(node) else {
                    break;
                };
                best = Some((i + 1, (leaf & ((1 << 31) - 1)) as usize));
            }
        }
        best
    }

    /// sentencepiece `NormalizePrefix`: what the start of `s` becomes, and how many of its
    /// bytes that consumes (at least one).
    fn normalize_prefix<'a>(&'a self, s: &'a [u8]) -> (&'a [u8], usize) {
        let user_defined = self
            .user_defined
            .iter()
            .filter(|u| s.starts_with(u))
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        if user_defined > 0 {
            return (&s[..user_defined], user_defined);
        }
        if let Some((len, value)) = self.longest_rule(s) {
            if let Some(rest) = self.replacements.get(value..) {
                let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                return (&rest[..end], len);
            }
        }
        let len = utf8_len(s[0]).min(s.len());
        (&s[..len], len)
    }

    /// The normalised bytes of `input` (see the module docs).
    fn normalize(&self, input: &[u8]) -> Vec<u8> {
        let mut s = input;
        if self.remove_extra_whitespaces {
            while !s.is_empty() {
                let (piece, consumed) = self.normalize_prefix(s);
                if piece != b" " {
                    break;
                }
                s = &s[consumed..];
            }
        }
        if s.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(s.len() * 3 / 2 + 3);
        let space: &[u8] = if self.escape_whitespaces {
            SPACE_SYMBOL
        } else {
            b" "
        };
        if self.add_dummy_prefix {
            out.extend_from_slice(space);
        }
        let mut prev_is_space = self.remove_extra_whitespaces;
        while !s.is_empty() {
            let (mut piece, consumed) = self.normalize_prefix(s);
            while prev_is_space && piece.first() == Some(&b' ') {
                piece = &piece[1..];
            }
            if let Some(&last) = piece.last() {
                for &byte in piece {
                    if self.escape_whitespaces && byte == b' ' {
                        out.extend_from_slice(SPACE_SYMBOL);
                    } else {
                        out.push(byte);
                    }
                }
                prev_is_space = last == b' ';
            }
            s = &s[consumed..];
            if !self.remove_extra_whitespaces {
                prev_is_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        out
    }
}

/// The length of the UTF-8 sequence that `lead` starts (1 for a stray byte).
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A small synthetic model, serialised as sentencepiece would.

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
        put_varint(out, (field << 3) | 2);
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    fn put_int(out: &mut Vec<u8>, field: u64, v: i64) {
        put_varint(out, field << 3);
        put_varint(out, v as u64);
    }

    fn piece(text: &str, score: f32, kind: u64) -> Vec<u8> {
        let mut p = Vec::new();
        put_bytes(&mut p, 1, text.as_bytes());
        put_varint(&mut p, (2 << 3) | 5);
        p.extend_from_slice(&score.to_le_bytes());
        put_int(&mut p, 3, kind as i64);
        p
    }

    /// A character map with two rules: TAB -> " ", U+FF21 (Ａ, EF BC A1) -> "A". The double
    /// array was laid out by hand: root offset 1; TAB at 1^0x09 = 8 (leaf at 8^2 = 10, value
    /// 0); EF at 1^0xEF = 238 (offset 256), BC at 494^0xBC = 338 (offset 1), A1 at 339^0xA1 =
    /// 498 (leaf at 498^1 = 499, value 2).
    fn charsmap() -> Vec<u8> {
        let mut units = vec![0u32; 512];
        let label = |byte: u8, offset: u32, leaf: bool| {
            (offset << 10) | (u32::from(leaf) << 8) | u32::from(byte)
        };
        units[0] = 1 << 10;
        units[8] = label(0x09, 2, true);
        units[10] = 1 << 31;
        units[238] = label(0xef, 256, false);
        units[338] = label(0xbc, 1, false);
        units[498] = label(0xa1, 1, true);
        units[499] = (1 << 31) | 2;
        let mut out = ((units.len() * 4) as u32).to_le_bytes().to_vec();
        for u in units {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out.extend_from_slice(b" \0A\0");
        out
    }

    /// Scores of the tie pieces are the USE model's own (`▁a` 10, `\` 690, `U` 1241, `X` 738,
    /// `XX` 21035, `XXX` 24268 there).
    const PIECES: &[(&str, f32, u64)] = &[
        ("<unk>", 0.0, 2),
        ("<s>", 0.0, 3),
        ("</s>", 0.0, 3),
        ("extra_token_id_1", 0.0, 4),
        ("extra_token_id_11", 0.0, 4),
        ("▁", -3.3395002, 1),
        ("▁a", -4.8477397, 1),
        ("\\", -8.866523, 1),
        ("U", -9.419016, 1),
        ("X", -8.931803, 1),
        ("XX", -12.1895275, 1),
        ("XXX", -12.349189, 1),
        ("▁hello", -5.0, 1),
        ("▁world", -5.5, 1),
        ("hello", -7.0, 1),
        ("▁A", -6.0, 1),
        ("B", -6.5, 1),
        ("▁extra", -1.0, 1),
        ("_token", -1.0, 1),
        ("_id", -1.0, 1),
        ("_1", -1.0, 1),
        ("1", -7.5, 1),
        ("▁unused", -0.5, 5),
    ];

    fn model_bytes(
        pieces: &[(&str, f32, u64)],
        trainer: &[(u64, i64)],
        charsmap: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        for (text, score, kind) in pieces {
            put_bytes(&mut out, 1, &piece(text, *score, *kind));
        }
        let mut spec = Vec::new();
        for (field, value) in trainer {
            put_int(&mut spec, *field, *value);
        }
        put_bytes(&mut out, 2, &spec);
        let mut normalizer = Vec::new();
        put_bytes(&mut normalizer, 1, b"nmt_nfkc");
        put_bytes(&mut normalizer, 2, charsmap);
        put_bytes(&mut out, 3, &normalizer);
        out
    }

    fn valid_bytes() -> Vec<u8> {
        model_bytes(PIECES, &[(3, 1), (40, 0), (41, 1), (42, 2)], &charsmap())
    }

    fn model() -> SentencePiece {
        SentencePiece::from_bytes(&valid_bytes()).unwrap()
    }

    fn ids(sp: &SentencePiece, text: &str) -> Vec<i32> {
        let mut ids = Vec::new();
        sp.encode_use(text, 1000, &mut ids);
        ids
    }

    fn pieces(sp: &SentencePiece, text: &str) -> Vec<String> {
        let ids = ids(sp, text);
        ids[1..ids.len() - 1]
            .iter()
            .map(|&i| sp.piece(i as u32).unwrap().to_string())
            .collect()
    }

    #[test]
    fn bos_pieces_eos() {
        let sp = model();
        assert_eq!(sp.vocab_size(), PIECES.len());
        assert_eq!(ids(&sp, "hello world"), [1, 12, 13, 2]);
        assert_eq!(pieces(&sp, "hellohello"), ["▁hello", "hello"]);
    }

    #[test]
    fn blank_text_is_bos_eos() {
        let sp = model();
        for text in ["", " ", "    ", "\t \t"] {
            assert_eq!(ids(&sp, text), [1, 2], "{text:?}");
        }
    }

    #[test]
    fn text_is_cut_at_the_first_nul() {
        let sp = model();
        assert_eq!(ids(&sp, "hello\0world"), ids(&sp, "hello"));
        assert_eq!(ids(&sp, "\0hello"), [1, 2]);
    }

    #[test]
    fn whitespace_is_trimmed_and_collapsed_through_the_charsmap() {
        let sp = model();
        let want = ids(&sp, "hello world");
        for text in [
            "  hello   world  ",
            "hello\tworld",
            "\thello \t world\t",
            "hello \t\tworld",
        ] {
            assert_eq!(ids(&sp, text), want, "{text:?}");
        }
    }

    #[test]
    fn charsmap_replaces_the_longest_match() {
        let sp = model();
        assert_eq!(pieces(&sp, "\u{ff21}B"), ["▁A", "B"]);
        assert_eq!(
            sp.normalizer.normalize("\u{ff21}\tB".as_bytes()),
            "▁A▁B".as_bytes()
        );
        // A prefix of a key that is not a key itself is copied.
        assert_eq!(
            sp.normalizer.normalize("\u{ff22}".as_bytes()),
            "▁\u{ff22}".as_bytes()
        );
    }

    #[test]
    fn runs_of_unknown_characters_merge_into_one() {
        let sp = model();
        assert_eq!(pieces(&sp, "é😀ü hello"), ["▁", "<unk>", "▁hello"]);
        assert_eq!(
            pieces(&sp, "hello é ü"),
            ["▁hello", "▁", "<unk>", "▁", "<unk>"]
        );
    }

    #[test]
    fn user_defined_pieces_always_win() {
        let sp = model();
        // "▁extra" + "_token" + "_id" + "_1" scores -4. The user-defined piece scores about
        // -0.1 (the FLT_MIN quirk), so "▁" + it scores -3.44 and wins; scored from the best
        // normal score (-1), it would be 16 * -1 - 0.1 and lose.
        assert_eq!(pieces(&sp, "extra_token_id_1"), ["▁", "extra_token_id_1"]);
        // The longest user-defined match, kept verbatim by the normaliser.
        assert_eq!(pieces(&sp, "extra_token_id_11"), ["▁", "extra_token_id_11"]);
        assert_eq!(
            pieces(&sp, "extra_token_id_111"),
            ["▁", "extra_token_id_11", "1"]
        );
        // Unused pieces are never produced.
        assert!(!pieces(&sp, "unused").contains(&"▁unused".to_string()));
    }

    #[test]
    fn path_scores_are_mixed_precision() {
        let sp = model();
        // In f32 alone this is "▁a \ U XX XXX XXX" (Python sentencepiece 0.2.3).
        assert_eq!(
            pieces(&sp, "a\\UXXXXXXXX"),
            ["▁a", "\\", "U", "XXX", "XXX", "XX"]
        );
    }

    #[test]
    fn max_tokens_keeps_bos_the_first_pieces_and_eos() {
        let sp = model();
        let text = "hello world hello world";
        let all = ids(&sp, text);
        assert_eq!(all, [1, 12, 13, 12, 13, 2]);
        for (max, want) in [
            (6, &all[..]),
            (100, &all[..]),
            (5, &[1, 12, 13, 12, 2][..]),
            (3, &[1, 12, 2][..]),
            (2, &[1, 2][..]),
            (1, &[1, 2][..]),
            (0, &[1, 2][..]),
            (usize::MAX, &all[..]),
        ] {
            let mut got = vec![7, 7];
            sp.encode_use(text, max, &mut got);
            assert_eq!(&got[..2], [7, 7], "appends");
            assert_eq!(&got[2..], want, "max_tokens {max}");
        }
    }

    #[test]
    fn unsupported_or_inconsistent_models_are_refused() {
        let charsmap = charsmap();
        let cases: [(&[(u64, i64)], &str); 6] = [
            (&[(3, 2)], "UNIGRAM"),
            (&[(35, 1)], "byte_fallback"),
            (&[(24, 1)], "treat_whitespace_as_suffix"),
            (&[(40, 5)], "unk_id"),
            (&[(41, -1)], "bos_id"),
            (&[(42, 100)], "eos_id"),
        ];
        for (trainer, needle) in cases {
            let err =
                SentencePiece::from_bytes(&model_bytes(PIECES, trainer, &charsmap)).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        let mut duplicated = PIECES.to_vec();
        duplicated.push(("▁hello", -1.0, 1));
        let err = SentencePiece::from_bytes(&model_bytes(&duplicated, &[], &charsmap)).unwrap_err();
        assert!(err.contains("same text"), "{err}");
        let err = SentencePiece::from_bytes(&model_bytes(PIECES, &[], &charsmap[..3])).unwrap_err();
        assert!(err.contains("character map"), "{err}");
        for garbage in [
            &b""[..],
            b"this is not a model",
            &[0xff; 16],
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ] {
            let err = SentencePiece::from_bytes(garbage).unwrap_err();
            assert!(err.contains("SentencePiece model"), "{err}");
        }
    }

    #[test]
    fn corrupt_models_never_panic() {
        let valid = valid_bytes();
        for len in 0..valid.len() {
            if let Ok(sp) = SentencePiece::from_bytes(&valid[..len]) {
                ids(&sp, "hello \u{ff21}B\textra_token_id_1 é");
            }
        }
        // Flipped bytes (a fixed xorshift sequence), including inside the character map.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut bytes = valid.clone();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % bytes.len() as u64) as usize;
                bytes[at] ^= (state >> 32) as u8 | 1;
            }
            if let Ok(sp) = SentencePiece::from_bytes(&bytes) {
                ids(&sp, "hello \u{ff21}B\textra_token_id_1 é XXXX");
            }
        }
    }
}
