//! Deterministic training batches: a batch depends only on (seed, step), so a resumed run sees
//! exactly the data an uninterrupted one would have.

use rand::{RngCore, SeedableRng};
use rand_pcg::Pcg64;

use super::Dataset;

/// SplitMix64's finaliser: a cheap, well-mixing bijection on u64.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The RNG seed for epoch `epoch` of a run seeded with `seed`.
fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    mix64(seed ^ mix64(epoch ^ 0x6570_6f63_6873_6565))
}

/// Whether global sample `k` of a run seeded with `seed` is mirrored.
fn flip_bit(seed: u64, k: u64) -> bool {
    mix64(mix64(seed ^ 0x666c_6970_666c_6970) ^ k) >> 63 == 1
}

/// A uniform integer in 0..=bound, without modulo bias (Lemire's multiply-and-reject), written
/// out here so the order does not depend on the rand crate's version.
fn below_or_equal(rng: &mut Pcg64, bound: u64) -> u64 {
    let range = bound.wrapping_add(1);
    if range == 0 {
        return rng.next_u64();
    }
    let threshold = range.wrapping_neg() % range;
    loop {
        let m = u128::from(rng.next_u64()) * u128::from(range);
        if (m as u64) >= threshold {
            return (m >> 64) as u64;
        }
    }
}

/// The permutation of 0..len used for `epoch` (Fisher-Yates).
pub fn epoch_permutation(seed: u64, epoch: u64, len: usize) -> Vec<usize> {
    let mut rng = Pcg64::seed_from_u64(epoch_seed(seed, epoch));
    let mut perm: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = below_or_equal(&mut rng, i as u64) as usize;
        perm.swap(i, j);
    }
    perm
}

/// Deterministic batches: the same (seed, step) always gives the same batch, so a resumed run
/// continues exactly.
///
/// Global sample k = step * batch + j belongs to epoch k / len at position k % len of that
/// epoch's permutation (seeded by a mix of seed and epoch); whether it is mirrored is decided by
/// (seed, k) when the data set allows flips.
pub struct Batcher {
    pub seed: u64,
    pub batch: usize,
    /// (epoch, data set length) the cached permutation belongs to.
    cached: Option<(u64, usize)>,
    perm: Vec<usize>,
}

impl Batcher {
    pub fn new(seed: u64, batch: usize) -> Batcher {
        assert!(batch > 0, "Batcher: batch size must be at least 1");
        Batcher {
            seed,
            batch,
            cached: None,
            perm: Vec::new(),
        }
    }

    /// The data set index and mirror decision of global sample `k`.
    pub fn sample(&mut self, data: &Dataset, k: u64) -> (usize, bool) {
        let len = data.len();
        assert!(len > 0, "Batcher: the data set is empty");
        let epoch = k / len as u64;
        let pos = (k % len as u64) as usize;
        if self.cached != Some((epoch, len)) {
            self.perm = epoch_permutation(self.seed, epoch, len);
            self.cached = Some((epoch, len));
        }
        (self.perm[pos], data.flip && flip_bit(self.seed, k))
    }

    /// Fills `out` (batch * image_len floats, in [-1,1]) for training step `step`; returns the
    /// dataset indices used.
    pub fn fill(&mut self, data: &Dataset, step: u64, out: &mut Vec<f32>) -> Vec<usize> {
        let n = data.image_len();
        out.clear();
        out.resize(self.batch * n, 0.0);
        let first = step
            .checked_mul(self.batch as u64)
            .expect("Batcher: step * batch overflows u64");
        let mut indices = Vec::with_capacity(self.batch);
        for (j, chunk) in out.chunks_exact_mut(n).enumerate() {
            let (i, flip) = self.sample(data, first + j as u64);
            data.write_image(i, flip, chunk);
            indices.push(i);
        }
        indices
    }
}
