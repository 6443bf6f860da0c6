//! Writing a sequence of byte slices with vectored system calls that may write only part.

/// The parts of `parts` not yet written once `written` bytes of their concatenation have
/// been: whole parts after a partly written one, which is cut to its unwritten rest.
pub(crate) fn unwritten<'a>(
    parts: impl IntoIterator<Item = &'a [u8]>,
    written: usize,
) -> impl Iterator<Item = &'a [u8]> {
    let mut skip = written;
    parts.into_iter().filter_map(move |part| {
        if skip >= part.len() {
            skip -= part.len();
            return None;
        }
        let rest = &part[skip..];
        skip = 0;
        Some(rest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the unwritten rest is exact at, inside and past part boundaries (empty parts
    // are never handed back).
    #[test]
    fn unwritten_rest() {
        let parts: [&[u8]; 4] = [b"abc", b"", b"de", b"f"];
        let rest = |n| unwritten(parts, n).collect::<Vec<_>>().concat();
        for n in 0..=6 {
            assert_eq!(rest(n), b"abcdef"[n..].to_vec(), "after {n} bytes");
        }
        assert!(unwritten(parts, 7).next().is_none());
        assert!(unwritten(parts, 0).all(|p| !p.is_empty()));
    }
}
