//! UTF-8 text that is either a `String` or a file mapped read-only.
//!
//! The state file is read whole by every command and kept as the text its
//! containers are slices of. Read into fresh memory, 3.8 MB (4000
//! containers) cost 1.4-6.7 ms: the kernel zeroes every page it hands out
//! (and, for the huge pages [`super::alloc`] asks for, may compact memory
//! first) before `read` copies the page cache into them. Mapped, the same
//! bytes are the page cache's own pages: 0.09-0.11 ms, touched once per
//! 4 KiB as the parse would (a small C program, three runs of each way on
//! this project's VM, kernel 6.18).
//!
//! A mapping is only as stable as the file: mvnet replaces its state file
//! by a rename and never writes it in place, so the inode mapped keeps its
//! bytes for as long as the mapping lives. A file truncated in place while
//! mapped (by hand, behind mvnet's back) would fault the process with
//! SIGBUS, which is a crash like any other: the state on disk is what it
//! was, and `mvnet restore` converges what the command left.
use std::{fmt, fs::File, io, ops::Deref, os::fd::AsRawFd, ptr::NonNull, str::Utf8Error};

/// Text shared by the records that are slices of it: a `String`, or a file
/// mapped.
pub struct FileText(Bytes);

enum Bytes {
    Owned(String),
    Mapped(Mapping),
}

/// A read-only, private mapping of a whole file.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; `&[u8]`
// of it may go to any thread, as a `Box<[u8]>`'s would.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file` (a regular file), which must be
    /// more than none.
    fn of(file: &File, len: usize) -> io::Result<Mapping> {
        // SAFETY: a new mapping at an address the kernel picks; it aliases
        // nothing of ours. MAP_PRIVATE: writes to the file after this may or
        // may not show through, and mvnet makes none (see the module
        // documentation).
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(raw.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped readable at `ptr` until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range `of` mapped; nothing borrows it past `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Why a file could not be taken as text.
#[derive(Debug)]
pub enum TextError {
    Io(io::Error),
    NotUtf8(Utf8Error),
}

impl FileText {
    /// The first `len` bytes of `file` (its size as `fstat` gave it),
    /// mapped; read into memory where the file cannot be mapped.
    pub fn of_file(file: &File, len: u64) -> Result<FileText, TextError> {
        let len =
            usize::try_from(len).map_err(|_| TextError::Io(io::ErrorKind::FileTooLarge.into()))?;
        if len == 0 {
            return Ok(FileText(Bytes::Owned(String::new())));
        }
        match Mapping::of(file, len) {
            Ok(m) => {
                std::str::from_utf8(m.bytes()).map_err(TextError::NotUtf8)?;
                Ok(FileText(Bytes::Mapped(m)))
            }
            // A filesystem that cannot map files (ENODEV): read it.
            Err(_) => {
                let mut bytes = Vec::with_capacity(len);
                io::Read::read_to_end(&mut io::Read::take(file, len as u64), &mut bytes)
                    .map_err(TextError::Io)?;
                String::from_utf8(bytes)
                    .map(|s| FileText(Bytes::Owned(s)))
                    .map_err(|e| TextError::NotUtf8(e.utf8_error()))
            }
        }
    }

    /// Whether the text is a mapping of a file (tests).
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Bytes::Mapped(_))
    }
}

impl From<String> for FileText {
    fn from(s: String) -> FileText {
        FileText(Bytes::Owned(s))
    }
}

impl Deref for FileText {
    type Target = str;

    fn deref(&self) -> &str {
        match &self.0 {
            Bytes::Owned(s) => s,
            // SAFETY: checked to be UTF-8 when mapped, and read-only since.
            Bytes::Mapped(m) => unsafe { std::str::from_utf8_unchecked(m.bytes()) },
        }
    }
}

impl fmt::Debug for FileText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileText({} bytes", self.len())?;
        if self.is_mapped() {
            write!(f, ", mapped")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A directory of this test's own, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("mvnet-text-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn file_with(&self, bytes: &[u8]) -> File {
            let path = self.0.join("state.json");
            std::fs::write(&path, bytes).unwrap();
            File::open(path).unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_file_is_mapped_and_reads_as_written() {
        let s = Scratch::new("mapped");
        let file = s.file_with("{\"name\":\"é\"}\n".as_bytes());
        let len = file.metadata().unwrap().len();
        let text = FileText::of_file(&file, len).unwrap();
        assert!(text.is_mapped());
        assert_eq!(&*text, "{\"name\":\"é\"}\n");
    }

    #[test]
    fn only_the_size_given_is_taken() {
        let s = Scratch::new("size");
        let file = s.file_with(b"abcdef");
        assert_eq!(&*FileText::of_file(&file, 3).unwrap(), "abc");
    }

    #[test]
    fn an_empty_file_is_empty_text() {
        let s = Scratch::new("empty");
        let text = FileText::of_file(&s.file_with(b""), 0).unwrap();
        assert_eq!(&*text, "");
        assert!(!text.is_mapped());
    }

    #[test]
    fn bytes_that_are_not_utf8_are_an_error() {
        let s = Scratch::new("utf8");
        let file = s.file_with(b"{\"a\":\"\xff\"}");
        assert!(matches!(
            FileText::of_file(&file, 9),
            Err(TextError::NotUtf8(_))
        ));
    }

    #[test]
    fn the_mapping_outlives_a_replace_by_rename() {
        let s = Scratch::new("rename");
        let file = s.file_with(b"old text");
        let text = FileText::of_file(&file, 8).unwrap();
        drop(file);
        let tmp = s.0.join("state.json.tmp");
        std::fs::write(&tmp, b"new text, longer").unwrap();
        std::fs::rename(&tmp, s.0.join("state.json")).unwrap();
        assert_eq!(&*text, "old text");
    }
}
