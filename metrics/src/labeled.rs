//! A metric family whose children are found again without hashing the
//! label with SipHash and taking the family's lock: each request counts
//! several of them, and `Family::get_or_create` was most of what metrics
//! cost a metadata operation (callgrind, see bench/metrics_cost.sh).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::RwLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::{Family, MetricConstructor};

/// FNV-1a: the labels are a few short static names, chosen by the code,
/// not by anyone who could make them collide.
#[derive(Default)]
pub struct FnvHasher(u64);

impl Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `Family` (registered and encoded as usual) with its children also
/// kept in a map keyed by a cheap hash; a child's handle shares the
/// family's value, so counting through either is the same.
pub struct Labeled<S, M, C = fn() -> M> {
    family: Family<S, M, C>,
    children: RwLock<HashMap<S, M, BuildHasherDefault<FnvHasher>>>,
}

impl<S, M, C> Labeled<S, M, C>
where
    S: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug,
    M: Clone,
    C: MetricConstructor<M>,
{
    pub fn new(family: Family<S, M, C>) -> Self {
        Labeled {
            family,
            children: RwLock::new(HashMap::default()),
        }
    }

    /// The family, to register.
    pub fn family(&self) -> Family<S, M, C>
    where
        Family<S, M, C>: Clone,
    {
        self.family.clone()
    }

    /// Runs `f` on the child for `label`, making it first if needed.
    pub fn with<R>(&self, label: &S, f: impl FnOnce(&M) -> R) -> R {
        if let Some(m) = self.children.read().unwrap().get(label) {
            return f(m);
        }
        let m = self.family.get_or_create(label).clone();
        let r = f(&m);
        self.children.write().unwrap().insert(label.clone(), m);
        r
    }
}

impl<S, M> Default for Labeled<S, M, fn() -> M>
where
    S: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug,
    M: Clone + Default,
{
    fn default() -> Self {
        Labeled::new(Family::new_with_constructor(M::default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Op {
        op: &'static str,
    }

    #[test]
    fn counts_through_the_map_reach_the_family() {
        let l: Labeled<Op, Counter> = Labeled::default();
        let family = l.family();
        for _ in 0..3 {
            l.with(&Op { op: "lookup" }, |c| c.inc());
        }
        l.with(&Op { op: "read" }, |c| c.inc());
        assert_eq!(family.get_or_create(&Op { op: "lookup" }).get(), 3);
        assert_eq!(family.get_or_create(&Op { op: "read" }).get(), 1);
    }
}
