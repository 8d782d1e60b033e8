//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! Autobahn 6.x wants a connection failed as soon as an invalid sequence is seen, not when the
//! message ends, so every chunk (a network read, a fragment, a piece of inflated output) is
//! checked on arrival. The bulk is checked with `simdutf8`; at most 3 bytes of a sequence cut
//! by a chunk boundary are carried to the next chunk.

/// The state carried between chunks: the unfinished tail of the last chunk.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Utf8Validator {
    /// Bytes of a multi-byte sequence cut by a chunk boundary (a valid prefix, never complete).
    partial: [u8; 4],
    /// How many bytes of `partial` are used (0 to 3).
    partial_len: u8,
}

/// The text is not UTF-8 (or can no longer become UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidUtf8;

/// Length of a UTF-8 sequence given its first byte (0 if the byte cannot start one).
fn sequence_len(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 0,
    }
}

impl Utf8Validator {
    /// Checks the next chunk of the message.
    ///
    /// # Errors
    /// [`InvalidUtf8`] as soon as the bytes seen so far cannot be the start of valid UTF-8.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            let have = usize::from(self.partial_len);
            let need = sequence_len(self.partial[0]);
            let take = (need - have).min(chunk.len());
            self.partial[have..have + take].copy_from_slice(&chunk[..take]);
            let filled = have + take;
            match std::str::from_utf8(&self.partial[..filled]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix; the chunk was too short to finish it.
                    self.partial_len = filled as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
            chunk = &chunk[take..];
        }
        match simdutf8::compat::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &chunk[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the message: a sequence left unfinished is an error. Resets the state.
    ///
    /// # Errors
    /// [`InvalidUtf8`] if the message ended inside a multi-byte sequence.
    pub(crate) fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let unfinished = self.partial_len != 0;
        *self = Self::default();
        if unfinished { Err(InvalidUtf8) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_in_pieces(data: &[u8], cuts: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| (*c).min(data.len())).collect();
        bounds.push(0);
        bounds.push(data.len());
        bounds.sort_unstable();
        for w in bounds.windows(2) {
            v.feed(&data[w[0]..w[1]])?;
        }
        v.finish()
    }

    #[test]
    fn fails_fast_on_impossible_prefix() {
        let mut v = Utf8Validator::default();
        // U+10FFFF + 1 starts with F4 90: invalid before the sequence is complete.
        assert_eq!(v.feed(&[b'a', 0xF4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(&[0xCE, 0xBA, 0xE1]), Ok(()));
        assert_eq!(v.feed(&[0xBD]), Ok(()));
        assert_eq!(v.feed(&[0xB9]), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn unfinished_sequence_at_the_end_is_invalid() {
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(&[0xE2, 0x82]), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    proptest! {
        #[test]
        fn agrees_with_std(
            data in proptest::collection::vec(prop_oneof![any::<u8>(), 0x80u8..0xC0], 0..40),
            cuts in proptest::collection::vec(0usize..40, 0..6),
        ) {
            let expected = std::str::from_utf8(&data).is_ok();
            prop_assert_eq!(check_in_pieces(&data, &cuts).is_ok(), expected);
        }

        #[test]
        fn valid_text_in_any_pieces(s in "\\PC{0,30}", cuts in proptest::collection::vec(0usize..120, 0..6)) {
            prop_assert_eq!(check_in_pieces(s.as_bytes(), &cuts), Ok(()));
        }
    }
}
