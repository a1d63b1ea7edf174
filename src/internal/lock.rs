//! How the binaries take a lock.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`. A panic elsewhere leaves plain values behind (every state
/// behind these locks is written whole or counted), still usable: the
/// poison is ignored rather than spread.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
