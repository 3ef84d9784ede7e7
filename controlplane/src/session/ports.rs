//! Relay port pairs: an even RTP port and the odd RTCP port after it (RFC 3550 §11), handed out
//! from a configured range per relay interface.
//!
//! Released pairs go to the back of the queue, so a port is reused as late as possible: a late
//! packet of an ended call must not land in the next call that got its port.

use std::collections::VecDeque;
use std::ops::RangeInclusive;

/// Why a pool could not be built or could not give a pair.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    #[error("port range {first}..={last} holds no even/odd pair")]
    EmptyRange { first: u16, last: u16 },
    #[error("all {0} port pairs of interface `{1}` are in use")]
    Exhausted(usize, String),
}

/// A pool of RTP/RTCP port pairs.
#[derive(Debug)]
pub struct PortPool {
    name: String,
    free: VecDeque<u16>,
    in_use: std::collections::HashSet<u16>,
    capacity: usize,
}

impl PortPool {
    /// A pool of every even port in `range` whose odd successor is in range too.
    pub fn new(name: &str, range: RangeInclusive<u16>) -> Result<Self, PortError> {
        let (first, last) = (*range.start(), *range.end());
        // Even ports from the first even one at or above `first` (and above 0).
        let start = u32::from(first.max(2)).next_multiple_of(2);
        let free: VecDeque<u16> = (start..u32::from(last))
            .step_by(2)
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        if free.is_empty() {
            return Err(PortError::EmptyRange { first, last });
        }
        let capacity = free.len();
        Ok(Self {
            name: name.to_owned(),
            free,
            in_use: Default::default(),
            capacity,
        })
    }

    /// Takes a pair; returns its RTP (even) port.
    pub fn allocate(&mut self) -> Result<u16, PortError> {
        let port = self
            .free
            .pop_front()
            .ok_or_else(|| PortError::Exhausted(self.capacity, self.name.clone()))?;
        self.in_use.insert(port);
        Ok(port)
    }

    /// Gives a pair back. Releasing a port that is not in use does nothing.
    pub fn release(&mut self, rtp_port: u16) {
        if self.in_use.remove(&rtp_port) {
            self.free.push_back(rtp_port);
        }
    }

    /// Pairs in use.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    /// Pairs in all.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_and_fit_the_range() {
        let mut pool = PortPool::new("public", 30001..=30006).expect("pool");
        // 30002/30003 and 30004/30005 fit; 30006 has no 30007.
        assert_eq!(pool.capacity(), 2);
        assert_eq!(pool.allocate(), Ok(30002));
        assert_eq!(pool.allocate(), Ok(30004));
        assert_eq!(
            pool.allocate(),
            Err(PortError::Exhausted(2, "public".into()))
        );
    }

    #[test]
    fn released_ports_are_reused_last() {
        let mut pool = PortPool::new("p", 30000..=30009).expect("pool");
        let a = pool.allocate().expect("a");
        pool.release(a);
        pool.release(a); // twice: harmless
        let others: Vec<u16> = (0..4).map(|_| pool.allocate().expect("free")).collect();
        assert!(!others.contains(&a), "the released pair comes back last");
        assert_eq!(pool.allocate(), Ok(a));
        assert_eq!(pool.in_use(), 5);
    }

    #[test]
    fn empty_ranges_are_refused() {
        assert!(PortPool::new("p", 30001..=30001).is_err());
        assert!(PortPool::new("p", 65535..=65535).is_err());
        assert!(PortPool::new("p", 0..=1).is_err());
    }
}
