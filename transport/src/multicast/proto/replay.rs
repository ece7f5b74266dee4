//! Replay protection: a sliding window of packet numbers seen under one key, as in QUIC and
//! IPsec (RFC 4303, 3.4.3).

/// Packet numbers this far behind the highest seen are still checked individually; older
/// ones are refused as too old to tell.
pub(crate) const REPLAY_WINDOW: u64 = 4096;
const WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// Packet numbers seen under one key.
#[derive(Debug, Clone)]
pub(crate) struct ReplayWindow {
    /// Highest packet number accepted plus one (0: none yet).
    next: u64,
    /// Bit `n % REPLAY_WINDOW` is set when packet number `n` (within the window) was seen.
    seen: Box<[u64; WORDS]>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            next: 0,
            seen: Box::new([0; WORDS]),
        }
    }
}

impl ReplayWindow {
    /// Whether `packet_number` is new. Call only after the datagram authenticated, then
    /// [`accept`](Self::accept) it.
    pub(crate) fn is_new(&self, packet_number: u64) -> bool {
        if packet_number >= self.next {
            return true;
        }
        if self.next - packet_number > REPLAY_WINDOW {
            return false;
        }
        !self.bit(packet_number)
    }

    /// Marks `packet_number` seen.
    pub(crate) fn accept(&mut self, packet_number: u64) {
        if packet_number >= self.next {
            // Clear the bits of numbers that slide into the window unseen.
            let advance = packet_number + 1 - self.next;
            if advance >= REPLAY_WINDOW {
                self.seen.fill(0);
            } else {
                for n in self.next..=packet_number {
                    self.clear(n);
                }
            }
            self.next = packet_number + 1;
        }
        let (word, bit) = Self::position(packet_number);
        self.seen[word] |= 1 << bit;
    }

    fn position(packet_number: u64) -> (usize, u32) {
        let slot = packet_number % REPLAY_WINDOW;
        ((slot / 64) as usize, (slot % 64) as u32)
    }

    fn bit(&self, packet_number: u64) -> bool {
        let (word, bit) = Self::position(packet_number);
        self.seen[word] & (1 << bit) != 0
    }

    fn clear(&mut self, packet_number: u64) {
        let (word, bit) = Self::position(packet_number);
        self.seen[word] &= !(1 << bit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_number_once_in_any_order() {
        let mut window = ReplayWindow::default();
        for n in [5, 1, 3, 0, 4, 2, 4000, 100] {
            assert!(window.is_new(n), "{n} is new");
            window.accept(n);
            assert!(!window.is_new(n), "{n} is a replay");
        }
        assert!(window.is_new(6));
    }

    #[test]
    fn refuses_numbers_older_than_the_window() {
        let mut window = ReplayWindow::default();
        window.accept(REPLAY_WINDOW + 10);
        assert!(!window.is_new(9));
        assert!(window.is_new(11));
        window.accept(3 * REPLAY_WINDOW);
        assert!(!window.is_new(REPLAY_WINDOW + 10));
    }
}
