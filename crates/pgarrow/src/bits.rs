//! Bitmaps built a 64-bit word at a time: a row appends one bit per column, so appending must be a
//! few instructions (arrow's `BooleanBufferBuilder::append` grows and indexes its byte buffer per
//! bit, about a tenth of decoding in profiles).

use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer};

/// Bits in Arrow's order (bit `i` is bit `i % 8` of byte `i / 8`).
pub(crate) struct Bits {
    /// Full words, little-endian, so their bytes are Arrow's bitmap.
    words: Vec<u64>,
    /// The word being filled: its bits below `len % 64`.
    current: u64,
    len: usize,
    zeros: usize,
}

impl Bits {
    pub(crate) fn new(reserve: usize) -> Self {
        Bits {
            words: Vec::with_capacity(reserve.div_ceil(64)),
            current: 0,
            len: 0,
            zeros: 0,
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, bit: bool) {
        self.current |= u64::from(bit) << (self.len % 64);
        self.zeros += usize::from(!bit);
        self.len += 1;
        if self.len.is_multiple_of(64) {
            self.words.push(self.current.to_le());
            self.current = 0;
        }
    }

    /// The bits so far; starts over empty, with room for as many.
    pub(crate) fn finish(&mut self) -> BooleanBuffer {
        let len = self.len;
        let mut words = std::mem::replace(&mut self.words, Vec::with_capacity(len.div_ceil(64)));
        if !len.is_multiple_of(64) {
            words.push(self.current.to_le());
        }
        self.current = 0;
        self.len = 0;
        self.zeros = 0;
        BooleanBuffer::new(Buffer::from_vec(words), 0, len)
    }
}

/// A validity bitmap: `None` when every value is valid, as arrow's builders give.
pub(crate) struct Validity(Bits);

impl Validity {
    pub(crate) fn new(reserve: usize) -> Self {
        Validity(Bits::new(reserve))
    }

    #[inline]
    pub(crate) fn append_non_null(&mut self) {
        self.0.push(true);
    }

    #[inline]
    pub(crate) fn append_null(&mut self) {
        self.0.push(false);
    }

    pub(crate) fn finish(&mut self) -> Option<NullBuffer> {
        let any_null = self.0.zeros > 0;
        let bits = self.0.finish();
        any_null.then(|| NullBuffer::new(bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_match_arrows_builder_across_word_edges() {
        for n in [0, 1, 63, 64, 65, 127, 128, 200] {
            let pattern = |i: usize| !i.is_multiple_of(3) && i % 64 != 5;
            let mut ours = Bits::new(4);
            let mut theirs = arrow::array::BooleanBufferBuilder::new(4);
            for i in 0..n {
                ours.push(pattern(i));
                theirs.append(pattern(i));
            }
            assert_eq!(ours.finish(), theirs.finish(), "{n} bits");
            // Finishing starts over.
            ours.push(true);
            assert_eq!(ours.finish().len(), 1);
        }
    }

    #[test]
    fn validity_is_none_without_nulls_and_counts_them_otherwise() {
        let mut v = Validity::new(8);
        (0..100).for_each(|_| v.append_non_null());
        assert!(v.finish().is_none());
        for i in 0..100u32 {
            if i.is_multiple_of(10) {
                v.append_null();
            } else {
                v.append_non_null();
            }
        }
        let nulls = v.finish().expect("nulls");
        assert_eq!((nulls.len(), nulls.null_count()), (100, 10));
        assert!(nulls.is_null(0) && nulls.is_valid(1) && nulls.is_null(90));
    }
}
