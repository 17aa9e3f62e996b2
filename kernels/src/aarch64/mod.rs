//! aarch64 NEON level.

use crate::dispatch::DotFn;
use crate::types::GgmlType;

pub fn neon_table() -> Vec<(GgmlType, DotFn)> {
    Vec::new()
}
