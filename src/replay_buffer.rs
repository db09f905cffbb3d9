//! The iDEM replay buffer: FIFO with a fixed capacity (oldest samples leave first), sampled
//! uniformly with replacement.

use rand::RngExt;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// A FIFO buffer of `dim`-dimensional f32 points.
#[derive(Clone, Debug)]
pub struct ReplayBuffer {
    dim: usize,
    capacity: usize,
    /// Ring storage, `capacity × dim` once full.
    data: Vec<f32>,
    /// Slot the next point goes to once the buffer is full.
    head: usize,
}

impl ReplayBuffer {
    /// An empty buffer for `capacity` points.
    pub fn new(dim: usize, capacity: usize) -> Result<Self> {
        if dim == 0 || capacity == 0 {
            return Err(Error::Config(format!(
                "replay buffer needs a positive dim and capacity, got {dim} and {capacity}"
            )));
        }
        Ok(Self {
            dim,
            capacity,
            data: Vec::new(),
            head: 0,
        })
    }

    /// Coordinates per point.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Points held.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }
    /// Whether the buffer holds no point.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Maximum number of points.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Add points `[n, dim]`; when full, each new point replaces the oldest.
    pub fn push(&mut self, xs: &[f32]) -> Result<()> {
        if !xs.len().is_multiple_of(self.dim) {
            return Err(Error::Shape(format!(
                "{} values are not whole {}-dimensional points",
                xs.len(),
                self.dim
            )));
        }
        for p in xs.chunks_exact(self.dim) {
            if self.len() < self.capacity {
                self.data.extend_from_slice(p);
            } else {
                self.data[self.head * self.dim..(self.head + 1) * self.dim].copy_from_slice(p);
                self.head = (self.head + 1) % self.capacity;
            }
        }
        Ok(())
    }

    /// `n` points drawn uniformly with replacement, `[n, dim]`.
    pub fn sample(&self, n: usize, rng: &mut Rng) -> Result<Vec<f32>> {
        let len = self.len();
        if len == 0 {
            return Err(Error::Config(
                "cannot sample from an empty replay buffer".into(),
            ));
        }
        let mut out = Vec::with_capacity(n * self.dim);
        for _ in 0..n {
            let i = rng.random_range(0..len);
            out.extend_from_slice(&self.data[i * self.dim..(i + 1) * self.dim]);
        }
        Ok(out)
    }

    /// The contents oldest first, `[len, dim]` (for checkpoints).
    pub fn to_vec(&self) -> Vec<f32> {
        let split = self.head * self.dim;
        let mut v = self.data[split..].to_vec();
        v.extend_from_slice(&self.data[..split]);
        v
    }

    /// Slot the next point goes to once the buffer is full (0 while it fills): with
    /// [`ReplayBuffer::to_vec`], what a checkpoint needs to restore the buffer exactly.
    pub fn head(&self) -> usize {
        self.head
    }

    /// The buffer [`ReplayBuffer::to_vec`] and [`ReplayBuffer::head`] came from: the same points
    /// in the same ring slots, so [`ReplayBuffer::sample`] draws the same points from the same
    /// random stream (a resumed run is the run it continues, also after the buffer wrapped).
    pub fn restore(dim: usize, capacity: usize, oldest_first: &[f32], head: usize) -> Result<Self> {
        let mut b = Self::new(dim, capacity)?;
        b.push(oldest_first)?;
        let len = b.len();
        if head > 0 && (len < capacity || head >= capacity) {
            return Err(Error::Config(format!(
                "replay buffer head {head} does not fit {len} points in a capacity of {capacity}"
            )));
        }
        // to_vec = data[head..] ++ data[..head]: the newest `head` points go back to the front
        b.data.rotate_right(head * dim);
        b.head = head;
        Ok(b)
    }

    /// The newest `n` points (fewer if the buffer holds fewer), oldest first.
    pub fn newest(&self, n: usize) -> Vec<f32> {
        let all = self.to_vec();
        let k = n.min(self.len());
        all[all.len() - k * self.dim..].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    #[test]
    fn fifo_replaces_the_oldest_and_round_trips() {
        let mut b = ReplayBuffer::new(1, 3).unwrap();
        b.push(&[1.0, 2.0]).unwrap();
        assert_eq!(b.to_vec(), vec![1.0, 2.0]);
        b.push(&[3.0, 4.0, 5.0]).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b.to_vec(), vec![3.0, 4.0, 5.0]);
        assert_eq!(b.newest(2), vec![4.0, 5.0]);
        let mut c = ReplayBuffer::new(1, 3).unwrap();
        c.push(&b.to_vec()).unwrap();
        c.push(&[6.0]).unwrap();
        b.push(&[6.0]).unwrap();
        assert_eq!(b.to_vec(), c.to_vec());
        assert!(b.push(&[1.0, 2.0]).is_ok());
        let mut d = ReplayBuffer::new(2, 3).unwrap();
        assert!(d.push(&[1.0]).is_err());
    }

    #[test]
    fn a_restored_buffer_samples_and_fills_like_the_original() {
        let mut b = ReplayBuffer::new(2, 5).unwrap();
        b.push(&(0..16).map(|v| v as f32).collect::<Vec<_>>())
            .unwrap(); // 8 points into 5 slots: wrapped, head 3
        assert_eq!(b.head(), 3);
        let mut r = ReplayBuffer::restore(2, 5, &b.to_vec(), b.head()).unwrap();
        assert_eq!(r.to_vec(), b.to_vec());
        assert_eq!(
            r.sample(20, &mut stream(3, 1)).unwrap(),
            b.sample(20, &mut stream(3, 1)).unwrap()
        );
        r.push(&[100.0, 101.0]).unwrap();
        b.push(&[100.0, 101.0]).unwrap();
        assert_eq!(r.to_vec(), b.to_vec());
        assert_eq!(r.head(), b.head());
        // without the head (old checkpoints) the same points sit in other slots
        let plain = ReplayBuffer::restore(2, 5, &b.to_vec(), 0).unwrap();
        assert_eq!(plain.to_vec(), b.to_vec());
        assert!(ReplayBuffer::restore(2, 5, &[1.0, 2.0], 1).is_err());
        assert!(ReplayBuffer::restore(2, 5, &b.to_vec(), 5).is_err());
    }

    #[test]
    fn sampling_is_uniform_with_replacement() {
        let mut b = ReplayBuffer::new(1, 4).unwrap();
        b.push(&[0.0, 1.0, 2.0, 3.0]).unwrap();
        let s = b.sample(40_000, &mut stream(5, 0)).unwrap();
        for k in 0..4 {
            let f = s.iter().filter(|&&v| v == k as f32).count() as f64 / 40_000.0;
            assert!((f - 0.25).abs() < 0.01, "{k}: {f}"); // binomial sd 0.0022
        }
        assert!(ReplayBuffer::new(1, 2)
            .unwrap()
            .sample(1, &mut stream(0, 0))
            .is_err());
    }
}
