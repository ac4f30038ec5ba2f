//! Which slice supplies each byte of a chunk: later slices shadow earlier
//! ones, and bytes no slice covers read as zeros.

use std::collections::BTreeMap;

use strata_meta::{Slice, SliceId};

/// A run of bytes inside a chunk and where they come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Offset inside the chunk.
    pub pos: u32,
    pub len: u32,
    /// None: a hole (zeros).
    pub source: Option<SliceSource>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceSource {
    pub id: SliceId,
    /// Where the slice starts in the chunk; the extent's bytes sit at
    /// `extent.pos - slice_pos` inside the slice.
    pub slice_pos: u32,
    pub slice_len: u32,
}

/// The visible extents of `[start, end)` of a chunk, in order, covering the range exactly.
///
/// Extents are kept by offset in a B-tree, so each slice costs a lookup
/// plus the extents it covers: a chunk of thousands of small slices (random
/// writes waiting for compaction) resolves in n log n, not n squared.
pub fn resolve(slices: &[Slice], start: u32, end: u32) -> Vec<Extent> {
    if start >= end {
        return Vec::new();
    }
    // offset -> (length, source); the extents always tile [start, end).
    let mut tiles: BTreeMap<u32, (u32, Option<SliceSource>)> = BTreeMap::new();
    tiles.insert(start, (end - start, None));
    for s in slices {
        let a = s.pos.max(start);
        let b = (s.pos as u64 + s.len as u64).min(end as u64) as u32;
        if a >= b {
            continue;
        }
        let source = (s.id != 0).then_some(SliceSource {
            id: s.id,
            slice_pos: s.pos,
            slice_len: s.len,
        });
        split_at(&mut tiles, a);
        split_at(&mut tiles, b);
        let covered: Vec<u32> = tiles.range(a..b).map(|(&pos, _)| pos).collect();
        for pos in covered {
            tiles.remove(&pos);
        }
        tiles.insert(a, (b - a, source));
    }
    tiles
        .into_iter()
        .map(|(pos, (len, source))| Extent { pos, len, source })
        .collect()
}

/// Splits the extent that straddles `at`, if one does, into two at `at`.
fn split_at(tiles: &mut BTreeMap<u32, (u32, Option<SliceSource>)>, at: u32) {
    let Some((&pos, &(len, source))) = tiles.range(..=at).next_back() else {
        return;
    };
    if pos < at && at < pos + len {
        tiles.insert(pos, (at - pos, source));
        tiles.insert(at, (pos + len - at, source));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sl(id: u64, pos: u32, len: u32) -> Slice {
        Slice { id, pos, len }
    }

    /// Byte-by-byte model: which slice id (0 = hole) supplies each byte.
    fn model(slices: &[Slice], start: u32, end: u32) -> Vec<u64> {
        (start..end)
            .map(|b| {
                slices
                    .iter()
                    .rev()
                    .find(|s| s.pos <= b && b < s.pos + s.len)
                    .map_or(0, |s| s.id)
            })
            .collect()
    }

    fn flatten(ext: &[Extent]) -> Vec<u64> {
        ext.iter()
            .flat_map(|e| std::iter::repeat_n(e.source.map_or(0, |s| s.id), e.len as usize))
            .collect()
    }

    #[test]
    fn empty_chunk_is_one_hole() {
        assert_eq!(
            resolve(&[], 10, 20),
            vec![Extent {
                pos: 10,
                len: 10,
                source: None
            }]
        );
    }

    #[test]
    fn newer_slice_wins_over_older() {
        let s = [sl(1, 0, 100), sl(2, 40, 20)];
        let e = resolve(&s, 0, 100);
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].pos, e[0].len, e[0].source.unwrap().id), (0, 40, 1));
        assert_eq!((e[1].pos, e[1].len, e[1].source.unwrap().id), (40, 20, 2));
        assert_eq!((e[2].pos, e[2].len, e[2].source.unwrap().id), (60, 40, 1));
    }

    #[test]
    fn hole_slice_hides_older_data() {
        let s = [sl(1, 0, 100), sl(0, 50, 50)];
        assert_eq!(flatten(&resolve(&s, 0, 100)), model(&s, 0, 100));
        assert!(resolve(&s, 60, 70)[0].source.is_none());
    }

    #[test]
    fn matches_byte_model_on_pseudo_random_layouts() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut rnd = |n: u32| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as u32
        };
        for _ in 0..300 {
            let n = rnd(8);
            let slices: Vec<Slice> = (0..n)
                .map(|i| {
                    let pos = rnd(200);
                    let id = if rnd(5) == 0 { 0 } else { i as u64 + 1 };
                    sl(id, pos, 1 + rnd(80))
                })
                .collect();
            let a = rnd(250);
            let b = a + rnd(60);
            let got = resolve(&slices, a, b);
            assert_eq!(flatten(&got), model(&slices, a, b), "{slices:?} [{a},{b})");
            // Extents are ordered and contiguous.
            let mut at = a;
            for e in &got {
                assert_eq!(e.pos, at);
                at += e.len;
            }
        }
    }
}
