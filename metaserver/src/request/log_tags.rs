//! How a `WriteRequest` is tagged in the Raft log (and so in the data dir).
//!
//! Reads and writes were once variants of one enum, and the log recorded a
//! write by its variant's index in that enum. They are two types now, so a
//! write's own index would differ from what logs already on disk hold. The
//! log keeps the old tags instead: a write is encoded exactly as before
//! (tag, then fields), and the tag is looked up by the variant's name in
//! `TAGS`. New writes take new tags at the end of `TAGS`; a tag is never
//! reused or moved. (Read tags in `TAGS` were never written to a log; they
//! stay so that the write tags after them keep their numbers.)
//!
//! Used as `#[serde(with = "log_tags")]` on `LogRequest::req`: serde's
//! derived code for `WriteRequest` runs unchanged, wrapped in a serializer
//! and a deserializer that swap the variant index for the stored tag.

use serde::de::{self, DeserializeSeed, EnumAccess, IntoDeserializer, Visitor};
use serde::ser::{self, Impossible};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::WriteRequest;

/// Stored tags: a variant's tag is its position here.
const TAGS: &[&str] = &[
    "GetClusterMap", // a read; never stored
    "RegisterNode",
    "UnregisterNode",
    "CreateFs",
    "MarkFsReady",
    "GetFs",          // a read; never stored
    "ListFs",         // a read; never stored
    "ListPartitions", // a read; never stored
    "AllocSliceIds",
    "InitPartition",
    "InitRoot",
    "Lookup",  // a read; never stored
    "GetAttr", // a read; never stored
    "SetAttr",
    "Create",
    "Link",
    "Unlink",
    "Rmdir",
    "Rename",
    "ReadDir",   // a read; never stored
    "ReadChunk", // a read; never stored
    "WriteSlices",
    "Usage",      // a read; never stored
    "ListInodes", // a read; never stored
    "TxPrepare",
    "TxCommit",
    "TxResolve",
    "TxFinish",
    "TxForget",
    "ListIntents", // a read; never stored
    "AddPartition",
    "CreateFsSized",
    "TxBegin",
    "SetTrashDays",
    "GetTrashDays", // a read; never stored
    "HoldInodes",
    "GarbageWork", // a read; never stored
    "PurgeTrash",
    "AckDeletions",
    "CompactChunk",
    "ListTrash", // a read; never stored
    "RestoreTrash",
    "ListChunks", // a read; never stored
    "GetXattr",   // a read; never stored
    "ListXattrs", // a read; never stored
    "SetXattr",
    "RemoveXattr",
    "RenameWith",
    "PunchHole",
    "SetLock",
    "GetLock", // a read; never stored
    "ReleaseLocks",
    "RenewLocks",
    "ReserveAppend",
    "LiveUsage", // a read; never stored
    "CreateSnapshot",
    "ListSnapshots", // a read; never stored
    "SnapshotReady",
    "DeleteSnapshot",
    "SetFreeze",
    "CopyFs",
    "DumpRows", // a read; never stored
    "LoadRows",
    "SealSnapshot",
    "SetBorrowed",
    "RaiseSliceFloor",
    "CopyInodes",
    "DropFs",
    "GetAttrAndChunk", // a read; never stored
    "PutToken",
    "RevokeToken",
    "SetQuota",
    "DeleteQuota",
    "SetQuotaUsage",
    "SetOwnerQuota",
    "DeleteOwnerQuota",
    "QuotaBudget",
    "ReserveInos",
    "CreateFile",
];

fn tag_of(variant: &str) -> Option<u32> {
    TAGS.iter().position(|t| *t == variant).map(|i| i as u32)
}

pub fn serialize<S: Serializer>(req: &WriteRequest, s: S) -> Result<S::Ok, S::Error> {
    req.serialize(Tagged(s))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<WriteRequest, D::Error> {
    WriteRequest::deserialize(Untagged(d))
}

/// Passes an enum's variant to the inner serializer under its stored tag.
/// `WriteRequest`'s derived `Serialize` calls exactly one of the `*_variant`
/// methods; every other call is a bug and fails.
struct Tagged<S>(S);

impl<S: Serializer> Tagged<S> {
    fn tag(variant: &'static str) -> Result<u32, S::Error> {
        tag_of(variant).ok_or_else(|| {
            ser::Error::custom(format!(
                "write request {variant} has no log tag: add it at the end of log_tags::TAGS"
            ))
        })
    }
}

fn not_an_enum<E: ser::Error>() -> E {
    E::custom("log_tags encodes only the write request enum")
}

macro_rules! refuse {
    ($($name:ident($($arg:ty),*) -> $ret:ty;)*) => {
        $(fn $name(self, $(_: $arg),*) -> Result<$ret, Self::Error> {
            Err(not_an_enum())
        })*
    };
}

impl<S: Serializer> Serializer for Tagged<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Impossible<S::Ok, S::Error>;
    type SerializeTuple = Impossible<S::Ok, S::Error>;
    type SerializeTupleStruct = Impossible<S::Ok, S::Error>;
    type SerializeTupleVariant = S::SerializeTupleVariant;
    type SerializeMap = Impossible<S::Ok, S::Error>;
    type SerializeStruct = Impossible<S::Ok, S::Error>;
    type SerializeStructVariant = S::SerializeStructVariant;

    fn serialize_unit_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_unit_variant(name, Self::tag(variant)?, variant)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, Self::tag(variant)?, variant, value)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<S::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, Self::tag(variant)?, variant, len)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<S::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, Self::tag(variant)?, variant, len)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(not_an_enum())
    }

    refuse! {
        serialize_bool(bool) -> S::Ok;
        serialize_i8(i8) -> S::Ok;
        serialize_i16(i16) -> S::Ok;
        serialize_i32(i32) -> S::Ok;
        serialize_i64(i64) -> S::Ok;
        serialize_u8(u8) -> S::Ok;
        serialize_u16(u16) -> S::Ok;
        serialize_u32(u32) -> S::Ok;
        serialize_u64(u64) -> S::Ok;
        serialize_f32(f32) -> S::Ok;
        serialize_f64(f64) -> S::Ok;
        serialize_char(char) -> S::Ok;
        serialize_str(&str) -> S::Ok;
        serialize_bytes(&[u8]) -> S::Ok;
        serialize_none() -> S::Ok;
        serialize_unit() -> S::Ok;
        serialize_unit_struct(&'static str) -> S::Ok;
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
    }
}

/// Reads an enum whose variant is given by its stored tag: the tag is
/// turned into the variant's name, which the derived code looks up.
struct Untagged<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Untagged<D> {
    type Error = D::Error;

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0
            .deserialize_enum(name, variants, EnumVisitor(visitor))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, D::Error> {
        Err(de::Error::custom(
            "log_tags decodes only the write request enum",
        ))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

struct EnumVisitor<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for EnumVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.0.expecting(f)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(TaggedAccess(data))
    }
}

struct TaggedAccess<A>(A);

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for TaggedAccess<A> {
    type Error = A::Error;
    type Variant = A::Variant;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, A::Variant), A::Error> {
        self.0.variant_seed(TagSeed(seed))
    }
}

/// Reads a stored tag and hands the derived code the variant's name.
struct TagSeed<V>(V);

impl<'de, V: DeserializeSeed<'de>> DeserializeSeed<'de> for TagSeed<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let tag = u32::deserialize(d)?;
        let name = TAGS.get(tag as usize).ok_or_else(|| {
            de::Error::custom(format!(
                "log record with unknown request tag {tag} (written by a newer Strata?)"
            ))
        })?;
        // A read's tag names no write variant: the derived code refuses it.
        self.0.deserialize(name.into_deserializer())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{LogRequest, Origin, RenameMode, TxStep, XattrMode};
    use crate::types::*;

    fn encode(e: &LogRequest) -> String {
        let b = bincode::serde::encode_to_vec(e, bincode::config::standard()).unwrap();
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn decode(hex: &str) -> Result<LogRequest, bincode::error::DecodeError> {
        let b: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        bincode::serde::decode_from_slice(&b, bincode::config::standard()).map(|(v, _)| v)
    }

    /// Log records as the build before the split of reads and writes wrote
    /// them (printed by it for these very requests): they still decode to
    /// the same requests, and encoding gives the same bytes.
    #[test]
    fn records_keep_the_encoding_they_had_before_reads_and_writes_were_split() {
        let at = Timestamp {
            sec: 1_700_000_000,
            nsec: 5,
        };
        let origin = Some(Origin {
            client: 7,
            seq: 9,
            done_below: 3,
        });
        let cases = [
            (
                WriteRequest::RegisterNode {
                    id: 2,
                    addr: "127.0.0.1:7700".into(),
                    groups: vec![0, 1],
                },
                "01020e3132372e302e302e313a3737303002000101070903fc00e2a7ca05",
            ),
            (
                WriteRequest::Create {
                    fs: 1,
                    parent: 1,
                    name: b"f".to_vec(),
                    new: NewInode {
                        kind: FileType::Symlink,
                        mode: 0o644,
                        uid: 1,
                        gid: 2,
                        rdev: 0,
                        symlink: Some(b"t".to_vec()),
                    },
                    now: at,
                },
                "0e0101016602fba401010200010174fc00e2a7ca0501070903fc00e2a7ca05",
            ),
            (
                WriteRequest::TxResolve { tx: 99 },
                "1a6301070903fc00e2a7ca05",
            ),
            (
                WriteRequest::SetXattr {
                    fs: 1,
                    ino: 5,
                    name: b"user.a".to_vec(),
                    value: b"v".to_vec(),
                    mode: XattrMode::Create,
                    now: at,
                },
                "2d010506757365722e61017601fc00e2a7ca0501070903fc00e2a7ca05",
            ),
            (
                WriteRequest::RenameWith {
                    fs: 1,
                    parent: 1,
                    name: b"a".to_vec(),
                    new_parent: 2,
                    new_name: b"b".to_vec(),
                    mode: RenameMode::Exchange,
                    now: at,
                },
                "2f0101016102016202fc00e2a7ca0501070903fc00e2a7ca05",
            ),
            (
                WriteRequest::DropFs { fs: 3, source: 1 },
                "43030101070903fc00e2a7ca05",
            ),
        ];
        for (req, hex) in cases {
            let entry = LogRequest { req, origin, at };
            assert_eq!(encode(&entry), hex, "{:?}", entry.req);
            assert_eq!(decode(hex).unwrap(), entry);
        }
        // A prepare with the steps of a mkdir in another group (steps are
        // also kept in intent rows), without an origin.
        let prepare = LogRequest {
            req: WriteRequest::TxPrepare {
                fs: 1,
                tx: 5,
                coord: 2,
                participants: vec![3],
                steps: vec![
                    TxStep::CreateInode {
                        new: NewInode::plain(FileType::Dir, 0o755, 3, 4),
                        parent: 1,
                    },
                    TxStep::PutDentry {
                        parent: 1,
                        name: b"d".to_vec(),
                        ino: 77,
                        kind: FileType::Dir,
                        replace: None,
                    },
                    TxStep::TouchDir { ino: 1, nlink: 1 },
                ],
                now: at,
            },
            origin: None,
            at,
        };
        let hex =
            "180105020103030001fbed010304000001010101644d0100060102fc00e2a7ca0500fc00e2a7ca05";
        assert_eq!(encode(&prepare), hex);
        assert_eq!(decode(hex).unwrap(), prepare);
    }

    /// Catches the variant names the derived `Deserialize` of
    /// `WriteRequest` knows.
    struct Variants;

    impl<'de> Deserializer<'de> for Variants {
        type Error = de::value::Error;

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom(variants.join(",")))
        }

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not an enum"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct identifier ignored_any
        }
    }

    #[test]
    fn every_write_has_a_tag_of_its_own() {
        let err = WriteRequest::deserialize(Variants).unwrap_err().to_string();
        let writes: Vec<&str> = err.split(',').collect();
        assert!(writes.len() > 40, "{err}");
        for w in &writes {
            assert!(tag_of(w).is_some(), "write {w} has no log tag");
        }
        let mut tags = TAGS.to_vec();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), TAGS.len(), "a tag is listed twice");
    }

    #[test]
    fn a_reads_tag_or_an_unknown_tag_does_not_decode() {
        // Tag 0 is GetClusterMap (a read), 200 is past the table.
        assert!(decode("0001070903fc00e2a7ca05").is_err());
        assert!(decode("c8010001070903fc00e2a7ca05").is_err());
    }
}
