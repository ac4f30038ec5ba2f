//! Object keys of blocks: `{fs_uuid}/chunks/{id / 1_000_000}/{id / 1_000}/{id}_{block_index}_{block_len}`.
//! The two directory levels keep listings of one prefix small.

pub fn block_key(fs_uuid: &str, slice_id: u64, block_index: u32, block_len: u32) -> String {
    format!(
        "{fs_uuid}/chunks/{}/{}/{slice_id}_{block_index}_{block_len}",
        slice_id / 1_000_000,
        slice_id / 1_000
    )
}

/// The inverse of `block_key`; None for any key it did not make.
pub fn parse_block_key(key: &str) -> Option<(String, u64, u32, u32)> {
    let mut parts = key.rsplitn(4, '/');
    let name = parts.next()?;
    let thousands: u64 = parts.next()?.parse().ok()?;
    let millions: u64 = parts.next()?.parse().ok()?;
    let prefix = parts.next()?;
    let uuid = prefix.strip_suffix("/chunks")?;
    let mut fields = name.split('_');
    let id: u64 = fields.next()?.parse().ok()?;
    let index: u32 = fields.next()?.parse().ok()?;
    let len: u32 = fields.next()?.parse().ok()?;
    if fields.next().is_some()
        || uuid.is_empty()
        || thousands != id / 1_000
        || millions != id / 1_000_000
    {
        return None;
    }
    Some((uuid.to_string(), id, index, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_matches_the_design() {
        assert_eq!(
            block_key("u", 1_234_567, 3, 4096),
            "u/chunks/1/1234/1234567_3_4096"
        );
        assert_eq!(block_key("u", 5, 0, 1), "u/chunks/0/0/5_0_1");
    }

    #[test]
    fn keys_round_trip() {
        for (id, idx, len) in [
            (0u64, 0u32, 0u32),
            (999, 1, 4 << 20),
            (u64::MAX, u32::MAX, 7),
        ] {
            let k = block_key("fs-uuid", id, idx, len);
            assert_eq!(parse_block_key(&k), Some(("fs-uuid".into(), id, idx, len)));
        }
    }

    #[test]
    fn foreign_keys_do_not_parse() {
        for k in [
            "",
            "u/chunks/0/0/5_0",
            "u/chunks/0/1/5_0_1",
            "u/other/0/0/5_0_1",
            "/chunks/0/0/5_0_1",
            "u/chunks/0/0/5_0_1_2",
            "u/chunks/0/0/x_0_1",
        ] {
            assert_eq!(parse_block_key(k), None, "{k}");
        }
    }
}
