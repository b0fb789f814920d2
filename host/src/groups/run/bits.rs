//! The bitset decisions are made on: one bit per position of a universe
//! side, so that a rule's verdicts, an exclusion, state scoping and the
//! stored memberships combine a word of 64 subjects at a time.

/// A bitset over universe positions.
#[derive(Clone, Debug, Default)]
pub struct Bits(pub(super) Vec<u64>);

impl Bits {
    /// No position set, over `n` positions.
    pub(super) fn zeros(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    /// Every one of `n` positions set, and none past them.
    pub(super) fn ones(n: usize) -> Bits {
        let mut b = Bits(vec![!0; n.div_ceil(64)]);
        if !n.is_multiple_of(64)
            && let Some(last) = b.0.last_mut()
        {
            *last = (1u64 << (n % 64)) - 1;
        }
        b
    }

    /// Whether position `i` is set.
    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
    }

    /// Sets or clears position `i`.
    pub(super) fn set(&mut self, i: usize, v: bool) {
        let w = &mut self.0[i / 64];
        if v {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }

    /// The set positions, in order.
    pub(super) fn ones_iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }
}
