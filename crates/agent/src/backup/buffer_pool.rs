//! Buffers handed back by finished work, for the next piece of work: capacity allocated once and
//! reused, so multi-megabyte buffers freed on one thread do not pile up in the allocator's
//! per-thread arenas. The pool holds at most as many buffers as were ever out at once.

use std::sync::Mutex;

/// A pool of byte buffers shared between tasks and threads.
#[derive(Debug, Default)]
pub struct BufferPool(Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    /// A buffer handed back earlier, or a new empty one.
    pub fn take(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop().unwrap_or_default()
    }

    /// Keeps `buffer` (its capacity) for a later [`BufferPool::take`].
    pub fn give_back(&self, buffer: Vec<u8>) {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_with_its_capacity() {
        let pool = BufferPool::default();
        assert_eq!(pool.take().capacity(), 0, "an empty pool makes a new buffer");
        let mut buffer = pool.take();
        buffer.resize(4096, 1);
        pool.give_back(buffer);
        let again = pool.take();
        assert!(again.capacity() >= 4096);
        assert_eq!(pool.take().capacity(), 0, "one buffer given back, one taken");
    }
}
