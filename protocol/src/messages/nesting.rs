//! Decoding depth limit of the recursive parts of a message.

use std::cell::Cell;

use serde::{Deserialize, Deserializer};

/// How deeply the recursive parts of a message (`Op::Batch`,
/// `Op::InWorker`, `Reply::Batch`) may nest in a decoded frame. Real
/// messages nest at most twice (a batch inside a worker call); without a
/// limit, a frame of `[Batch, 1]` pairs makes the recursive decoder
/// overflow the stack (an abort, not an error) at under a thousand levels.
pub const MAX_NESTING: usize = 16;

thread_local! {
    /// Recursive fields being decoded on this thread right now.
    static NESTING: Cell<usize> = const { Cell::new(0) };
}

/// One level of [`NESTING`], released when dropped (also on error).
struct NestingLevel;

impl NestingLevel {
    fn enter<E: serde::de::Error>() -> Result<NestingLevel, E> {
        NESTING.with(|n| {
            if n.get() >= MAX_NESTING {
                return Err(E::custom(format_args!(
                    "message nested deeper than {MAX_NESTING} levels"
                )));
            }
            n.set(n.get() + 1);
            Ok(NestingLevel)
        })
    }
}

impl Drop for NestingLevel {
    fn drop(&mut self) {
        NESTING.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// Decodes a recursive field one [`MAX_NESTING`] level down (the encoding
/// is unchanged: this only refuses frames that nest too deeply).
pub(crate) fn nested<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let _level = NestingLevel::enter::<D::Error>()?;
    T::deserialize(d)
}
