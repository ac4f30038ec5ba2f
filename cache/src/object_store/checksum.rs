//! Checksums a block records in its object's user metadata when written,
//! so that reads can tell bytes changed on the way (a faulty NIC or proxy)
//! or at rest from the block itself.
//!
//! A CRC-32 per page, not one per object: a ranged read (a random read of
//! a block not cached) can then be checked too, once it is widened to whole
//! pages. Pages are 64 KiB, doubled for objects over 128 pages, so the
//! metadata stays within S3's 2 KiB for user metadata whatever the block
//! size.

/// The user metadata key (`x-amz-meta-strata-crc32`): `PAGE:HEX`, the page
/// size in bytes and each page's CRC-32 as 8 hex digits.
pub const CHECKSUM_META: &str = "strata-crc32";

/// The smallest page; a ranged read is widened to multiples of it first.
pub const MIN_PAGE: u64 = 64 << 10;

/// At most this many pages, so the metadata stays under 1.1 KiB.
const MAX_PAGES: u64 = 128;

/// The page size of an object of `len` bytes.
fn page_size(len: u64) -> u64 {
    let mut page = MIN_PAGE;
    while len.div_ceil(page) > MAX_PAGES {
        page *= 2;
    }
    page
}

/// The metadata value recording `data`'s page checksums.
pub fn record(data: &[u8]) -> String {
    let page = page_size(data.len() as u64);
    let mut out = format!("{page}:");
    for p in data.chunks(page as usize) {
        out.push_str(&format!("{:08x}", crc32fast::hash(p)));
    }
    out
}

/// Page checksums read back from an object's metadata.
#[derive(Debug, PartialEq, Eq)]
pub struct PageChecksums {
    pub page: u64,
    crcs: Vec<u32>,
}

impl PageChecksums {
    /// None for a value this version did not write (then nothing is checked).
    pub fn parse(value: &str) -> Option<PageChecksums> {
        let (page, hex) = value.split_once(':')?;
        let page: u64 = page.parse().ok()?;
        if page < MIN_PAGE || !page.is_power_of_two() || !hex.len().is_multiple_of(8) {
            return None;
        }
        let crcs = (0..hex.len() / 8)
            .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
            .collect::<Option<Vec<u32>>>()?;
        Some(PageChecksums { page, crcs })
    }

    /// Checks `body`, the object's bytes from `start` (a multiple of the
    /// page size) to a page boundary or to the object's end, `total`.
    /// Says which page differs, if one does.
    pub fn check(&self, body: &[u8], start: u64, total: u64) -> Result<(), String> {
        if !start.is_multiple_of(self.page) {
            return Err(format!("a read from {start} is not on a page boundary"));
        }
        let first = start / self.page;
        for (i, bytes) in body.chunks(self.page as usize).enumerate() {
            let index = first + i as u64;
            let page_start = index * self.page;
            let page_len = self.page.min(total.saturating_sub(page_start));
            if bytes.len() as u64 != page_len {
                return Err(format!(
                    "page {index} came with {} of its {page_len} bytes",
                    bytes.len()
                ));
            }
            let recorded = self.crcs.get(index as usize).copied();
            let computed = crc32fast::hash(bytes);
            if recorded != Some(computed) {
                return Err(format!(
                    "page {index} (bytes {page_start}..{}) has checksum {computed:08x}, recorded {}",
                    page_start + page_len,
                    recorded.map_or("none".to_string(), |c| format!("{c:08x}"))
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn whole_objects_and_page_aligned_parts_check_and_a_changed_byte_does_not() {
        for len in [
            1usize,
            1000,
            64 << 10,
            (64 << 10) + 1,
            4 << 20,
            (8 << 20) + 5,
        ] {
            let d = data(len);
            let meta = record(&d);
            assert!(meta.len() < 1200, "{len}: {} bytes of metadata", meta.len());
            let c = PageChecksums::parse(&meta).unwrap();
            let total = len as u64;
            c.check(&d, 0, total).unwrap();
            // Page-aligned parts, to a page boundary or the end: all of
            // them for small objects, those from or to the ends for large.
            let pages = total.div_ceil(c.page);
            let ends = |p: u64| pages <= 8 || p < 2 || p + 2 >= pages;
            for first in (0..pages).filter(|p| ends(*p)) {
                for last in (first..pages).filter(|p| ends(*p)) {
                    let from = first * c.page;
                    let to = ((last + 1) * c.page).min(total);
                    c.check(&d[from as usize..to as usize], from, total)
                        .unwrap();
                }
            }
            let mut bad = d.clone();
            bad[len / 2] ^= 0x10;
            assert!(c.check(&bad, 0, total).is_err(), "{len}");
        }
    }

    #[test]
    fn parts_that_are_not_whole_pages_and_foreign_values_are_refused() {
        let d = data(200 << 10);
        let c = PageChecksums::parse(&record(&d)).unwrap();
        assert_eq!(c.page, MIN_PAGE);
        assert!(c.check(&d[1..], 1, d.len() as u64).is_err());
        assert!(c.check(&d[..1000], 0, d.len() as u64).is_err());
        for foreign in [
            "",
            "abc",
            "65536:xyz",
            "1000:00000000",
            "65536:0000000",
            "x:00000000",
        ] {
            assert_eq!(PageChecksums::parse(foreign), None, "{foreign:?}");
        }
        assert_eq!(page_size(1 << 30), 8 << 20);
    }
}
