//! The kernel's CPU list format (`0-3,8-11`), as in `cpu/online`, `node*/cpulist` and
//! `thread_siblings_list`. sysfs only ever prints plain ranges, so the stride form that
//! `bitmap_parselist` also accepts (`0-7:2/4`) is rejected rather than half-supported.

/// The largest CPU number accepted. Linux's `NR_CPUS` tops out at 8192; a bound keeps a corrupt
/// `0-4294967295` from allocating gigabytes.
pub const MAX_CPU: usize = 16_383;

/// Why a CPU list did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuListError {
    /// An element is not a number or a range of numbers.
    #[error("not a CPU number or range: {0:?}")]
    BadElement(String),
    /// A range runs backwards.
    #[error("range runs backwards: {0:?}")]
    Backwards(String),
    /// A CPU number above [`MAX_CPU`].
    #[error("CPU number above {MAX_CPU}: {0:?}")]
    TooLarge(String),
}

/// Parses a CPU list into sorted, de-duplicated CPU numbers. Surrounding whitespace (the trailing
/// newline of a sysfs file) is ignored; an empty list (a memory-only NUMA node) is valid.
pub fn parse_cpulist(text: &str) -> Result<Vec<usize>, CpuListError> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Ok(cpus);
    }
    for element in text.split(',') {
        let element = element.trim();
        let number = |s: &str| -> Result<usize, CpuListError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CpuListError::BadElement(element.to_owned()));
            }
            match s.parse::<usize>() {
                Ok(n) if n <= MAX_CPU => Ok(n),
                _ => Err(CpuListError::TooLarge(element.to_owned())),
            }
        };
        let (first, last) = match element.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(element)?;
                (n, n)
            }
        };
        if last < first {
            return Err(CpuListError::Backwards(element.to_owned()));
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Prints CPU numbers as the kernel does: ascending, runs of two or more collapsed into `a-b`.
/// The input need not be sorted; duplicates are dropped.
pub fn format_cpulist(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kernel_examples() {
        assert_eq!(parse_cpulist("0-3,8\n").unwrap(), vec![0, 1, 2, 3, 8]);
        assert_eq!(parse_cpulist("0").unwrap(), vec![0]);
        assert_eq!(parse_cpulist("\n").unwrap(), Vec::<usize>::new());
        assert_eq!(
            parse_cpulist("4-7,12-15").unwrap(),
            vec![4, 5, 6, 7, 12, 13, 14, 15]
        );
        assert_eq!(format_cpulist(&[0, 1, 2, 3, 8, 9, 10, 11]), "0-3,8-11");
        assert_eq!(format_cpulist(&[5, 0, 2, 1]), "0-2,5");
        assert_eq!(format_cpulist(&[]), "");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            parse_cpulist("3-1"),
            Err(CpuListError::Backwards(_))
        ));
        assert!(matches!(
            parse_cpulist("0-4294967295"),
            Err(CpuListError::TooLarge(_))
        ));
        assert!(matches!(
            parse_cpulist("0-7:2/4"),
            Err(CpuListError::BadElement(_))
        ));
        assert!(matches!(
            parse_cpulist("1,,2"),
            Err(CpuListError::BadElement(_))
        ));
        assert!(matches!(
            parse_cpulist("-1"),
            Err(CpuListError::BadElement(_))
        ));
    }

    proptest! {
        #[test]
        fn parse_inverts_format(set in proptest::collection::btree_set(0usize..=MAX_CPU, 0..64)) {
            let cpus: Vec<usize> = set.into_iter().collect();
            prop_assert_eq!(parse_cpulist(&format_cpulist(&cpus)).unwrap(), cpus);
        }

        #[test]
        fn garbage_never_panics(text in "\\PC{0,40}") {
            let _ = parse_cpulist(&text);
        }

        #[test]
        fn near_misses_never_panic(text in "[0-9,\\- \n:/]{0,40}") {
            if let Ok(cpus) = parse_cpulist(&text) {
                prop_assert!(cpus.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(cpus.iter().all(|&c| c <= MAX_CPU));
            }
        }
    }
}
