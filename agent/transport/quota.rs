//! A count of what peers hold at once, in total and per peer uid, with a
//! place given back when its holder is dropped. Connections and subscribers
//! are each bounded by one.

use execwatch::internal::lock::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Places held by peer uid (`None`: a peer whose credentials are unknown).
type Held = Arc<Mutex<HashMap<Option<u32>, usize>>>;

/// At most `total` places at once, `per_uid` of them for one peer uid.
#[derive(Clone)]
pub struct Quota {
    held: Held,
    total: usize,
    per_uid: usize,
}

/// Which bound a new place would break, and how many are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// All peers together hold this many, the total.
    Total(usize),
    /// This peer uid holds this many, its share.
    PerUid(usize),
}

/// One place, given back on drop.
pub struct Place {
    held: Held,
    uid: Option<u32>,
}

impl Quota {
    /// A quota of `total` places, `per_uid` for one uid.
    pub fn new(total: usize, per_uid: usize) -> Self {
        Self {
            held: Arc::default(),
            total,
            per_uid,
        }
    }

    /// A place for a peer with `uid`, or the bound it would break.
    pub fn take(&self, uid: Option<u32>) -> Result<Place, Over> {
        let mut held = lock(&self.held);
        let total: usize = held.values().sum();
        let mine = held.get(&uid).copied().unwrap_or(0);
        if total >= self.total {
            return Err(Over::Total(total));
        }
        if mine >= self.per_uid {
            return Err(Over::PerUid(mine));
        }
        *held.entry(uid).or_default() += 1;
        Ok(Place {
            held: self.held.clone(),
            uid,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        held.entry(self.uid).and_modify(|n| *n -= 1);
        held.retain(|_, n| *n > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_uid_and_in_total_and_given_back() {
        let quota = Quota::new(3, 2);
        let a1 = quota.take(Some(1)).unwrap();
        let _a2 = quota.take(Some(1)).unwrap();
        assert_eq!(quota.take(Some(1)).err(), Some(Over::PerUid(2)));
        let _b1 = quota.take(Some(2)).unwrap();
        assert_eq!(quota.take(None).err(), Some(Over::Total(3)));
        drop(a1);
        assert!(quota.take(None).is_ok(), "a place given back is free again");
    }
}
